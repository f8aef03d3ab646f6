//! Sharded runs (issue 20): `--shard K/N` and the schedulers' environments, resumable parts that
//! survive `kill -9` at any moment, and `merge`, which assembles the shards in input order
//! byte for byte as one process writes them, and refuses anything but every document once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fails, ok};

const BIN: &str = env!("CARGO_BIN_EXE_runtime-cli");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cli-shards-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Notes with names, dates, places and numbers, of varied lengths.
fn notes(dir: &Path, n: usize, sentences: usize) -> PathBuf {
    let names = ["John Smith", "Maria Garcia", "Wei Chen", "Aisha Okafor", "Pierre Dubois"];
    let places = ["Mercy Hospital", "St. Luke's Clinic", "Boston", "Mount Sinai"];
    let mut out = String::new();
    for i in 0..n {
        let mut text = String::new();
        for j in 0..1 + (i * 7 + j_seed(i)) % sentences.max(1) {
            text.push_str(&format!(
                "{} was seen at {} on {:02}/{:02}/20{:02}; BP {}/{}, MRN {}. ",
                names[(i + j) % names.len()],
                places[(i * 3 + j) % places.len()],
                1 + (i + j) % 12,
                1 + (i * 5 + j) % 28,
                10 + i % 15,
                110 + i % 40,
                70 + j % 20,
                100000 + i * 37 + j
            ));
        }
        out.push_str(&serde_json::json!({"id": format!("note-{i}"), "text": text}).to_string());
        out.push('\n');
    }
    let p = dir.join("notes.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}

fn j_seed(i: usize) -> usize {
    (i * 2654435761) % 5
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn shards_merge_into_what_one_process_writes_in_every_format() {
    let dir = scratch("merge");
    let input = notes(&dir, 41, 3);
    let whole = |name: &str, cmd: &str| {
        let p = dir.join(name);
        ok(&[cmd, s(&input), "-o", s(&p), "--threads", "1"]);
        std::fs::read(&p).unwrap()
    };
    for (cmd, ext) in [("deid", "jsonl"), ("embed", "npy"), ("embed", "safetensors"), ("embed", "jsonl")] {
        let expected = whole(&format!("whole-{cmd}.{ext}"), cmd);
        let mut parts = Vec::new();
        for k in 0..4 {
            let p = dir.join(format!("{cmd}-{k}.{ext}"));
            let (_, err) = ok(&[cmd, s(&input), "--shard", &format!("{k}/4"), "--chunk-docs", "3", "-o", s(&p), "--threads", "1"]);
            assert!(err.contains(&format!("shard {k}/4 (from --shard)")), "the shard is printed at the start: {err}");
            assert!(!dir.join(format!("{cmd}-{k}.{ext}.parts")).exists(), "the parts are removed once the shard is complete");
            parts.push(p);
        }
        // Given in any order.
        parts.reverse();
        let merged = dir.join(format!("merged-{cmd}.{ext}"));
        let mut args = vec!["merge", "-o", s(&merged)];
        args.extend(parts.iter().map(|p| s(p)));
        ok(&args);
        assert!(std::fs::read(&merged).unwrap() == expected, "{cmd} → .{ext}: the merged output is byte-identical to one process's");
        if ext == "npy" {
            assert_eq!(std::fs::read(dir.join("merged-embed.npy.ids.json")).unwrap(), std::fs::read(dir.join("whole-embed.npy.ids.json")).unwrap());
            // Matrices merge into any embedding format.
            let st = dir.join("from-npy.safetensors");
            let mut args = vec!["merge", "-o", s(&st)];
            args.extend(parts.iter().map(|p| s(p)));
            ok(&args);
            ok(&["embed", s(&input), "-o", s(&dir.join("whole-st.safetensors")), "--threads", "1"]);
            assert!(std::fs::read(&st).unwrap() == std::fs::read(dir.join("whole-st.safetensors")).unwrap());
        }
    }
}

#[test]
fn the_shard_comes_from_slurm_or_kubernetes() {
    let dir = scratch("env");
    let input = notes(&dir, 10, 1);
    let out = dir.join("a.jsonl");
    // An array --array=3-7: task 5 is shard 2 of 5.
    let o = run_env(
        &["deid", s(&input), "-o", s(&out), "--threads", "1"],
        &[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "5"), ("SLURM_ARRAY_TASK_MIN", "3"), ("SLURM_ARRAY_TASK_MAX", "7")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("shard 2/5 (from the Slurm job array"), "{err}");
    let ids: Vec<String> = common::jsonl(&std::fs::read_to_string(&out).unwrap()).iter().map(|v| v["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["note-2", "note-7"]);
    let out = dir.join("b.jsonl");
    let o = run_env(&["deid", s(&input), "-o", s(&out), "--threads", "1"], &[("JOB_COMPLETION_INDEX", "1"), ("RUNTIME_CLI_SHARD_COUNT", "3")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("shard 1/3 (from the Kubernetes Indexed Job"), "{err}");
    let ids: Vec<String> = common::jsonl(&std::fs::read_to_string(&out).unwrap()).iter().map(|v| v["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["note-1", "note-4", "note-7"]);
    let o = run_env(&["deid", s(&input), "-o", s(&dir.join("c.jsonl"))], &[("JOB_COMPLETION_INDEX", "1")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--shard-count"));
    // --shard wins over the environment.
    let o = run_env(&["deid", s(&input), "--shard", "0/1", "-o", s(&dir.join("d.jsonl"))], &[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "5")]);
    assert!(o.status.success());
    assert_eq!(common::jsonl(&std::fs::read_to_string(dir.join("d.jsonl")).unwrap()).len(), 10);
}

/// Start a shard and kill it with SIGKILL once its manifest lists `chunks` finished chunks and
/// `then` more has passed (the kill lands at another point of the next chunk each time: in the
/// model, writing a part, between a part and its manifest). False if it finished first.
fn kill_after(args: &[&str], parts: &Path, chunks: usize, then: Duration) -> bool {
    let mut child = Command::new(BIN).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done_chunks(parts) < chunks {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(then);
    if child.try_wait().unwrap().is_some() {
        return false;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    true
}

fn done_chunks(parts: &Path) -> usize {
    std::fs::read(parts.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .map_or(0, |m| m["parts"].as_array().unwrap().len())
}

#[test]
fn a_shard_killed_at_any_moment_resumes_without_loss_or_duplicates() {
    let dir = scratch("kill");
    let input = notes(&dir, 160, 6);
    for (cmd, ext) in [("deid", "jsonl"), ("embed", "npy")] {
        let args = |out: &Path| -> Vec<String> {
            [cmd, s(&input), "--shard", "1/2", "--chunk-docs", "4", "--threads", "1", "-o", s(out)].iter().map(|a| a.to_string()).collect()
        };
        let clean = dir.join(format!("clean.{ext}"));
        let a = args(&clean);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
        let out = dir.join(format!("killed.{ext}"));
        let parts = PathBuf::from(format!("{}.parts", out.display()));
        let a = args(&out);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        // Kill at points spread over the run (its 20 chunks), each rerun taking up where the
        // last stopped.
        let mut progress = Vec::new();
        for (chunks, micros) in [(0, 0), (2, 0), (5, 700), (9, 3000), (14, 11_000), (17, 29_000)] {
            let before = done_chunks(&parts);
            assert!(kill_after(&a, &parts, chunks, Duration::from_micros(micros)), "killed before the end");
            let after = done_chunks(&parts);
            assert!(after >= before, "a resumed run keeps what was done ({before} chunks, then {after})");
            progress.push(after);
            assert!(!out.exists(), "no output before the shard is complete");
        }
        assert!(*progress.last().unwrap() >= 17, "{progress:?}");
        let (_, err) = ok(&a);
        let resumed_from = done_chunks_from_message(&err);
        assert_eq!(Some(*progress.last().unwrap()), resumed_from, "the last run resumed from what the manifest held: {err}");
        assert!(std::fs::read(&out).unwrap() == std::fs::read(&clean).unwrap(), "{cmd}: the resumed output is byte-identical to an uninterrupted run's");
        assert_eq!(
            std::fs::read(format!("{}.shard.json", out.display())).unwrap().len(),
            std::fs::read(format!("{}.shard.json", clean.display())).unwrap().len()
        );
        assert!(!parts.exists());
        // The last run computed only what was left: its count is the shard's (80) less the done
        // chunks' (4 documents each).
        let counted = err.split(['\n', ' ']).collect::<Vec<_>>().windows(2).find(|w| w[1] == "documents,").map(|w| w[0].parse::<usize>().unwrap());
        assert_eq!(counted, Some(80 - 4 * resumed_from.unwrap()), "{err}");
        // Run again: complete, nothing is computed.
        let (_, err) = ok(&a);
        assert!(err.contains("already complete"), "{err}");
    }
}

fn done_chunks_from_message(err: &str) -> Option<usize> {
    err.lines().find_map(|l| l.split(" (").nth(1).filter(|_| l.contains("resuming from")).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()))
}

#[test]
fn merge_and_resume_refuse_anything_but_every_document_once() {
    let dir = scratch("refuse");
    let input = notes(&dir, 23, 2);
    let shard = |k: usize, n: usize, extra: &[&str]| {
        let p = dir.join(format!("s{k}of{n}.jsonl"));
        let mut a = vec!["deid", s(&input), "--shard", &*Box::leak(format!("{k}/{n}").into_boxed_str()), "-o", s(&p), "--threads", "1"];
        a.extend_from_slice(extra);
        ok(&a);
        p
    };
    let (a, b, c) = (shard(0, 3, &[]), shard(1, 3, &[]), shard(2, 3, &[]));
    let out = dir.join("merged.jsonl");
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&c)]);
    assert!(m.contains("no file holds shard 1/3: documents 1, 4, 7, 10, … of the input (8 in all)"), "{m}");
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&b), s(&b), s(&c)]);
    assert!(m.contains("shard 1/3 is in both"), "{m}");
    // A shard of another sharding, or another run.
    let other = shard(1, 2, &[]);
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&other), s(&c)]);
    assert!(m.contains("3 shards") || m.contains("2 shards"), "{m}");
    let t = dir.join("t.jsonl");
    ok(&["deid", s(&input), "--shard", "1/3", "--threshold", "0.9", "-o", s(&t)]);
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&t), s(&c)]);
    assert!(m.contains("not shards of the same run"), "{m}");
    // A cut shard: one line fewer than its share.
    let text = std::fs::read_to_string(&b).unwrap();
    let cut = dir.join("cut.jsonl");
    std::fs::write(&cut, text.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    std::fs::copy(format!("{}.shard.json", b.display()), format!("{}.shard.json", cut.display())).unwrap();
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&cut), s(&c)]);
    assert!(m.contains("cut.jsonl ends after 7 documents, but shard 1/3 of an input of 23 documents holds 8"), "{m}");
    // A file without its shard record (an unsharded output, or a shard that did not finish).
    let plain = dir.join("plain.jsonl");
    ok(&["deid", s(&input), "-o", s(&plain)]);
    let m = fails(&["merge", "-o", s(&out), s(&plain)]);
    assert!(m.contains("plain.jsonl.shard.json beside it"), "{m}");
    assert!(!out.exists(), "nothing is written by a refused merge");
    // The merge of the right files works.
    ok(&["merge", "-o", s(&out), s(&c), s(&a), s(&b)]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&plain).unwrap());

    // A shard whose output is being recomputed is not merged with its old shard file.
    std::fs::create_dir_all(dir.join("s1of3.jsonl.parts")).unwrap();
    std::fs::write(dir.join("s1of3.jsonl.parts/manifest.json"), "{}").unwrap();
    let m = fails(&["merge", "-o", s(&out), s(&a), s(&b), s(&c)]);
    assert!(m.contains("has not finished"), "{m}");
    std::fs::remove_dir_all(dir.join("s1of3.jsonl.parts")).unwrap();

    // Parts of another run are not taken up.
    let resumed = dir.join("r.jsonl");
    let parts = dir.join("r.jsonl.parts");
    std::fs::create_dir_all(&parts).unwrap();
    ok(&["deid", s(&input), "--shard", "0/2", "-o", s(&resumed), "--chunk-docs", "2"]);
    // A finished shard rerun with other settings starts over; an unfinished one is refused.
    std::fs::remove_file(&resumed).unwrap();
    std::fs::create_dir_all(&parts).unwrap();
    let manifest = serde_json::json!({"version": 1, "identity": {"command": "deid", "settings": {}, "input": {}}, "shard": [0, 2], "kind": "lines", "parts": [], "documents": null});
    std::fs::write(parts.join("manifest.json"), manifest.to_string()).unwrap();
    let m = fails(&["deid", s(&input), "--shard", "0/2", "-o", s(&resumed), "--chunk-docs", "2"]);
    assert!(m.contains("holds the parts of another run"), "{m}");
    // Sharding needs a file: not standard output, not standard input.
    let m = fails(&["deid", s(&input), "--shard", "0/2"]);
    assert!(m.contains("needs -o FILE"), "{m}");
    let m = fails(&["deid", "-", "--format", "jsonl", "--shard", "0/2", "-o", s(&dir.join("x.jsonl"))]);
    assert!(m.contains("not standard input"), "{m}");
    // A fresh surrogate key per shard would give each shard other surrogates.
    let m = fails(&["deid", s(&input), "--shard", "0/2", "--surrogate", "-o", s(&dir.join("y.jsonl"))]);
    assert!(m.contains("--surrogate-key"), "{m}");
    for bad in ["2/2", "1", "a/b"] {
        let m = fails(&["deid", s(&input), "--shard", bad, "-o", s(&dir.join("z.jsonl"))]);
        assert!(m.contains("--shard"), "{m}");
    }
}

#[test]
fn a_resumed_shard_refuses_an_input_whose_finished_chunks_changed() {
    let dir = scratch("edited");
    let input = notes(&dir, 160, 6);
    let out = dir.join("d.jsonl");
    let parts = dir.join("d.jsonl.parts");
    let args = ["deid", s(&input), "--shard", "0/1", "--chunk-docs", "4", "--threads", "1", "-o", s(&out)];
    assert!(kill_after(&args, &parts, 3, Duration::ZERO));
    assert!(done_chunks(&parts) >= 3);
    // The first two notes swap places: the same size, and the time set back, so only the
    // documents of the finished chunks tell.
    let modified = std::fs::metadata(&input).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&input).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(0, 1);
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    std::fs::File::options().write(true).open(&input).unwrap().set_modified(modified).unwrap();
    let m = fails(&args);
    assert!(m.contains("no longer holds the documents an earlier run finished"), "{m}");
}
