//! Data-parallel training over MPI (issue 20), run by `.ci/run` with Open MPI from Debian
//! (`cargo test --workspace --features trainer/mpi --test mpi`): 10 steps on 2 ranks equal the
//! single-process run with the same global batch (gradient accumulation) to 1e-6 relative on
//! every parameter, for pretraining and fine-tuning; a rank killed mid-run stops the job with an
//! error within a bounded time, and the run resumes from its last checkpoint on any number of
//! ranks.

#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runtime::weights::Checkpoint;

const TRAINER: &str = env!("CARGO_BIN_EXE_trainer");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny-modernbert-mlm")
}

/// `trainer ARGS` alone, or as `ranks` ranks under `mpirun`.
fn trainer(ranks: usize, args: &[&str]) -> Command {
    let mut c = if ranks == 0 {
        Command::new(TRAINER)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["-np", &ranks.to_string(), "--oversubscribe", "--bind-to", "none", TRAINER]);
        c
    };
    c.args(args).args(["--threads", "1"]);
    // Root in CI containers; the shared-memory transport without probing for fabrics.
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("OMPI_MCA_pml", "ob1").env("OMPI_MCA_btl", "self,vader");
    c
}

fn ok(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    ok({
        let mut c = Command::new(TRAINER);
        c.args(["prepare", root().join("tests/data/aci-bench/valid.csv").to_str().unwrap(), "--tokenizer", tiny().to_str().unwrap()]);
        c.args(["--max-seq-len", "128", "--eval-fraction", "0.15", "--text-column", "note", "-o", data.to_str().unwrap()]);
        c
    });
    data
}

