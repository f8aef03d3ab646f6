//! A privacy tool fails closed: every failure found by trying `runtime-cli` with malformed files,
//! inputs and arguments (issue 17) reproduced, and checked to be a clear error that names what is
//! wrong, with no PHI passed through, no panic, no hang and nothing left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use runtime::weights::{serialize_f32, Checkpoint};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cli-fail-closed-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_runtime-cli");

/// Run with a deadline: a command that hangs fails the test instead of hanging it.
fn run(args: &[&str], deadline: Duration) -> Output {
    let mut child = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("runtime-cli {args:?} still running after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ok(args: &[&str]) -> (String, String) {
    let out = run(args, Duration::from_secs(600));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "runtime-cli {args:?} failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// A refusal: exit status 2, no panic, nothing on stdout; returns the message.
fn fails(args: &[&str]) -> String {
    let out = run(args, Duration::from_secs(600));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "runtime-cli {args:?} should fail with status 2:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{stderr}");
    assert!(out.stdout.is_empty(), "runtime-cli {args:?} wrote results before failing: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A copy of a fixture folder with its config edited and its tensors changed by `tensors`.
fn variant(name: &str, from: &str, config: impl FnOnce(&mut serde_json::Value), tensors: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> PathBuf {
    let dir = scratch(name);
    let src = fixture(from);
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    let ckpt = Checkpoint::open_dir(&src).unwrap();
    let mut names: Vec<String> = ckpt.names().map(str::to_string).collect();
    names.sort();
    let mut all: Vec<(String, Vec<usize>, Vec<f32>)> = names.iter().map(|n| {
        let t = ckpt.get(n).unwrap();
        (n.clone(), t.shape.to_vec(), t.to_f32().unwrap())
    }).collect();
    tensors(&mut all);
    std::fs::write(dir.join("model.safetensors"), serialize_f32(&all, None).unwrap()).unwrap();
    dir
}

fn set(tensors: &mut [(String, Vec<usize>, Vec<f32>)], name: &str, f: impl Fn(&mut Vec<f32>)) {
    let t = tensors.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no {name}"));
    f(&mut t.2);
}

const NOTE: &str = "{\"id\": \"n1\", \"text\": \"Mr. John Smith, MRN 4417-2093, seen 03/14/2019 for aspirin and chest pain.\"}\n";

fn note_file(dir: &Path) -> PathBuf {
    let p = dir.join("notes.jsonl");
    std::fs::write(&p, NOTE).unwrap();
    p
}

#[test]
fn non_finite_weights_are_refused_at_load_not_read_as_no_phi() {
    // Before: deid returned the note unredacted, with no spans, and exit 0; embed wrote nulls.
    let nan = variant("nan", "tiny-modernbert-tokcls", |_| {}, |t| set(t, "model.layers.1.mlp.Wi.weight", |v| v[17] = f32::NAN));
    let notes = note_file(&nan);
    let m = fails(&["deid", s(&notes), "--model", s(&nan), "--device", "cpu"]);
    assert!(m.contains("tensor \"model.layers.1.mlp.Wi.weight\": element 17 is NaN") && m.contains("model.safetensors"), "{m}");
    let inf = variant("inf", "tiny-modernbert-mlm", |_| {}, |t| set(t, "model.embeddings.tok_embeddings.weight", |v| v[3] = f32::INFINITY));
    let m = fails(&["embed", s(&notes), "--model", s(&inf), "--device", "cpu"]);
    assert!(m.contains("tensor \"model.embeddings.tok_embeddings.weight\": element 3 is inf"), "{m}");
}

#[test]
fn non_finite_outputs_are_an_error_naming_the_document() {
    // Finite weights so large that the classifier overflows: the logits are infinite or NaN, and
    // that is an error naming the document, never "no PHI here".
    let huge = variant("huge", "tiny-modernbert-tokcls", |_| {}, |t| set(t, "classifier.weight", |v| v.iter_mut().for_each(|x| *x = if *x > 0.0 { 3e38 } else { -3e38 })));
    let notes = note_file(&huge);
    let m = fails(&["deid", s(&notes), "--model", s(&huge), "--device", "cpu"]);
    assert!(m.contains("document \"n1\": the model's token-classification logits are not finite"), "{m}");
    let out = huge.join("out.jsonl");
    fails(&["deid", s(&notes), "--model", s(&huge), "--device", "cpu", "-o", s(&out)]);
    assert!(!out.exists(), "no output for a run that failed");
}

#[test]
fn labels_must_be_a_tagging_scheme() {
    let notes = note_file(&scratch("labels-notes"));
    let relabel = |name: &str, labels: serde_json::Value| {
        variant(name, "tiny-modernbert-tokcls", |c| {
            c["id2label"] = labels;
            c.as_object_mut().unwrap().remove("label2id");
        }, |_| {})
    };
    // Empty labels: before, the whole note was redacted to "[]".
    let dir = relabel("empty", serde_json::json!({"0": "O", "1": "", "2": "I-PROBLEM", "3": "B-DRUG", "4": "I-DRUG"}));
    let m = fails(&["deid", s(&notes), "--model", s(&dir), "--device", "cpu"]);
    assert!(m.contains("config.json: field \"id2label.1\": expected a label name, found an empty one"), "{m}");
    let dir = relabel("duplicate", serde_json::json!({"0": "O", "1": "B-DRUG", "2": "I-PROBLEM", "3": "B-DRUG", "4": "I-DRUG"}));
    let m = fails(&["deid", s(&notes), "--model", s(&dir), "--device", "cpu"]);
    assert!(m.contains("ids 1 and 3 have the same label \"B-DRUG\""), "{m}");
    let dir = relabel("no-o", serde_json::json!({"0": "B-NAME", "1": "I-NAME", "2": "B-DATE", "3": "I-DATE", "4": "B-ID"}));
    let m = fails(&["deid", s(&notes), "--model", s(&dir), "--device", "cpu"]);
    assert!(m.contains("field \"id2label\": no \"O\" label"), "{m}");
    let dir = relabel("mixed", serde_json::json!({"0": "O", "1": "B-NAME", "2": "I-NAME", "3": "DATE", "4": "ID"}));
    let m = fails(&["deid", s(&notes), "--model", s(&dir), "--device", "cpu"]);
    assert!(m.contains("are mixed; expected one tagging scheme"), "{m}");
    let dir = variant("placeholders", "tiny-modernbert-tokcls", |c| {
        let o = c.as_object_mut().unwrap();
        o.remove("id2label");
        o.remove("label2id");
    }, |_| {});
    let m = fails(&["deid", s(&notes), "--model", s(&dir), "--device", "cpu"]);
    assert!(m.contains("transformers' placeholders LABEL_0…LABEL_4"), "{m}");
}

#[test]
fn surrogates_are_keyed_and_keep_their_form() {
    // The bundled deid-small finds names and dates in the example note.
    let notes = repo().join("examples/notes.txt");
    let dir = scratch("keys");
    let redact = |extra: &[&str]| -> String {
        let mut args = vec!["deid", s(&notes), "--device", "cpu", "--surrogate"];
        args.extend_from_slice(extra);
        let (stdout, _) = ok(&args);
        let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
        v["redacted"].as_str().unwrap().to_string()
    };
    // A fresh secret per run: two runs differ (an unkeyed hash gave the same fake name every
    // time, so trying candidate names against it recovered the real one).
    let (a, b) = (redact(&[]), redact(&[]));
    assert_ne!(a, b, "two runs without a key file drew the same surrogates");
    // A key file: the same surrogates every run; another key file, others.
    let key = dir.join("deid.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let other = dir.join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let k1 = redact(&["--surrogate-key", s(&key)]);
    assert_eq!(k1, redact(&["--surrogate-key", s(&key)]));
    assert_ne!(k1, redact(&["--surrogate-key", s(&other)]));
    for text in [&a, &b, &k1] {
        for phi in ["Margaret", "4417-2093", "03/14/1931", "Whitfield", "555-0147"] {
            assert!(!text.contains(phi), "{phi} left in:\n{text}");
        }
    }
    std::fs::write(&key, b"too short").unwrap();
    let m = fails(&["deid", s(&notes), "--device", "cpu", "--surrogate-key", s(&key)]);
    assert!(m.contains("deid.key: 9 bytes; a surrogate key file must hold at least 16 secret bytes"), "{m}");
}

#[test]
fn shifted_dates_keep_intervals_and_hashes_link_values() {
    // One note with two dates five days apart and a name written twice.
    let dir = scratch("operators");
    let notes = dir.join("notes.jsonl");
    let text = "Mr. Jonas Whitfield was admitted on 03/14/2019 and discharged on 03/19/2019. Jonas Whitfield will follow up.";
    let line = serde_json::json!({"id": "n1", "text": text}).to_string();
    std::fs::write(&notes, format!("{line}\n{}\n", line.replace("n1", "n2"))).unwrap();
    let key = dir.join("deid.key");
    std::fs::write(&key, [5u8; 32]).unwrap();
    let run = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["deid", s(&notes), "--device", "cpu", "--surrogate-key", s(&key)];
        args.extend_from_slice(extra);
        let (stdout, _) = ok(&args);
        stdout.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["redacted"].as_str().unwrap().to_string()).collect()
    };
    let days = |date: &str| -> i64 {
        let p: Vec<i64> = date.split('/').map(|x| x.parse().unwrap()).collect();
        // Days since 2000-03-01 of (month, day, year): good enough for dates after 2000.
        let (y, m) = if p[0] <= 2 { (p[2] - 1, p[0] + 9) } else { (p[2], p[0] - 3) };
        365 * (y - 2000) + (y - 2000) / 4 - (y - 2000) / 100 + (y - 2000) / 400 + (153 * m + 2) / 5 + p[1] - 1
    };
    let shifted = run(&["--shift-dates"]);
    for out in &shifted {
        let dates: Vec<&str> = out.split(|c: char| !(c.is_ascii_digit() || c == '/')).filter(|w| w.matches('/').count() == 2).collect();
        assert_eq!(dates.len(), 2, "{out}");
        assert_eq!(days(dates[1]) - days(dates[0]), 5, "{out}");
        assert!(!out.contains("03/14/2019") && !out.contains("Whitfield"), "{out}");
    }
    // Another document, another offset (the ids differ); the same key, the same output.
    assert_ne!(shifted[0], shifted[1]);
    assert_eq!(shifted, run(&["--shift-dates"]));
    let hashed = run(&["--hash"]);
    let tags: Vec<&str> = hashed[0].split('[').skip(1).map(|t| t.split(']').next().unwrap()).collect();
    assert!(tags.iter().all(|t| t.contains(':')) && tags.len() >= 4, "{}", hashed[0]);
    // The name written twice has one hash; both documents hash alike under one key.
    let names: Vec<&&str> = tags.iter().filter(|t| t.starts_with("NAME:")).collect();
    assert!(names.len() >= 2 && names.iter().any(|n| names.iter().filter(|m| m == &n).count() >= 2), "{tags:?}");
    assert_eq!(hashed[0], hashed[1]);
    let m = fails(&["deid", s(&notes), "--device", "cpu", "--hash", "--surrogate"]);
    assert!(m.contains("--hash") && m.contains("--surrogate"), "{m}");
}

#[test]
fn numbers_are_range_checked_with_the_range_in_the_message() {
    let config = repo().join("tests/data/modernbert-configs/ModernBERT-base.config.json");
    let notes = note_file(&scratch("numbers"));
    let tiny = fixture("tiny-modernbert-tokcls");
    for (args, needle) in [
        (vec!["bench", "--config", s(&config), "--batch", "1", "--seq", "8", "--matmul-peak", "--matmul-rows", "0"], "0 is out of range: expected 1 to 1048576"),
        (vec!["bench", "--config", s(&config), "--batch", "18446744073709551615", "--seq", "8"], "18446744073709551615 is out of range"),
        (vec!["bench", "--config", s(&config), "--batch", "1", "--seq", "8", "--iters", "0"], "--iters <ITERS>': 0 is out of range"),
        (vec!["bench", "--config", s(&config), "--batch", "1", "--seq", "8", "--threads", "0"], "--threads <THREADS>': 0 is out of range: expected 1 to 4096"),
        (vec!["deid", s(&notes), "--model", s(&tiny), "--threshold", "-1"], "-1 is out of range: expected a probability from 0 to 1"),
        (vec!["deid", s(&notes), "--model", s(&tiny), "--threshold", "1.5"], "1.5 is out of range"),
        (vec!["deid", s(&notes), "--model", s(&tiny), "--batch-tokens", "-5"], "-5 is out of range"),
        (vec!["deid", s(&notes), "--model", s(&tiny), "--max-doc-bytes", "0"], "0 is out of range"),
        (vec!["fill-mask", "chest [MASK]", "--top-k", "0"], "0 is out of range: expected 1 to 1000"),
    ] {
        let m = fails(&args);
        assert!(m.contains(needle), "{args:?}: {m}");
    }
}

#[test]
fn config_sizes_are_bounded_before_anything_is_allocated() {
    let base: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo().join("tests/data/modernbert-configs/ModernBERT-base.config.json")).unwrap()).unwrap();
    let dir = scratch("bounds");
    let write = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let mut c = base.clone();
        edit(&mut c);
        let p = dir.join(name);
        std::fs::write(&p, c.to_string()).unwrap();
        p
    };
    let bench = |config: &Path, batch: &str, seq: &str| fails(&["bench", "--config", s(config), "--batch", batch, "--seq", seq]);
    let m = bench(&write("vocab.json", &|c| c["vocab_size"] = serde_json::json!(1u64 << 40)), "1", "8");
    assert!(m.contains("field \"vocab_size\": expected 1 to 4194304, found 1099511627776"), "{m}");
    let m = bench(&write("hidden.json", &|c| c["hidden_size"] = serde_json::json!(1 << 20)), "1", "8");
    assert!(m.contains("field \"hidden_size\": expected 1 to 32768, found 1048576"), "{m}");
    // Within the bounds but more than the machine holds: refused from the parameter count.
    let m = bench(&write("large.json", &|c| {
        c["hidden_size"] = serde_json::json!(32768);
        c["num_attention_heads"] = serde_json::json!(256);
        c["intermediate_size"] = serde_json::json!(131072);
        c["num_hidden_layers"] = serde_json::json!(1024);
    }), "1", "8");
    assert!(m.contains("a model of") && m.contains("parameters") && m.contains("of memory, but this machine has"), "{m}");
    // Activations of a million sequences of 512 tokens: refused before the ids are made.
    let start = Instant::now();
    let m = bench(&write("base.json", &|_| {}), "1000000", "512");
    assert!(m.contains("--batch 1000000 --seq 512 (512000000 tokens in one forward pass) would take") && m.contains("lower --batch or --seq"), "{m}");
    assert!(start.elapsed() < Duration::from_secs(60), "refused only after {:?}", start.elapsed());
    let m = bench(&write("context.json", &|c| c["max_position_embeddings"] = serde_json::json!(1)), "1", "1");
    assert!(m.contains("field \"max_position_embeddings\": expected 3 to 1048576 (room for [CLS], [SEP] and at least one token), found 1"), "{m}");
}

