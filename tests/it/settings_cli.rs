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

#[test]
fn validate_warns_about_a_password_in_a_settings_file_every_user_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("config.toml");
    fs::write(&f, "[mqtt]\nusername = \"porch\"\npassword = \"hunter2\"\n").expect("write");
    let validate = |mode: u32| {
        fs::set_permissions(&f, fs::Permissions::from_mode(mode)).expect("chmod");
        cli(&["validate", "--config", f.to_str().expect("utf-8")])
    };
    let o = validate(0o644);
    assert!(
        o.status.success(),
        "a warning, not an error: {}",
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("warning: `mqtt.password` is written in")
            && err.contains("mode 0644")
            && err.contains("mqtt.password_file"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the warning does not print the password"
    );
    let o = validate(0o640);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
}

#[test]
fn validate_checks_an_rtsp_source_and_its_ffmpeg_without_showing_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("cam.toml");
    let config = |url: &str| {
        format!(
            "[[pipeline]]\nname = \"gate\"\nmodel = \"{}\"\n[pipeline.source]\nkind = \"rtsp\"\nurl = \"{url}\"\n",
            crate::harness::model("vision")
        )
    };
    let validate = |path: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"));
        cmd.args(["validate", "--config", f.to_str().expect("utf-8")]);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        cmd.output().expect("spawn")
    };
    fs::write(&f, config("rtsp://admin:hunter22@10.0.0.5:554/h264")).expect("write");
    let o = validate(None);
    assert!(o.status.success(), "ffmpeg installed: {}", stderr(&o));
    // No ffmpeg on PATH: named, with the package to install.
    let o = validate(Some(dir.path()));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(
            "`pipeline[0].source`: `ffmpeg` was not found on PATH: install the ffmpeg package"
        ),
        "{err}"
    );
    // Not an RTSP address: named with the credentials hidden.
    fs::write(&f, config("http://admin:hunter22@10.0.0.5/h264")).expect("write");
    let err = stderr(&validate(None));
    assert!(
        err.contains("`pipeline[0].source.url`: `http://***@10.0.0.5/h264` is not an rtsp://"),
        "{err}"
    );
    assert!(!err.contains("hunter22"), "{err}");
}