fn run_config(dir: &Path, name: &str, data: &Path, steps: u64, checkpoint_every: u64) -> PathBuf {
    let text = format!(
        r#"
output = "{out}"
seed = 11
metrics_every = 5
checkpoint_every = {checkpoint_every}
eval_every = 5
eval_batches = 2

[model]
init = "{model}"

[optimizer]
kind = "stableadamw"
lr = 3e-3
weight_decay = 1e-5

[[phase]]
name = "phase1"
data = "{data}"
steps = {steps}
batch_tokens = 384
grad_accum = 2
mask_rate = 0.3
schedule = {{ kind = "warmup-stable-decay", warmup = 2, decay = 4 }}
"#,
        out = dir.join(name).display(),
        model = tiny().display(),
        data = data.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every tensor of two checkpoints agrees to `rel` of its magnitude; the largest relative
/// difference.
fn same_weights(a: &Path, b: &Path, rel: f64) -> f64 {
    let (a, b) = (Checkpoint::open_file(a).unwrap(), Checkpoint::open_file(b).unwrap());
    let mut names: Vec<String> = a.names().map(str::to_string).collect();
    names.sort();
    let mut other: Vec<String> = b.names().map(str::to_string).collect();
    other.sort();
    assert_eq!(names, other);
    let mut worst = 0f64;
    for n in names {
        let (x, y) = (a.get(&n).unwrap().to_f32().unwrap(), b.get(&n).unwrap().to_f32().unwrap());
        for (p, q) in x.iter().zip(&y) {
            let d = (*p as f64 - *q as f64).abs() / (p.abs().max(q.abs()) as f64).max(1e-30);
            assert!(d <= rel || (p - q).abs() < 1e-30, "{n}: {p} and {q} differ by {d:e} relative");
            if p != q {
                worst = worst.max(d);
            }
        }
    }
    worst
}

fn losses(metrics: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["split"] == "train")
        .map(|m| (m["global_step"].as_u64().unwrap(), m["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn two_ranks_pretrain_as_one_process_accumulating_the_same_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let one = run_config(tmp.path(), "one", &data, 10, 0);
    let two = run_config(tmp.path(), "two", &data, 10, 0);
    ok(trainer(0, &["pretrain", "--config", one.to_str().unwrap()]));
    let out = ok(trainer(2, &["pretrain", "--config", two.to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data-parallel over 2 ranks"), "{err}");
    let worst = same_weights(&tmp.path().join("one/final/model.safetensors"), &tmp.path().join("two/final/model.safetensors"), 1e-6);
    eprintln!("pretraining, 10 steps: largest relative difference {worst:e}");
    // The metrics count every rank's tokens: the same losses, written once (by rank 0).
    let (a, b) = (losses(&tmp.path().join("one/metrics.jsonl")), losses(&tmp.path().join("two/metrics.jsonl")));
    assert_eq!(a.len(), 2);
    assert_eq!(a.len(), b.len());
    for ((s, x), (t, y)) in a.iter().zip(&b) {
        assert_eq!(s, t);
        assert!((x - y).abs() <= 1e-6 * x.abs(), "step {s}: loss {x} and {y}");
    }
    let m: serde_json::Value = serde_json::from_str(std::fs::read_to_string(tmp.path().join("two/metrics.jsonl")).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(m["ranks"], 2);
    assert!(m["allreduce_bytes_per_step"].as_u64().unwrap() > 300_000, "the whole gradient is summed every step: {m}");
    for run in ["one", "two"] {
        assert!(tmp.path().join(run).join("curves.svg").exists());
        assert!(std::fs::read_dir(tmp.path().join(run).join("tensorboard")).unwrap().count() == 1);
    }
}

fn span_notes(path: &Path, n: usize, seed: usize) {
    let names = ["John Smith", "Maria Lopez", "Wei Zhang", "Fatima Khan", "Olga Petrova", "Samuel Green"];
    let mut out = String::new();
    for i in 0..n {
        let name = names[(i * 7 + seed) % names.len()];
        let day = 1 + (i * 5 + seed) % 28;
        let text = format!("Patient {name} was seen on 03/{day:02}/2021 for chest pain.");
        let start = "Patient ".len();
        let date = text.find("03/").unwrap();
        out.push_str(&format!(
            "{{\"text\": {}, \"spans\": [{{\"start\": {start}, \"end\": {}, \"label\": \"NAME\"}}, {{\"start\": {date}, \"end\": {}, \"label\": \"DATE\"}}]}}\n",
            serde_json::to_string(&text).unwrap(),
            start + name.len(),
            date + 10
        ));
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn two_ranks_finetune_as_one_process_accumulating_the_same_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, eval) = (tmp.path().join("train.jsonl"), tmp.path().join("eval.jsonl"));
    span_notes(&train, 40, 1);
    span_notes(&eval, 8, 2);
    let args = |out: &str| -> Vec<String> {
        [
            "finetune",
            "--task",
            "token-classification",
            "--model",
            tiny().to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--eval",
            eval.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--epochs", "1", "--batch-size", "4", "--lr", "1e-3", "-o", tmp.path().join(out).to_str().unwrap()].iter().map(|s| s.to_string()))
        .collect()
    };
    // 40 notes in batches of 4: 10 steps, each of 2 micro-batches.
    let mut one = args("one");
    one.extend(["--grad-accum".to_string(), "2".to_string()]);
    ok(trainer(0, &one.iter().map(String::as_str).collect::<Vec<_>>()));
    ok(trainer(2, &args("two").iter().map(String::as_str).collect::<Vec<_>>()));
    // The TensorBoard events survive the model being saved into the same folder.
    assert_eq!(std::fs::read_dir(tmp.path().join("two/tensorboard")).unwrap().count(), 1);
    let worst = same_weights(&tmp.path().join("one/model.safetensors"), &tmp.path().join("two/model.safetensors"), 1e-6);
    eprintln!("fine-tuning, 10 steps: largest relative difference {worst:e}");
    let (a, b) = (
        std::fs::read_to_string(tmp.path().join("one/eval_results.json")).unwrap(),
        std::fs::read_to_string(tmp.path().join("two/eval_results.json")).unwrap(),
    );
    let (a, b): (serde_json::Value, serde_json::Value) = (serde_json::from_str(&a).unwrap(), serde_json::from_str(&b).unwrap());
    assert_eq!(a["epochs"][0]["f1"], b["epochs"][0]["f1"]);
    // More ranks than micro-batches is refused, not left idle.
    let mut three = args("three");
    three.extend(["--grad-accum".to_string(), "1".to_string()]);
    let out = trainer(2, &three.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grad-accum 1"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The pid of rank `rank` of the job started by `mpirun` whose command line holds `marker`.
fn rank_pid(rank: usize, marker: &str) -> Option<u32> {
    let me = std::fs::canonicalize(TRAINER).ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_link(entry.path().join("exe")).ok().as_deref() != Some(me.as_path()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}").as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn a_killed_rank_stops_the_job_and_the_run_resumes_on_any_number_of_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let whole = run_config(tmp.path(), "whole", &data, 30, 5);
    ok(trainer(0, &["pretrain", "--config", whole.to_str().unwrap()]));
    let killed = run_config(tmp.path(), "killed", &data, 30, 5);
    let mut job = trainer(2, &["pretrain", "--config", killed.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Once a checkpoint is written, kill rank 1 outright.
    let ck = tmp.path().join("killed/checkpoints/step-00000010");
    let start = Instant::now();
    while !ck.exists() {
        assert!(start.elapsed() < Duration::from_secs(300) && job.try_wait().unwrap().is_none(), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = rank_pid(1, killed.to_str().unwrap()).expect("rank 1 is running");
    let killed_at = Instant::now();
    unsafe_kill(pid);
    let status = wait_with_deadline(&mut job, Duration::from_secs(60)).expect("the job stopped within a minute of losing a rank");
    let mut err = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("rank 1") && err.contains("signal 9"), "the launcher names the lost rank: {err}");
    eprintln!("the job stopped {:.1} s after rank 1 was killed", killed_at.elapsed().as_secs_f64());
    assert!(!tmp.path().join("killed/final").exists());
    // Resume on one rank: from the last checkpoint to the same weights as the uninterrupted run.
    let out = ok(trainer(0, &["pretrain", "--config", killed.to_str().unwrap(), "--resume"]));
    let _ = out;
    let worst = same_weights(&tmp.path().join("whole/final/model.safetensors"), &tmp.path().join("killed/final/model.safetensors"), 1e-6);
    eprintln!("resumed on 1 rank after 2: largest relative difference {worst:e}");
}

fn unsafe_kill(pid: u32) {
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}
