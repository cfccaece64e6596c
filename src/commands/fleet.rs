//! `lsskd-edge fleet id` and `fleet trust <key>`: the device's own public key (made in the
//! state directory at first use) and the keys it accepts class offers from (`fleet.trusted`
//! in the settings file, edited in place with its comments kept).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::fleet::{DeviceKey, PublicKey};
use crate::settings::{SYSTEM_CONFIG, Settings, Sources};

/// Arguments of `fleet`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FleetCommand {
    /// Print this device's public key (made in the state directory when there is none).
    Id {
        /// Settings file (default: /etc/lsskd-edge/config.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Accept class offers signed by KEY: add it to `fleet.trusted` in the settings file.
    Trust {
        /// A device's key, as `lsskd-edge fleet id` prints it there (`ed25519:…`).
        key: String,
        /// Settings file to edit (default: /etc/lsskd-edge/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn execute(args: FleetArgs) -> anyhow::Result<()> {
    match args.command {
        FleetCommand::Id { config } => {
            let settings = Settings::load(&Sources::from_process(config))?;
            let key = DeviceKey::load_or_create(&settings.state_dir)?;
            println!("{}", key.public());
            Ok(())
        }
        FleetCommand::Trust { key, config } => {
            let file = config.unwrap_or_else(|| PathBuf::from(SYSTEM_CONFIG));
            let added = trust(&file, &key)?;
            match added {
                true => println!("{key} added to fleet.trusted in {}", file.display()),
                false => println!("{key} is already in fleet.trusted in {}", file.display()),
            }
            Ok(())
        }
    }
}

/// Add `key` to `fleet.trusted` of the settings file `file` (created when missing),
/// keeping everything else in it; false when it was there already. The key is checked
/// first, and the file is replaced atomically with its permissions kept.
pub fn trust(file: &Path, key: &str) -> anyhow::Result<bool> {
    let key: PublicKey = key.parse().map_err(anyhow::Error::msg)?;
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("{}", file.display())),
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("{}: not TOML", file.display()))?;
    let fleet = doc
        .entry("fleet")
        .or_insert(toml_edit::table())
        .as_table_mut()
        .with_context(|| format!("{}: `fleet` is not a table", file.display()))?;
    let trusted = fleet
        .entry("trusted")
        .or_insert(toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .with_context(|| format!("{}: `fleet.trusted` is not a list", file.display()))?;
    let text_key = key.to_string();
    if trusted
        .iter()
        .any(|v| v.as_str() == Some(text_key.as_str()))
    {
        return Ok(false);
    }
    trusted.push(text_key);
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, doc.to_string()).with_context(|| format!("{}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(file) {
        std::fs::set_permissions(&tmp, meta.permissions())
            .with_context(|| format!("{}", tmp.display()))?;
    }
    std::fs::rename(&tmp, file).with_context(|| format!("{}", file.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_adds_a_key_once_keeping_the_files_comments_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "# my broker\n[mqtt]\nhost = \"hub\" # the hub\n").expect("write");
        let key = DeviceKey::from_seed([9; 32]).public().to_string();
        assert!(trust(&file, &key).expect("added"));
        assert!(!trust(&file, &key).expect("again"), "once");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.contains("# my broker") && text.contains("# the hub"),
            "{text}"
        );
        let t: toml::Table = text.parse().expect("toml");
        assert_eq!(
            t["fleet"]["trusted"].as_array().expect("list").len(),
            1,
            "{text}"
        );
        let e = trust(&file, "ed25519:AAAA").expect_err("bad key");
        assert!(e.to_string().contains("a key has 32"), "{e}");
    }
}
