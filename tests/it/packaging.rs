//! The shipped systemd unit passes `systemd-analyze verify` (with ExecStart pointed at the
//! freshly built binary, and any warning on stderr counted as a failure), and
//! `systemd-analyze security --offline=yes` rates its exposure at most 4.0.

#[test]
fn systemd_unit_verifies_cleanly() {
    let unit = std::fs::read_to_string(crate::common::repo().join("systemd/lsskd-edge.service"))
        .expect("systemd/lsskd-edge.service");
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lsskd-edge.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/lsskd-edge", env!("CARGO_BIN_EXE_lsskd-edge")),
    )
    .expect("unit");
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (apt package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");

    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("exposure level for lsskd-edge.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 4.0, "exposure {exposure}:\n{text}");
    for hardening in [
        "CapabilityBoundingSet=\n",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictRealtime=yes",
        "MemoryDenyWriteExecute=yes",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-alsa rw",
        "SystemCallFilter=@system-service",
        "UMask=",
        "ExecStartPre=/usr/bin/lsskd-edge validate",
        "StartLimitBurst=",
    ] {
        let wanted = hardening.replace("/usr/bin/lsskd-edge", env!("CARGO_BIN_EXE_lsskd-edge"));
        assert!(
            unit.replace("/usr/bin/lsskd-edge", env!("CARGO_BIN_EXE_lsskd-edge"))
                .contains(&wanted),
            "{hardening} missing"
        );
    }
}

/// The conffile the .deb installs (`config/board.toml` → /etc/lsskd-edge/config.toml) is
/// valid as shipped, with its models where the package puts them (here: the repository's).
#[test]
fn the_board_config_the_package_installs_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsskd-edge"))
        .args(["validate", "--config"])
        .arg(crate::common::repo().join("config/board.toml"))
        .env(
            "LSSKD_EDGE__MODELS_DIR",
            crate::common::repo().join("models"),
        )
        .env("LSSKD_EDGE__STATE_DIR", dir.path())
        .output()
        .expect("validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("2 pipeline(s), broker localhost:1883"),
        "{text}"
    );
    let cargo =
        std::fs::read_to_string(crate::common::repo().join("Cargo.toml")).expect("Cargo.toml");
    assert!(
        cargo.contains(r#"["config/board.toml", "etc/lsskd-edge/config.toml", "640"]"#),
        "the package installs config/board.toml as /etc/lsskd-edge/config.toml"
    );
}
