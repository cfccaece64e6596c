//! `validate` and `print-config` through the real binary.

use std::fs;

use crate::common::{cli, stderr, stdout};

#[test]
fn a_bad_config_file_gives_one_error_listing_every_problem_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.toml");
    fs::write(
        &f,
        "device_id = \"no/slashes\"\n[mqtt]\ntopic_prefix = \"a#b\"\n[publish]\ntop_k = 0\n[[pipeline]]\nname = \"a b\"\nmodel = \"nope\"\n[pipeline.source]\nkind = \"microphone\"\nhop_ms = 5000\n",
    )
    .expect("write");
    let o = cli(&["validate", "--config", f.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.matches("error:").count(), 1, "one message: {err}");
    for key in [
        "`device_id`",
        "`mqtt.topic_prefix`",
        "`publish.top_k`",
        "`pipeline[0].name`",
        "`pipeline[0].model`",
        "`pipeline[0].source.hop_ms`",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
}

#[test]
fn print_config_shows_environment_overrides() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(["print-config"])
        .env("LSSKD_EDGE__MQTT__PORT", "18830")
        .output()
        .expect("spawn");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(parsed["mqtt"]["port"].as_integer(), Some(18830));
}
