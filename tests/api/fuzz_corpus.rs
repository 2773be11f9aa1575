//! The inputs the fuzzers found interesting (`fuzz/regressions/<target>/`), replayed through the
//! very checks the fuzz targets make, so every crash they found stays fixed without a fuzzer or
//! a nightly toolchain. See `fuzz/README.md`.

use std::{fs, panic, path::Path};

#[path = "../../fuzz/src/lib.rs"]
mod checks;

/// Runs every file in `fuzz/regressions/<target>/` through `check`; fails naming the files that
/// panicked, and fails when there is nothing to replay.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no inputs to replay in {}",
        dir.display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let input = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(|| check(&input)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} failed on {failed:#?}");
}

#[test]
fn cable_commands() {
    replay("cable_command", checks::cable_command);
}

#[test]
fn cable_identifiers() {
    replay("cable_identifier", checks::cable_identifier);
}

#[test]
fn presence_frames() {
    replay("presence_frame", checks::presence_frame);
}

#[test]
fn signed_stream_names() {
    replay("stream_name", checks::stream_name);
}

#[test]
fn task_form_bodies() {
    replay("task_form", checks::task_form);
}
