//! Training parity with transformers on every backend: every parameter gradient of the MLM
//! loss, one AdamW step, the 10-step AdamW and StableAdamW trajectories, gradient accumulation,
//! token-classification gradients and the optimizer unit test (tests/fixtures*/README.md).
//! And the `trainer check` command: its output and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use kernels::{testing, Backend};
use runtime::weights::Checkpoint;
use trainer::check::{run, Models, Report};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn models() -> Vec<PathBuf> {
    vec![root().join("tests/fixtures/tiny-modernbert-mlm"), root().join("tests/fixtures/tiny-modernbert-tokcls")]
}

fn check<B: Backend>(be: &B, reference: &str) -> Report {
    let dirs = models();
    let r = Checkpoint::open_file(&root().join(reference)).unwrap();
    let report = run(be, &Models { dirs: &dirs }, &r).unwrap();
    assert!(report.passed(), "{}", report.render());
    assert!(report.skipped.is_empty(), "{}", report.render());
    report
}

fn gradients_and_one_adamw_step<B: Backend>(be: &B) {
    let report = check(be, "tests/fixtures/reference.safetensors");
    // mlm_loss, 29 gradients, 29 parameters after the step.
    assert_eq!(report.rows.len(), 59);
}

fn trajectories_accumulation_tokcls_optimizer<B: Backend>(be: &B) {
    let report = check(be, "tests/fixtures-training/training.safetensors");
    for name in ["optim.stableadamw.rms", "adamw.loss", "stableadamw.loss", "stableadamw.lr", "stableadamw.rms", "accum.micro_loss", "tokcls.loss", "tokcls.grad.classifier.weight", "stableadamw.final.decoder.bias"] {
        assert!(report.rows.iter().any(|r| r.name == name), "{name} not compared");
    }
}

#[test]
fn cpu_gradients_and_one_adamw_step() {
    gradients_and_one_adamw_step(&testing::cpu());
}
#[test]
fn cpu_trajectories_accumulation_tokcls_optimizer() {
    trajectories_accumulation_tokcls_optimizer(&testing::cpu());
}
#[test]
fn wgpu_gradients_and_one_adamw_step() {
    gradients_and_one_adamw_step(&testing::gpu());
}
#[test]
fn wgpu_trajectories_accumulation_tokcls_optimizer() {
    trajectories_accumulation_tokcls_optimizer(&testing::gpu());
}

#[test]
fn check_command_output_and_exit_codes() {
    let bin = env!("CARGO_BIN_EXE_trainer");
    let out = Command::new(bin)
        .args(["check", "--model"])
        .arg(root().join("tests/fixtures/tiny-modernbert-mlm"))
        .arg("--reference")
        .arg(root().join("tests/fixtures/reference.safetensors"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("max_rel_err=") && last.ends_with("compared=59"), "{last}");
    let err: f32 = last["max_rel_err=".len()..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(err < 1e-4);

    // A model that is not the fixture's: the gradients disagree and the exit code says so.
    let tmp = tempfile::tempdir().unwrap();
    let src = root().join("tests/fixtures/tiny-modernbert-mlm");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let ck = Checkpoint::open_file(&src.join("model.safetensors")).unwrap();
    let mut tensors = Vec::new();
    for name in ck.names().map(str::to_string).collect::<Vec<_>>() {
        let t = ck.get(&name).unwrap();
        let mut v = t.to_f32().unwrap();
        if name == "model.layers.2.mlp.Wi.weight" {
            v[7] += 0.05;
        }
        tensors.push((name, t.shape.to_vec(), v));
    }
    std::fs::write(tmp.path().join("model.safetensors"), runtime::weights::serialize_f32(&tensors, None).unwrap()).unwrap();
    let out = Command::new(bin).args(["check", "--model"]).arg(tmp.path()).arg("--reference").arg(root().join("tests/fixtures/reference.safetensors")).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));

    // Not a reference file at all: a clear error naming it, exit code 2.
    let out = Command::new(bin).args(["check", "--model"]).arg(&src).arg("--reference").arg(src.join("model.safetensors")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("model.safetensors") && stderr.contains("neither"), "{stderr}");
}
