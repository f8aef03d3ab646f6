//! `runtime-cli embed / fill-mask / deid / classify / info` end to end through the binary, on the
//! fixture models, on both backends, with real clinical text (ACI-BENCH notes longer than the
//! tiny models' 512-token context, MTS-Dialog sections of mixed lengths, the OBI demo notes).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails, jsonl, ok, repo};

fn fixture(name: &str) -> String {
    repo().join("tests/fixtures").join(name).display().to_string()
}
fn data(name: &str) -> String {
    repo().join("tests/data").join(name).display().to_string()
}
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cli-commands-{}", std::process::id())).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const MLM: &str = "tiny-modernbert-mlm";
const TOKCLS: &str = "tiny-modernbert-tokcls";

fn embedding(v: &serde_json::Value) -> Vec<f32> {
    v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    kernels::tolerance::cosine(a, b)
}

#[test]
fn embed_long_notes_on_both_devices() {
    let model = fixture(MLM);
    let notes = data("aci-bench/valid.csv");
    let mut per_device = Vec::new();
    for device in ["cpu", "gpu"] {
        let (stdout, stderr) = ok(&["embed", &notes, "--text-column", "note", "--id-column", "encounter_id", "--model", &model, "--device", device]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[0]["id"], "D2N068");
        assert_eq!(rows[19]["id"], "D2N087");
        assert!(rows.iter().all(|r| embedding(r).len() == 48));
        // Every ACI-BENCH note is longer than the tiny model's context: all are windowed, and said so.
        assert!(stderr.contains("embedded 20 documents") && stderr.contains("20 longer than the 510-token window"), "{stderr}");
        per_device.push(rows);
    }
    for (a, b) in per_device[0].iter().zip(&per_device[1]) {
        assert!(cosine(&embedding(a), &embedding(b)) >= 0.99999, "CPU and GPU embeddings differ for {}", a["id"]);
    }
}

