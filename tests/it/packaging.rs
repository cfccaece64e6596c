//! The shipped systemd unit passes `systemd-analyze verify` (with ExecStart pointed at the
//! freshly built binary, and any warning on stderr counted as a failure).

#[test]
fn systemd_unit_verifies_cleanly() {
    let unit = std::fs::read_to_string(crate::common::repo().join("packaging/lsskd-edge.service"))
        .expect("packaging/lsskd-edge.service");
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
}
