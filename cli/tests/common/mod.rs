//! What the command-line tests share: the repository, running `runtime-cli`, and reading its
//! output.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runtime-cli")).args(args).output().unwrap()
}

/// Run a command that must succeed: (stdout, stderr).
pub fn ok(args: &[&str]) -> (String, String) {
    let out = cli(args);
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert!(out.status.success(), "runtime-cli {args:?} failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Run a command that must fail with status 2 and a message, never a panic: its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = cli(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "runtime-cli {args:?} should fail with status 2:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

pub fn jsonl(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
