//! config/deploy/tasksync.service is a unit systemd accepts. `systemd-analyze verify` checks the
//! syntax, the directives and that `ExecStart` is an executable: the test points it at the
//! binary cargo just built, and makes the environment file optional, as neither exists here.

use std::process::Command;

const UNIT: &str = include_str!("../../config/deploy/tasksync.service");

#[test]
fn the_systemd_unit_verifies() {
    let binary = env!("CARGO_BIN_EXE_tasksync");
    let mut unit = String::new();
    for line in UNIT.lines() {
        let line = if line.starts_with("ExecStart=") {
            format!("ExecStart={binary}")
        } else if let Some(file) = line.strip_prefix("EnvironmentFile=") {
            format!("EnvironmentFile=-{file}")
        } else {
            line.to_owned()
        };
        unit.push_str(&line);
        unit.push('\n');
    }
    assert!(
        unit.contains("KillSignal=SIGTERM"),
        "the graceful shutdown needs SIGTERM"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasksync.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is required for this test (Debian's systemd package)");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify rejects config/deploy/tasksync.service:\n{complaints}"
    );
}
