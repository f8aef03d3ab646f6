//! Pretraining end to end on real clinical text (ACI-BENCH notes) with the tiny fixture model:
//! the loss falls and masked-token accuracy rises over two phases; a run killed mid-way and
//! resumed gives exactly the losses and weights of an uninterrupted run.

use std::path::{Path, PathBuf};

use kernels::CpuBackend;
use trainer::data::{prepare, PrepareOptions};
use trainer::pretrain::{run, Metrics, RunConfig, RunOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dataset(dir: &Path) -> PathBuf {
    let tok = runtime::tokenize::Tokenizer::from_dir(&root().join("tests/fixtures/tiny-modernbert-mlm")).unwrap();
    let out = dir.join("data");
    let opts = PrepareOptions { max_seq_len: 128, eval_fraction: 0.15, text_column: Some("note".into()), ..Default::default() };
    let info = prepare(&tok, &[root().join("tests/data/aci-bench/valid.csv")], &out, &opts).unwrap();
    assert_eq!(info.documents, 20);
    assert!(info.eval_documents > 0 && info.eval_documents < 20);
    out
}

fn config(dir: &Path, data: &Path, extra: &str, phases: &str) -> RunConfig {
    let text = format!(
        r#"
output = "{out}"
seed = 7
{extra}

[model]
init = "{model}"

[optimizer]
kind = "stableadamw"
lr = 3e-3
weight_decay = 1e-5

{phases}
"#,
        out = dir.join("out").display(),
        model = root().join("tests/fixtures/tiny-modernbert-mlm").display(),
        phases = phases.replace("DATA", &data.display().to_string()),
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    RunConfig::from_file(&path).unwrap()
}

#[test]
fn pretraining_lowers_loss_and_raises_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let c = config(
        tmp.path(),
        &data,
        "metrics_every = 25\neval_every = 100\neval_batches = 4",
        r#"
[[phase]]
name = "phase1"
data = "DATA"
steps = 200
batch_tokens = 1024
mask_rate = 0.3
schedule = { kind = "constant" }

[[phase]]
name = "phase2"
data = "DATA"
steps = 100
batch_tokens = 1024
mask_rate = 0.15
schedule = { kind = "warmup-stable-decay", warmup = 0, decay = 100 }
"#,
    );
    let mut lines: Vec<Metrics> = Vec::new();
    let state = run(&CpuBackend::new(), &c, &RunOptions::default(), |m| lines.push(m.clone())).unwrap();
    assert_eq!(state.global_step, 300);
    let train: Vec<&Metrics> = lines.iter().filter(|m| m.split == "train").collect();
    let eval: Vec<&Metrics> = lines.iter().filter(|m| m.split == "eval").collect();
    let (first, last) = (train[0], train[train.len() - 1]);
    assert!(last.loss < first.loss - 1.0, "train loss {} → {}", first.loss, last.loss);
    assert!(last.top1 > first.top1 + 0.05 && last.top10 > first.top10 + 0.1, "top-k {:?} → {:?}", (first.top1, first.top10), (last.top1, last.top10));
    assert!(eval.len() >= 3);
    assert!(eval[eval.len() - 1].loss < eval[0].loss, "eval loss {} → {}", eval[0].loss, eval[eval.len() - 1].loss);
    assert!(eval[eval.len() - 1].top10 > eval[0].top10);
    // Phase 2 masks 15%, phase 1 30%; the schedule restarted and decayed.
    assert!(train.iter().all(|m| if m.phase == "phase1" { m.mask_rate == 0.3 } else { m.mask_rate == 0.15 }));
    assert!(last.lr < 3e-3 * 0.1);
    // metrics.jsonl holds the same lines.
    let jsonl = std::fs::read_to_string(tmp.path().join("out/metrics.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), lines.len());
    // The final folder loads back into the runtime and predicts.
    let folder = runtime::folder::ModelFolder::open(&tmp.path().join("out/final")).unwrap();
    let be = CpuBackend::new();
    let model = runtime::ModernBert::load(&be, folder.config.modernbert("test").unwrap().clone(), &folder.checkpoint).unwrap();
    assert!(model.decoder.is_some() && model.head.is_some());
}

#[test]
fn a_killed_run_resumes_bit_exactly() {
    let phases = r#"
[[phase]]
name = "one"
data = "DATA"
steps = 12
batch_tokens = 700
mask_rate = { start = 0.3, end = 0.15 }
schedule = { kind = "warmup", warmup = 3 }

[[phase]]
name = "two"
data = "DATA"
steps = 8
batch_tokens = 500
grad_accum = 2
mask_rate = 0.15
schedule = { kind = "warmup-stable-decay", warmup = 0, decay = 8 }
"#;
    let extra = "metrics_every = 1\ncheckpoint_every = 5";
    let losses = |lines: &[Metrics]| -> Vec<(u64, f64)> { lines.iter().filter(|m| m.split == "train").map(|m| (m.global_step, m.loss)).collect() };

    let a = tempfile::tempdir().unwrap();
    let ca = config(a.path(), &dataset(a.path()), extra, phases);
    let mut whole = Vec::new();
    run(&CpuBackend::new(), &ca, &RunOptions::default(), |m| whole.push(m.clone())).unwrap();

    let b = tempfile::tempdir().unwrap();
    let cb = config(b.path(), &dataset(b.path()), extra, phases);
    let mut killed = Vec::new();
    // Killed at step 17, in phase two (checkpoints at steps 5, 10, 12 = the end of phase one, 15).
    let s = run(&CpuBackend::new(), &cb, &RunOptions { resume: false, stop_after: Some(17) }, |m| killed.push(m.clone())).unwrap();
    assert_eq!(s.global_step, 17);
    // Starting again without --resume is refused: it would overwrite the run.
    assert!(run(&CpuBackend::new(), &cb, &RunOptions::default(), |_| {}).is_err());
    let mut resumed = Vec::new();
    run(&CpuBackend::new(), &cb, &RunOptions { resume: true, stop_after: None }, |m| resumed.push(m.clone())).unwrap();

    let whole = losses(&whole);
    assert_eq!(whole.len(), 20);
    assert_eq!(losses(&killed), whole[..17].to_vec());
    let resumed = losses(&resumed);
    assert_eq!(resumed.first().map(|r| r.0), Some(16), "resumes after the step-15 checkpoint");
    assert_eq!(resumed, whole[15..].to_vec(), "losses after resuming differ");
    let weights = |d: &Path| std::fs::read(d.join("out/final/model.safetensors")).unwrap();
    assert!(weights(a.path()) == weights(b.path()), "final weights differ");
}