#[test]
fn embedding_is_the_same_alone_and_in_any_batch() {
    // MTS-Dialog sections: mixed lengths in one run, under two different batch budgets.
    let model = fixture(MLM);
    let sections = data("mts-dialog/MTS-Dialog-ValidationSet.csv");
    let run = |extra: &[&str]| {
        let mut args = vec!["embed", &sections, "--text-column", "section_text", "--id-column", "ID", "--model", &model, "--device", "cpu"];
        args.extend_from_slice(extra);
        jsonl(&ok(&args).0)
    };
    let big = run(&[]);
    let small = run(&["--batch-tokens", "600"]);
    assert_eq!(big.len(), 100);
    for (a, b) in big.iter().zip(&small) {
        assert_eq!(a["id"], b["id"], "output order equals input order");
        assert!(cosine(&embedding(a), &embedding(b)) >= 0.99999);
    }
    // Three documents alone (stdin, JSONL) against the same documents in the batch.
    for k in [0usize, 41, 99] {
        let text = std::fs::read_to_string(&sections).unwrap();
        let mut reader = csv_rows(&text);
        let row = reader.remove(k);
        let line = serde_json::json!({"id": row.0, "text": row.1}).to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-cli"))
            .args(["embed", "-", "--format", "jsonl", "--model", &model, "--device", "cpu"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let alone = jsonl(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(alone[0]["id"], big[k]["id"]);
        let c = cosine(&embedding(&alone[0]), &embedding(&big[k]));
        assert!(c >= 0.99999, "document {k}: cosine {c}");
    }
}

/// (ID, section_text) of the MTS-Dialog CSV, parsed independently of the CLI.
fn csv_rows(text: &str) -> Vec<(String, String)> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    r.records().map(|rec| { let rec = rec.unwrap(); (rec[0].to_string(), rec[2].to_string()) }).collect()
}

#[test]
fn embed_writes_npy_and_safetensors_atomically() {
    let dir = scratch("formats");
    let model = fixture(MLM);
    let notes = data("deid-sample-notes/obi_robust_deid_notes.jsonl");
    let npy = dir.join("notes.npy");
    ok(&["embed", &notes, "--model", &model, "--device", "cpu", "--normalize", "-o", npy.to_str().unwrap()]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert!(std::str::from_utf8(&bytes[10..10 + header_len]).unwrap().contains("'shape': (4, 48)"));
    let first: Vec<f32> = bytes[10 + header_len..10 + header_len + 48 * 4].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let norm: f32 = first.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "--normalize: norm {norm}");
    let ids: Vec<String> = serde_json::from_str(&std::fs::read_to_string(dir.join("notes.npy.ids.json")).unwrap()).unwrap();
    assert_eq!(ids, vec!["1", "2", "3", "4"]);

    let st = dir.join("notes.safetensors");
    ok(&["embed", &notes, "--model", &model, "--device", "cpu", "--pooling", "cls", "-o", st.to_str().unwrap()]);
    let ckpt = runtime::weights::Checkpoint::open_file(&st).unwrap();
    assert_eq!(ckpt.get("embeddings").unwrap().shape, &[4, 48]);
    // The temporary files are gone.
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp-")).collect();
    assert!(leftovers.is_empty());

    // An output in a missing directory: a clear error, nothing written.
    let bad = dir.join("missing/out.jsonl");
    let m = fails(&["embed", &notes, "--model", &model, "--device", "cpu", "-o", bad.to_str().unwrap()]);
    assert!(m.contains("does not exist"), "{m}");
}

#[test]
fn fill_mask_predicts_every_mask() {
    let model = fixture(MLM);
    for device in ["cpu", "gpu"] {
        let (stdout, _) = ok(&["fill-mask", "The patient denies chest [MASK] and shortness of [MASK].", "--model", &model, "--device", device, "--top-k", "4", "--json"]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 2);
        for r in &rows {
            let p = r["predictions"].as_array().unwrap();
            assert_eq!(p.len(), 4);
            let scores: Vec<f64> = p.iter().map(|c| c["score"].as_f64().unwrap()).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]) && scores.iter().sum::<f64>() <= 1.0 + 1e-6);
        }
        assert_eq!(rows[0]["offset"], 25);
    }
    let (table, _) = ok(&["fill-mask", "Blood pressure [MASK] stable.", "--model", &model, "--device", "cpu"]);
    assert!(table.starts_with("[MASK] #1 at character 15:"), "{table}");
    assert_eq!(table.lines().count(), 6);
    let m = fails(&["fill-mask", "No mask here.", "--model", &model, "--device", "cpu"]);
    assert!(m.contains("no [MASK] token"), "{m}");
    let m = fails(&["fill-mask", "A [MASK].", "--model", &fixture(TOKCLS), "--device", "cpu"]);
    assert!(m.contains("fill-mask needs a masked-LM head"), "{m}");
}

