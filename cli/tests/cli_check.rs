//! `runtime-cli check` on both fixture models and both devices: one row per tensor, the summary
//! line last, exit status 0 within tolerance and non-zero beyond it or on bad input.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn check(model: &str, device: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime-cli"))
        .args(["check", "--model"])
        .arg(fixtures().join(model))
        .arg("--reference")
        .arg(fixtures().join("reference.safetensors"))
        .args(["--device", device])
        .args(extra)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn summary(stdout: &str) -> (f32, usize) {
    let last = stdout.lines().last().unwrap();
    let (err, compared) = last.split_once(' ').unwrap();
    let err: f32 = err.strip_prefix("max_abs_err=").unwrap().parse().unwrap();
    let compared: usize = compared.strip_prefix("compared=").unwrap().parse().unwrap();
    (err, compared)
}

#[test]
fn both_models_on_both_devices() {
    for (model, compared) in [("tiny-modernbert-mlm", 16), ("tiny-modernbert-tokcls", 20)] {
        for device in ["cpu", "gpu"] {
            let (code, stdout, stderr) = check(model, device, &[]);
            assert_eq!(code, 0, "{model} on {device}: {stdout}{stderr}");
            let (err, n) = summary(&stdout);
            assert!(err <= kernels::tolerance::PARITY_F32, "{model} on {device}: {err}");
            assert_eq!(n, compared, "{model} on {device}:\n{stdout}");
            assert!(stdout.lines().any(|l| l.starts_with("layer_3 ")), "{stdout}");
        }
    }
}

#[test]
fn exits_non_zero_above_tolerance() {
    let (code, stdout, stderr) = check("tiny-modernbert-mlm", "cpu", &["--tol", "1e-9"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("exceeds the tolerance"), "{stderr}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_runtime-cli"))
        .args(["check", "--model"])
        .arg(fixtures().join("tiny-modernbert-mlm"))
        .arg("--reference")
        .arg(fixtures().join("tiny-modernbert-mlm/config.json"))
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("config.json: the header says it is") && stderr.contains("not a safetensors file or PyTorch checkpoint"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_runtime-cli")).args(["check", "--model", "/nonexistent", "--reference", "x", "--device", "cpu"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("/nonexistent: not a model folder"));
}

#[test]
fn f16_weights_pass_at_the_f16_tolerance() {
    for model in ["tiny-modernbert-mlm", "tiny-modernbert-tokcls"] {
        let (code, stdout, stderr) = check(model, "gpu", &["--dtype", "f16"]);
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.starts_with("device: wgpu") && stdout.lines().next().unwrap().ends_with("(f16)"), "{stdout}");
        // The f16 criterion of the tolerance module: 3e-2 of max(1, |reference|).
        let criterion = stdout.lines().find(|l| l.starts_with("criterion:")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(criterion.contains("max(1, |reference|) ≤ 3e-2") && criterion.ends_with("pass"), "{criterion}");
        // f16 weights cannot be as close as f32 ones: the f32 criterion would refuse them.
        let (err, _) = summary(&stdout);
        assert!(err > kernels::tolerance::PARITY_F32, "{model}: {err}");
    }
    // f16 end to end: within the looser criterion (no worse than transformers' own float16).
    let (code, stdout, stderr) = check("tiny-modernbert-mlm", "gpu", &["--dtype", "f16", "--activations", "f16"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let criterion = stdout.lines().find(|l| l.starts_with("criterion:")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(criterion.contains("≤ 8e-2 for f16 weights, f16 activations") && criterion.ends_with("pass"), "{criterion}");
    let (code, _, stderr) = check("tiny-modernbert-mlm", "cpu", &["--dtype", "f16", "--activations", "f16"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--activations f16 needs a GPU"), "{stderr}");
    let (code, _, stderr) = check("tiny-modernbert-mlm", "gpu", &["--activations", "f16"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("goes with --dtype f16"), "{stderr}");
    // The CPU backend stores f32 or bf16: asking for f16 there is an error, not a silent f32 run.
    let (code, _, stderr) = check("tiny-modernbert-tokcls", "cpu", &["--dtype", "f16"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not f16"), "{stderr}");
    // And WGSL has no bf16.
    let (code, _, stderr) = check("tiny-modernbert-tokcls", "gpu", &["--dtype", "bf16"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no bf16"), "{stderr}");
    // int8 runs on the CPU, within its own criterion, and is refused on the GPU.
    let (code, stdout, stderr) = check("tiny-modernbert-tokcls", "cpu", &["--dtype", "int8"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (err, _) = summary(&stdout);
    assert!(err > kernels::tolerance::PARITY_BF16 && err <= kernels::tolerance::PARITY_INT8, "{err}");
    let (code, _, stderr) = check("tiny-modernbert-tokcls", "gpu", &["--dtype", "int8"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("int8 products run on the CPU backend"), "{stderr}");
}
