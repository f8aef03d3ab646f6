//! Training parity with transformers on every backend: every parameter gradient of the MLM
//! loss, one AdamW step, the 10-step AdamW and StableAdamW trajectories, gradient accumulation,
//! token-classification gradients and the optimizer unit test (tests/fixtures*/README.md).
//! And the `trainer check` command: its output and exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use kernels::{testing, Backend};
use runtime::Encoder;
use runtime::weights::Checkpoint;
use trainer::check::{run, Models, Report};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn models() -> Vec<PathBuf> {
    vec![root().join("tests/fixtures/tiny-modernbert-mlm"), root().join("tests/fixtures/tiny-modernbert-tokcls")]
}

fn check<B: Backend>(be: &B, reference: &str) -> Report {
    check_with(be, &models(), reference)
}

fn check_with<B: Backend>(be: &B, dirs: &[PathBuf], reference: &str) -> Report {
    let r = Checkpoint::open_file(&root().join(reference)).unwrap();
    let report = run(be, &Models { dirs }, &r).unwrap();
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

/// Classic BERT (tests/fixtures-bert): every gradient of BertForMaskedLM's MLM loss under
/// transformers' names (the fused q|k|v split back), then the token- and sequence-classification
/// losses through the training path.
fn bert_gradients_and_task_losses<B: Backend>(be: &B) {
    let dirs = [root().join("tests/fixtures-bert/tiny-bert-mlm"), root().join("tests/fixtures-bert/tiny-bert-tokcls")];
    let report = check_with(be, &dirs, "tests/fixtures-bert/reference.safetensors");
    // mlm_loss, 58 gradients, tokcls_loss, seqcls_loss.
    assert_eq!(report.rows.len(), 61, "{}", report.render());
    for name in ["grad.bert.embeddings.position_embeddings.weight", "grad.bert.embeddings.token_type_embeddings.weight", "grad.bert.encoder.layer.2.attention.self.value.bias", "grad.cls.predictions.bias", "seqcls_loss"] {
        assert!(report.rows.iter().any(|r| r.name == name), "{name} not compared");
    }
}

#[test]
fn cpu_bert_gradients_and_task_losses() {
    bert_gradients_and_task_losses(&testing::cpu());
}
#[test]
fn wgpu_bert_gradients_and_task_losses() {
    bert_gradients_and_task_losses(&testing::gpu());
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
    assert!(err < kernels::tolerance::GRAD_REL_F32);

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

/// Losses of ten StableAdamW steps on the ten fixture batches, and the first step's gradient of
/// layers.1.attn.Wqkv, trained from the tiny MLM fixture on `be`.
fn ten_steps<B: Backend>(be: &B) -> (Vec<f64>, Vec<f32>) {
    use trainer::backward::{forward_backward, Grads, Target};
    use trainer::optim::{Optimizer, OptimizerConfig, OptimizerKind};
    let r = Checkpoint::open_file(&root().join("tests/fixtures-training/training.safetensors")).unwrap();
    let folder = runtime::folder::ModelFolder::open(&root().join("tests/fixtures/tiny-modernbert-mlm")).unwrap();
    let mut model = runtime::ModernBert::load_trainable(be, folder.config.modernbert("test").unwrap().clone(), &folder.checkpoint).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig { kind: OptimizerKind::StableAdamW, lr: 1e-3, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 1e-5, grad_clip: None });
    let mut out = Vec::new();
    let mut first_grad = Vec::new();
    for k in 0..10 {
        let ids = r.require(&format!("batch{k}.input_ids")).unwrap().to_i64().unwrap();
        let mask = r.require(&format!("batch{k}.attention_mask")).unwrap().to_i64().unwrap();
        let labels = r.require(&format!("batch{k}.labels")).unwrap().to_i64().unwrap();
        let (mut seqs, mut rows, mut lab) = (Vec::new(), Vec::new(), Vec::new());
        let mut t = 0u32;
        for row in 0..3 {
            let mut s = Vec::new();
            for col in 0..32 {
                let i = row * 32 + col;
                if mask[i] == 1 {
                    s.push(ids[i] as u32);
                    if labels[i] >= 0 {
                        rows.push(t);
                        lab.push(labels[i] as u32);
                    }
                    t += 1;
                }
            }
            seqs.push(s);
        }
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let batch = model.batch(be, &refs).unwrap();
        let mut grads = Grads::default();
        let o = forward_backward(be, &model, &batch, &seqs.concat(), &Target::MaskedLm { rows: &rows, labels: &lab }, 1.0 / lab.len() as f32, &mut grads).unwrap();
        out.push(o.loss_sum / lab.len() as f64);
        if k == 0 {
            first_grad = testing::block_on(be.read(grads.get("model.layers.1.attn.Wqkv.weight").unwrap())).unwrap();
        }
        opt.step(be, &mut model, &grads, 1e-3, false).unwrap();
    }
    (out, first_grad)
}

/// A mixed-precision run (`mixed`) against the f32 run on the same kind of device: the gradients
/// point the same way, ten steps follow the f32 trajectory's losses closely, and something was
/// rounded.
fn tracks_f32(name: &str, (f32_losses, f32_grad): (Vec<f64>, Vec<f32>), (mixed_losses, mixed_grad): (Vec<f64>, Vec<f32>)) {
    let c = kernels::tolerance::cosine(&f32_grad, &mixed_grad);
    assert!(c > 0.99, "{name}: gradient cosine {c}");
    for (k, (a, b)) in f32_losses.iter().zip(&mixed_losses).enumerate() {
        assert!((a - b).abs() < 0.05 * a, "{name} step {k}: f32 loss {a}, mixed {b}");
    }
    assert!(f32_losses != mixed_losses, "{name}: the mixed-precision run must round something");
}

/// Mixed precision on the CPU: bf16 products, f32 master weights, gradients and optimizer.
#[test]
fn cpu_bf16_mixed_precision_tracks_f32() {
    tracks_f32("cpu bf16", ten_steps(&testing::cpu()), ten_steps(&testing::cpu_bf16()));
}

/// Mixed precision on the GPU: f16 copies of the f32 master weights in the products.
#[test]
fn wgpu_f16_mixed_precision_tracks_f32() {
    tracks_f32("wgpu f16", ten_steps(&testing::gpu()), ten_steps(&testing::gpu_f16()));
}

/// `--dtype` on the command line: f16 trains on a GPU, bf16 on the CPU, and each is refused on the
/// other kind of device with a message saying which to use.
#[test]
fn cli_mixed_precision_dtypes() {
    let bin = env!("CARGO_BIN_EXE_trainer");
    let config = root().join("tests/fixtures/tiny-modernbert-mlm/config.json");
    let bench = |device: &str, dtype: &str| {
        let out = Command::new(bin)
            .args(["bench", "--batch", "2", "--seq", "24", "--iters", "1", "--device", device, "--dtype", dtype, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stdout, stderr) = bench("gpu", "f16");
    assert!(ok && stdout.contains("tokens_per_s="), "{stdout}{stderr}");
    let (ok, _, stderr) = bench("cpu", "f16");
    assert!(!ok && stderr.contains("--dtype f16 trains on a GPU"), "{stderr}");
    let (ok, _, stderr) = bench("gpu", "bf16");
    assert!(!ok && stderr.contains("--dtype bf16 trains on the CPU"), "{stderr}");
    // int8 is for inference: training refuses it on either device.
    for device in ["cpu", "gpu"] {
        let (ok, _, stderr) = bench(device, "int8");
        assert!(!ok && stderr.contains("--dtype int8 is for inference"), "{device}: {stderr}");
    }
}