fn check_spans(text: &str, row: &serde_json::Value) {
    let chars: Vec<char> = text.chars().collect();
    let mut last_end = 0;
    for s in row["spans"].as_array().unwrap() {
        let (start, end) = (s["start"].as_u64().unwrap() as usize, s["end"].as_u64().unwrap() as usize);
        assert!(start >= last_end && start < end && end <= chars.len(), "{s}");
        assert_eq!(chars[start..end].iter().collect::<String>(), s["text"].as_str().unwrap(), "offsets are characters of the original");
        assert!(!s["text"].as_str().unwrap().starts_with(' '));
        let score = s["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        last_end = end;
    }
}

#[test]
fn deid_long_notes_on_both_devices() {
    let model = fixture(TOKCLS);
    let notes = data("aci-bench/valid.csv");
    let text = std::fs::read_to_string(&notes).unwrap();
    let originals: Vec<String> = csv::Reader::from_reader(text.as_bytes()).records().map(|r| r.unwrap()[3].to_string()).collect();
    let mut per_device = Vec::new();
    for device in ["cpu", "gpu"] {
        let (stdout, stderr) = ok(&["deid", &notes, "--text-column", "note", "--id-column", "encounter_id", "--model", &model, "--device", device, "--threshold", "0.6"]);
        assert!(stderr.contains("de-identified 20 documents") && stderr.contains("longer than the 510-token window"), "{stderr}");
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 20);
        for (row, original) in rows.iter().zip(&originals) {
            check_spans(original, row);
            // The redaction replaces exactly the spans with [LABEL].
            let spans: Vec<runtime::deid::Span> = row["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| runtime::deid::Span {
                    start: s["start"].as_u64().unwrap() as usize,
                    end: s["end"].as_u64().unwrap() as usize,
                    label: s["label"].as_str().unwrap().into(),
                    text: s["text"].as_str().unwrap().into(),
                    score: 0.0,
                    source: s["source"].as_str().unwrap().into(),
                })
                .collect();
            assert_eq!(row["redacted"].as_str().unwrap(), runtime::deid::redact_placeholders(original, &spans));
        }
        per_device.push(rows);
    }
    // Both backends find the same spans (scores within float noise).
    for (a, b) in per_device[0].iter().zip(&per_device[1]) {
        let key = |r: &serde_json::Value| r["spans"].as_array().unwrap().iter().map(|s| (s["start"].clone(), s["end"].clone(), s["label"].clone())).collect::<Vec<_>>();
        assert_eq!(key(a), key(b), "document {}", a["id"]);
    }
    // Windows of 100 tokens with 30 of overlap still cover every character: same spans as long as
    // predictions agree near the middle of windows, and every span is still a valid slice.
    let (stdout, _) = ok(&["deid", &notes, "--text-column", "note", "--model", &model, "--device", "cpu", "--window", "100", "--overlap", "30"]);
    for (row, original) in jsonl(&stdout).iter().zip(&originals) {
        check_spans(original, row);
    }
}

#[test]
fn deid_threshold_and_surrogates() {
    let model = fixture(TOKCLS);
    let notes = data("deid-sample-notes/obi_robust_deid_notes.jsonl");
    let count = |threshold: &str| -> usize {
        jsonl(&ok(&["deid", &notes, "--model", &model, "--device", "cpu", "--threshold", threshold]).0).iter().map(|r| r["spans"].as_array().unwrap().len()).sum()
    };
    let (strict, lenient) = (count("0.9"), count("0.2"));
    assert!(lenient > strict, "a lower threshold redacts more ({lenient} vs {strict})");
    let (stdout, _) = ok(&["deid", &notes, "--model", &model, "--device", "cpu", "--surrogate"]);
    let (placeholders, _) = ok(&["deid", &notes, "--model", &model, "--device", "cpu"]);
    let texts: Vec<String> = std::fs::read_to_string(&notes).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string()).collect();
    let mut compared = 0;
    for ((row, plain), text) in jsonl(&stdout).iter().zip(jsonl(&placeholders)).zip(&texts) {
        check_spans(text, row);
        assert_eq!(row["spans"], plain["spans"]);
        // PROBLEM and DRUG have no surrogate of their form: they keep their placeholder (a value
        // of digits and punctuation only would keep its pattern instead).
        let spans = row["spans"].as_array().unwrap();
        if !spans.is_empty() && spans.iter().all(|s| s["text"].as_str().unwrap().chars().any(char::is_alphabetic)) {
            assert_eq!(row["redacted"], plain["redacted"]);
            compared += 1;
        }
    }
    assert!(compared > 0);
    let m = fails(&["deid", &notes, "--model", &fixture(MLM), "--device", "cpu"]);
    assert!(m.contains("deid needs a classification head"), "{m}");
    let m = fails(&["deid", &notes, "--model", &model, "--device", "cpu", "--threshold", "1.5"]);
    assert!(m.contains("--threshold"), "{m}");
}

/// The tiny token classifier's weights saved as a ModernBertForSequenceClassification (same
/// classifier shape), a stand-in sequence classifier.
fn seqcls_folder() -> String {
    let dir = scratch("seqcls");
    let src = PathBuf::from(fixture(TOKCLS));
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["ModernBertForSequenceClassification"]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir.display().to_string()
}