#[test]
fn a_huge_single_line_note_is_refused_by_default_and_windowed_when_allowed() {
    let dir = scratch("huge-note");
    let model = fixture("tiny-modernbert-mlm");
    // 50 MB on one line: before, an allocation failure after 27 s (a 20 MB line used 5.9 GB).
    let big = dir.join("big.txt");
    let sentence = "the patient reports chest pain and shortness of breath on exertion ";
    let text: String = sentence.repeat(50_000_000 / sentence.len() + 1);
    std::fs::write(&big, &text[..50_000_000]).unwrap();
    let start = Instant::now();
    let m = fails(&["embed", s(&big), "--model", s(&model), "--device", "cpu"]);
    assert!(m.contains("big.txt: the file is 50000000 bytes, more than --max-doc-bytes 8388608"), "{m}");
    assert!(start.elapsed() < Duration::from_secs(30), "refused only after {:?}", start.elapsed());
    // The same note as a JSONL document, refused with its id.
    let jsonl = dir.join("big.jsonl");
    std::fs::write(&jsonl, format!("{{\"id\": \"n1\", \"text\": \"short note\"}}\n{{\"id\": \"huge\", \"text\": \"{}\"}}\n", &text[..9_000_000])).unwrap();
    let m = fails(&["embed", s(&jsonl), "--model", s(&model), "--device", "cpu"]);
    assert!(m.contains("big.jsonl:2: document \"huge\": its text is 9000000 bytes, more than --max-doc-bytes 8388608"), "{m}");
    // Under a raised limit a long single-line note is tokenized in pieces and windowed.
    let long = dir.join("long.txt");
    std::fs::write(&long, &text[..300_000]).unwrap();
    let m = fails(&["embed", s(&long), "--model", s(&model), "--device", "cpu", "--max-doc-bytes", "200000"]);
    assert!(m.contains("the file is 300000 bytes, more than --max-doc-bytes 200000"), "{m}");
    let (stdout, stderr) = ok(&["embed", s(&long), "--model", s(&model), "--device", "cpu", "--max-doc-bytes", "400000"]);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stderr.contains("1 longer than the 510-token window, split into overlapping windows"), "{stderr}");
}

