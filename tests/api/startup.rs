//! The binary itself: how it starts and how it refuses to.

use std::process::Command;

fn tasksync() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasksync"));
    for key in [
        "DATABASE_URL",
        "SECRET_KEY_BASE",
        "PORT",
        "TASKSYNC_ENV",
        "RUST_LOG",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

#[test]
fn an_unreachable_database_fails_fast_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = tasksync()
        .current_dir(dir.path())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:9/nowhere")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed().as_secs() < 10, "fails fast");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(
            "tasksync: cannot connect to PostgreSQL at postgres://postgres@127.0.0.1:9/nowhere"
        ),
        "{stderr}"
    );
}

#[test]
fn production_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasksync()
        .current_dir(dir.path())
        .env("TASKSYNC_ENV", "production")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SECRET_KEY_BASE is not set"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn an_unsupported_database_url_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasksync()
        .current_dir(dir.path())
        .env("DATABASE_URL", "mysql://localhost/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DATABASE_URL must start with sqlite: or postgres:"),
        "{stderr}"
    );
}

#[test]
fn an_in_memory_sqlite_database_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasksync()
        .current_dir(dir.path())
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("an in-memory SQLite database cannot be shared"),
        "{stderr}"
    );
}