#[test]
fn classify_documents() {
    let model = seqcls_folder();
    let sections = data("mts-dialog/MTS-Dialog-ValidationSet.csv");
    for device in ["cpu", "gpu"] {
        let (stdout, stderr) = ok(&["classify", &sections, "--text-column", "section_text", "--model", &model, "--device", device]);
        let rows = jsonl(&stdout);
        assert_eq!(rows.len(), 100);
        for r in &rows {
            let scores = r["scores"].as_object().unwrap();
            assert_eq!(scores.len(), 5);
            let total: f64 = scores.values().map(|v| v.as_f64().unwrap()).sum();
            assert!((total - 1.0).abs() < 1e-4);
            assert!(scores.contains_key(r["label"].as_str().unwrap()));
        }
        assert!(stderr.contains("classified 100 documents"), "{stderr}");
    }
    let m = fails(&["classify", &sections, "--text-column", "section_text", "--model", &fixture(MLM), "--device", "cpu"]);
    assert!(m.contains("classify needs a classification head"), "{m}");
    let m = fails(&["classify", &sections, "--text-column", "section_text", "--model", &fixture(TOKCLS), "--device", "cpu"]);
    assert!(m.contains("classify needs a ModernBertForSequenceClassification") && m.contains("use `runtime-cli deid`"), "{m}");
    let m = fails(&["deid", &sections, "--text-column", "section_text", "--model", &model, "--device", "cpu"]);
    assert!(m.contains("deid needs a ModernBertForTokenClassification") && m.contains("use `runtime-cli classify`"), "{m}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = scratch("bad");
    let model = fixture(MLM);
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, b"fine first line\nbroken \xff\xfe line\nlast line\n").unwrap();
    let m = fails(&["embed", bad.to_str().unwrap(), "--lines", "--model", &model, "--device", "cpu"]);
    assert!(m.contains("bad.txt:2: invalid UTF-8") && m.contains("--skip-invalid"), "{m}");
    let (stdout, stderr) = ok(&["embed", bad.to_str().unwrap(), "--lines", "--skip-invalid", "--model", &model, "--device", "cpu"]);
    assert_eq!(jsonl(&stdout).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), vec!["1", "3"]);
    assert!(stderr.contains("skipped") && stderr.contains("bad.txt:2"), "{stderr}");

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let m = fails(&["embed", empty.to_str().unwrap(), "--model", &model, "--device", "cpu"]);
    assert!(m.contains("empty.txt: the input is empty"), "{m}");

    let m = fails(&["embed", &data("aci-bench/valid.csv"), "--model", &model, "--device", "cpu"]);
    assert!(m.contains("--text-column"), "{m}");
    let m = fails(&["embed", &data("aci-bench/valid.csv"), "--text-column", "nope", "--model", &model, "--device", "cpu"]);
    assert!(m.contains("no column \"nope\"") && m.contains("encounter_id"), "{m}");
    let m = fails(&["embed", "/nonexistent/notes.txt", "--model", &model, "--device", "cpu"]);
    assert!(m.contains("/nonexistent/notes.txt"), "{m}");

    // A directory of .txt files, one document each.
    let notes = dir.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("b.txt"), "Second note.").unwrap();
    std::fs::write(notes.join("a.txt"), "First note.").unwrap();
    let (stdout, _) = ok(&["embed", notes.to_str().unwrap(), "--model", &model, "--device", "cpu"]);
    assert_eq!(jsonl(&stdout).iter().map(|r| r["id"].as_str().unwrap().to_string()).collect::<Vec<_>>(), vec!["a.txt", "b.txt"]);

    // An existing output is left untouched when a run fails.
    let out = dir.join("keep.jsonl");
    std::fs::write(&out, "previous results\n").unwrap();
    fails(&["embed", empty.to_str().unwrap(), "--model", &model, "--device", "cpu", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous results\n");
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["embed", "fill-mask", "deid", "classify", "check", "info"] {
        let (stdout, _) = ok(&[cmd, "--help"]);
        assert!(stdout.contains("Example"), "{cmd} --help has no example:\n{stdout}");
    }
}

#[test]
fn info_describes_model_and_device() {
    for (m, heads) in [(MLM, "masked LM"), (TOKCLS, "5 labels: O, B-PROBLEM, I-PROBLEM, B-DRUG, I-DRUG")] {
        for device in ["cpu", "gpu"] {
            let (stdout, _) = ok(&["info", "--model", &fixture(m), "--device", device]);
            for needle in ["architecture: ModernBert", "4 layers, hidden 48", "2 global layers", "±4 tokens", heads, "tokenizer:", "batching: windows of 510 tokens"] {
                assert!(stdout.contains(needle), "{needle:?} missing from:\n{stdout}");
            }
            let limits = if device == "gpu" { "max storage binding" } else { "threads" };
            assert!(stdout.contains(limits), "{stdout}");
        }
    }
}

#[test]
fn embed_follows_sentence_transformers_pooling() {
    // A sentence-transformers folder: CLS pooling and a Normalize module.
    let dir = scratch("st");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(Path::new(&fixture(MLM)).join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(dir.join("1_Pooling/config.json"), r#"{"word_embedding_dimension": 48, "pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#).unwrap();
    let notes = data("deid-sample-notes/obi_robust_deid_notes.jsonl");
    let st = jsonl(&ok(&["embed", &notes, "--model", dir.to_str().unwrap(), "--device", "cpu"]).0);
    let explicit = jsonl(&ok(&["embed", &notes, "--model", &fixture(MLM), "--device", "cpu", "--pooling", "cls", "--normalize"]).0);
    let mean = jsonl(&ok(&["embed", &notes, "--model", &fixture(MLM), "--device", "cpu"]).0);
    for ((a, b), c) in st.iter().zip(&explicit).zip(&mean) {
        assert!(cosine(&embedding(a), &embedding(b)) >= 0.99999);
        let norm: f32 = embedding(a).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(cosine(&embedding(a), &embedding(c)) < 0.9999, "CLS differs from the default mean pooling");
    }
    // An unsupported pooling mode is refused, naming the file.
    std::fs::write(dir.join("1_Pooling/config.json"), r#"{"pooling_mode_max_tokens": true}"#).unwrap();
    let m = fails(&["embed", &notes, "--model", dir.to_str().unwrap(), "--device", "cpu"]);
    assert!(m.contains("1_Pooling/config.json") && m.contains("pooling_mode_max_tokens"), "{m}");
}

/// `serve-web` serves the page and the model folder over HTTP on loopback, nothing outside them,
/// and refuses to start without a built page or with an incomplete model folder.
#[test]
fn serve_web_serves_the_page_and_the_model() {
    use std::io::{BufRead, BufReader, Read, Write};
    let root = scratch("serve-web");
    std::fs::write(root.join("index.html"), "<!doctype html><title>page</title>").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-cli"))
        .args(["serve-web", "--port", "0", "--model", &fixture(TOKCLS), "--root"])
        .arg(&root)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    let get = |path: &str| -> (String, Vec<u8>) {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (String::from_utf8_lossy(&raw[..split]).into_owned(), raw[split + 4..].to_vec())
    };
    let (head, body) = get("/");
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/html"), "{head}");
    assert_eq!(body, b"<!doctype html><title>page</title>");
    let (head, body) = get("/models/deid/model.safetensors");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, std::fs::read(Path::new(&fixture(TOKCLS)).join("model.safetensors")).unwrap());
    assert!(get("/../Cargo.toml").0.starts_with("HTTP/1.1 404"));
    assert!(get("/models/deid/../config.json").0.starts_with("HTTP/1.1 404"));
    // A page on another site reaching this server through DNS rebinding names its own host.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(s, "GET / HTTP/1.1\r\nHost: attacker.example:80\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 403"), "{raw}");
    child.kill().unwrap();
    let _ = child.wait();

    let empty = scratch("serve-web-empty");
    assert!(fails(&["serve-web", "--root", &empty.display().to_string()]).contains("no index.html"));
    assert!(fails(&["serve-web", "--root", &root.display().to_string(), "--model", &empty.display().to_string()]).contains("no config.json"));
}
