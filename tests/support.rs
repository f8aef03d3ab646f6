//! Shared helpers of the workspace tests: where the fixtures are.

use std::path::PathBuf;

/// `tests/` of the repository.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    tests_dir().join("fixtures").join(name)
}

/// `tests/data/<name>`.
pub fn data(name: &str) -> PathBuf {
    tests_dir().join("data").join(name)
}

/// A fresh scratch directory (per test process) under the system's temporary directory.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("workspace-tests-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tests/fixtures-bert/<name>`: the classic-BERT oracle.
pub fn bert_fixture(name: &str) -> PathBuf {
    tests_dir().join("fixtures-bert").join(name)
}