#[test]
fn fifos_are_refused_at_once() {
    let dir = scratch("fifo");
    let src = fixture("tiny-modernbert-tokcls");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    assert!(Command::new("mkfifo").arg(dir.join("model.safetensors")).status().unwrap().success());
    // Before: blocked forever waiting for a writer.
    let out = run(&["info", "--model", s(&dir), "--device", "cpu"], Duration::from_secs(60));
    let m = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{m}");
    assert!(m.contains("model.safetensors: is a named pipe (FIFO); expected a regular file"), "{m}");
    let pipe = dir.join("notes.txt");
    assert!(Command::new("mkfifo").arg(&pipe).status().unwrap().success());
    let out = run(&["embed", s(&pipe), "--model", s(&src), "--device", "cpu"], Duration::from_secs(60));
    let m = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(2) && m.contains("notes.txt: is a named pipe (FIFO); expected a regular file"), "{m}");
}

#[test]
fn outputs_are_checked_before_any_work_and_never_left_half_written() {
    let dir = scratch("outputs");
    let notes = note_file(&dir);
    let model = fixture("tiny-modernbert-tokcls");
    let missing = dir.join("no-such-model");
    // -o naming a directory: refused before the model is even opened (a model that does not
    // exist is not what the message is about), and nothing is left in it.
    let target = dir.join("out");
    std::fs::create_dir(&target).unwrap();
    let m = fails(&["deid", s(&notes), "--model", s(&missing), "-o", s(&target)]);
    assert!(m.contains("out: is a directory; -o expects a file name"), "{m}");
    assert!(entries(&target).is_empty());
    // -o equal to the input: refused, the input untouched.
    let m = fails(&["deid", s(&notes), "--model", s(&model), "--device", "cpu", "-o", s(&notes)]);
    assert!(m.contains("this is the input"), "{m}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), NOTE);
    // .npy writes FILE.ids.json too: checked as well.
    std::fs::create_dir(dir.join("e.npy.ids.json")).unwrap();
    let m = fails(&["embed", s(&notes), "--model", s(&missing), "-o", s(&dir.join("e.npy"))]);
    assert!(m.contains("e.npy.ids.json: is a directory"), "{m}");
    // A failure after the output was opened (a broken document after good ones): no output, no
    // temporary file, for every output format.
    let broken = dir.join("broken.jsonl");
    std::fs::write(&broken, format!("{NOTE}{NOTE}{{\"id\": \"bad\", \"text\": \"broken \\ud800\"\n")).unwrap();
    for out in ["r.jsonl", "r.npy", "r.safetensors"] {
        let mlm = fixture("tiny-modernbert-mlm");
        let m = fails(&["embed", s(&broken), "--model", s(&mlm), "--device", "cpu", "-o", s(&dir.join(out))]);
        assert!(m.contains("broken.jsonl:3"), "{m}");
    }
    assert_eq!(entries(&dir), vec!["broken.jsonl", "e.npy.ids.json", "notes.jsonl", "out"], "no output and no temporary file");
}

#[test]
fn standard_output_that_fails_is_an_error() {
    let dir = scratch("stdout");
    let notes = note_file(&dir);
    let model = fixture("tiny-modernbert-tokcls");
    // Closed: before, the results were lost and the exit code was 0.
    let out = Command::new("sh").arg("-c").arg(format!("exec '{BIN}' deid '{}' --model '{}' --device cpu >&-", s(&notes), s(&model))).output().unwrap();
    let m = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{m}");
    assert!(m.contains("standard output is closed"), "{m}");
    // A deliberate discard is not a closed output.
    let out = Command::new("sh").arg("-c").arg(format!("exec '{BIN}' deid '{}' --model '{}' --device cpu > /dev/null", s(&notes), s(&model))).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Full disk.
    let out = Command::new("sh").arg("-c").arg(format!("exec '{BIN}' deid '{}' --model '{}' --device cpu > /dev/full", s(&notes), s(&model))).output().unwrap();
    let m = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{m}");
    assert!(m.contains("<stdout>") && m.contains("No space left on device"), "{m}");
}

#[test]
fn an_interrupted_run_leaves_no_temporary_file() {
    let dir = scratch("interrupt");
    let notes = dir.join("notes.jsonl");
    let line = NOTE.replace("\n", "");
    std::fs::write(&notes, (0..40_000).map(|i| line.replace("\"n1\"", &format!("\"n{i}\"")) + "\n").collect::<String>()).unwrap();
    let out = dir.join("e.npy");
    let mut child = Command::new(BIN)
        .args(["embed", s(&notes), "--model", s(&fixture("tiny-modernbert-mlm")), "--device", "cpu", "-o", s(&out)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the output's temporary file exists (the work has started), then interrupt.
    let start = Instant::now();
    while !entries(&dir).iter().any(|e| e.starts_with(".e.npy.tmp-")) {
        assert!(start.elapsed() < Duration::from_secs(120) && child.try_wait().unwrap().is_none(), "no temporary file appeared: {:?}", entries(&dir));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(entries(&dir), vec!["notes.jsonl"], "the interrupted run left files behind");
}

#[test]
fn input_files_that_cannot_be_read_whole_are_errors() {
    let dir = scratch("inputs");
    let model = fixture("tiny-modernbert-mlm");
    // An unterminated quote: before, the rest of the file silently became one document.
    let csv = dir.join("notes.csv");
    std::fs::write(&csv, "id,note\n1,first note\n2,\"second note\n3,third note\n4,fourth note\n").unwrap();
    let m = fails(&["embed", s(&csv), "--text-column", "note", "--model", s(&model), "--device", "cpu"]);
    assert!(m.contains("notes.csv:3: a quoted field opens here and is never closed"), "{m}");
    // A dangling link among the notes of a directory: before, skipped silently.
    let notes = dir.join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("a.txt"), "first note").unwrap();
    std::os::unix::fs::symlink(dir.join("moved-away.txt"), notes.join("b.txt")).unwrap();
    let m = fails(&["embed", s(&notes), "--model", s(&model), "--device", "cpu"]);
    assert!(m.contains("b.txt: is a symbolic link to") && m.contains("moved-away.txt, which does not exist; use --skip-invalid to skip it"), "{m}");
    let (stdout, stderr) = ok(&["embed", s(&notes), "--model", s(&model), "--device", "cpu", "--skip-invalid"]);
    assert_eq!(stdout.lines().count(), 1);
    assert!(stderr.contains("skipped") && stderr.contains("b.txt: is a symbolic link"), "{stderr}");
    // A byte-order mark: before, "not a JSON object".
    let bom = dir.join("bom.jsonl");
    std::fs::write(&bom, format!("\u{feff}{NOTE}")).unwrap();
    let (stdout, _) = ok(&["embed", s(&bom), "--model", s(&model), "--device", "cpu"]);
    assert!(stdout.contains("\"id\":\"n1\""), "{stdout}");
}

#[test]
fn unclear_messages_now_name_the_file_and_what_was_expected() {
    let dir = scratch("messages");
    let notes = note_file(&dir);
    // A shard index that lists nothing: before, "error: : missing tensor".
    let sharded = scratch("messages-sharded");
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(fixture("tiny-modernbert-mlm").join(f), sharded.join(f)).unwrap();
    }
    std::fs::write(sharded.join("model.safetensors.index.json"), "{\"metadata\": {}, \"weight_map\": {}}").unwrap();
    let m = fails(&["embed", s(&notes), "--model", s(&sharded), "--device", "cpu"]);
    assert!(m.contains("model.safetensors.index.json: field \"weight_map\": lists no tensors"), "{m}");
    // A config without pad_token_id and a small vocabulary: before, "token id 50283 is outside
    // the vocabulary of 320" (a default the user never wrote).
    let no_pad = variant("no-pad", "tiny-modernbert-mlm", |c| {
        c.as_object_mut().unwrap().remove("pad_token_id");
    }, |_| {});
    let m = fails(&["embed", s(&notes), "--model", s(&no_pad), "--device", "cpu"]);
    assert!(m.contains("field \"pad_token_id\" is absent, and transformers' default for ModernBERT (50283") && m.contains("add \"pad_token_id\""), "{m}");
    // A malformed tokenizer.json: before, "data did not match any variant of untagged enum
    // ModelUntagged".
    let tok = variant("bad-tokenizer", "tiny-modernbert-mlm", |_| {}, |_| {});
    let mut t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tok.join("tokenizer.json")).unwrap()).unwrap();
    t["model"]["vocab"] = serde_json::json!(5);
    std::fs::write(tok.join("tokenizer.json"), t.to_string()).unwrap();
    let m = fails(&["embed", s(&notes), "--model", s(&tok), "--device", "cpu"]);
    assert!(m.contains("tokenizer.json: section \"model\" (type \"BPE\") is malformed"), "{m}");
    // A config with a byte-order mark reads (before: "not valid JSON").
    let bom = variant("bom-config", "tiny-modernbert-mlm", |_| {}, |_| {});
    let text = std::fs::read_to_string(bom.join("config.json")).unwrap();
    std::fs::write(bom.join("config.json"), format!("\u{feff}{text}")).unwrap();
    ok(&["embed", s(&notes), "--model", s(&bom), "--device", "cpu"]);
}
