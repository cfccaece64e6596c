//! The fleet: class offers between devices over the broker the user already runs
//! (issue 33). A device that promotes a new label can offer it to the devices that run the
//! same shipped model (its *family*: the shipped `model.onnx`'s digest); each receiving
//! device verifies the offer's signature before it reads anything else, then builds the
//! candidate on its own live model and judges it with its own gate.
//!
//! This module holds what needs no broker and no model: each device's signing key
//! ([`identity`]), and the offer itself — its signed manifest of per-part SHA-256 digests,
//! its chunks, the checks a receiver makes and the reasons it refuses ([`offer`]), and the
//! offers kept on disk until their outcome is decided, with the device's offer counter
//! ([`store`]). The daemon's side (publishing, receiving, policy, adoption) is
//! `daemon::fleet`.
//!
//! Trust model: a device accepts offers only from the public keys its configuration lists
//! (`fleet.trusted`); the key is made on the device at first start and never leaves its
//! state directory. A signature binds the manifest (label, origin, counter, expiry, part
//! digests) and the digests bind every byte of the parts, so a broker or a bridge can drop
//! or delay an offer but cannot alter one, replay an older one (the counter) or hold one
//! back until it is stale (the expiry). Not protected against: a trusted device that is
//! itself compromised (it can offer anything; each receiver's own gate is the defence),
//! and an attacker who can read the broker (offers are signed, not encrypted: use the
//! broker's TLS and ACLs).

pub mod identity;
pub mod offer;
pub mod store;

pub use identity::{DeviceKey, PublicKey};
pub use offer::{Envelope, OfferBody, Part, PartKind, Refusal, ReplayGuard, Trust};
pub use store::{OfferStore, StoredOffer};

/// A model family: the SHA-256 (hex) of the shipped `model.onnx` at `onnx`. Devices whose
/// shipped models are the same bytes share offers.
pub fn family_of(onnx: &std::path::Path) -> Result<String, FleetError> {
    use sha2::Digest;
    let bytes = std::fs::read(onnx).map_err(io(onnx))?;
    Ok(hex::encode(sha2::Sha256::digest(bytes)))
}

/// Errors of the fleet's files; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("the operating system gave no random bytes for a key: {0}")]
    Random(String),
}

pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> FleetError + '_ {
    move |source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `bytes` to `path`, readable by the owner only: the folder made (each new folder fsynced
/// into its parent, `durable::create_dir_all`), a temporary file created with mode 0600,
/// fsynced, renamed into place, the folder fsynced. The secret's own variant of
/// `durable::write_atomic`, whose files take the process's umask.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), FleetError> {
    use crate::durable::{Fs, StdFs};
    use std::io::Write;
    let dir = crate::durable::parent_of(path);
    crate::durable::create_dir_all(&StdFs, dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o.open(&tmp).map_err(io(&tmp))?
    };
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    StdFs.rename(&tmp, path).map_err(io(path))?;
    StdFs.sync_dir(dir).map_err(io(dir))
}
