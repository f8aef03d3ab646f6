//! Without `--model`, `runtime-cli embed`, `fill-mask`, `info` and `deid` use the small models
//! bundled in models/ (the README's first command on a fresh clone), and serve-web serves the
//! bundled de-identification model as the page's default.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runtime-cli")).args(args).current_dir(std::env::temp_dir()).env_remove("RUNTIME_MODELS_DIR").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "runtime-cli {args:?} failed:\n{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn embed_example_notes_with_the_bundled_encoder() {
    let notes = repo().join("examples/notes.txt");
    let out = ok(&["embed", notes.to_str().unwrap(), "--device", "cpu"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    let e = lines[0]["embedding"].as_array().unwrap();
    assert_eq!(e.len(), 256, "clinical-small has hidden size 256");
    assert!(e.iter().all(|x| x.as_f64().unwrap().is_finite()));
    let many = ok(&["embed", repo().join("examples/notes.jsonl").to_str().unwrap(), "--device", "cpu", "--normalize"]);
    let v: Vec<Vec<f64>> = many.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()).collect();
    assert_eq!(v.len(), 4);
    for e in &v {
        assert!((e.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    }
    let info = ok(&["info", "--device", "cpu"]);
    assert!(info.contains("clinical-small"), "{info}");
}

#[test]
fn fill_mask_with_the_bundled_encoder() {
    let out = ok(&["fill-mask", "The patient denies chest [MASK] and shortness of breath.", "--device", "cpu", "--json", "--top-k", "10"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let text = v.to_string().to_lowercase();
    assert!(text.contains("pain"), "\"pain\" should be among the 10 best fills: {out}");
}

#[test]
fn deid_example_note_with_the_bundled_model() {
    let notes = repo().join("examples/notes.txt");
    let out = ok(&["deid", notes.to_str().unwrap(), "--device", "cpu"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let redacted = v["redacted"].as_str().unwrap();
    for phi in ["Margaret", "4417-2093", "03/14/1931", "Whitfield", "555-0147", "Ellen"] {
        assert!(!redacted.contains(phi), "{phi} left in:\n{redacted}");
    }
    for kept in ["furosemide", "shortness of breath", "Echocardiogram"] {
        assert!(redacted.contains(kept), "{kept} redacted:\n{redacted}");
    }
    let labels: Vec<&str> = v["spans"].as_array().unwrap().iter().map(|s| s["label"].as_str().unwrap()).collect();
    for l in ["NAME", "DATE", "ID", "CONTACT", "LOCATION"] {
        assert!(labels.contains(&l), "no {l} span: {labels:?}");
    }
}

#[test]
fn commands_without_a_bundled_model_ask_for_one() {
    let out = cli(&["classify", repo().join("examples/notes.txt").to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model DIR is required"));
}

#[test]
fn serve_web_serves_the_bundled_deid_model_by_default() {
    let root = std::env::temp_dir().join(format!("cli-bundled-web-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>t</title>").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-cli")).args(["serve-web", "--port", "0", "--root", root.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut buf = Vec::new();
    let addr = loop {
        let mut b = [0u8; 256];
        let n = err.read(&mut b).unwrap();
        assert!(n > 0, "serve-web exited: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&b[..n]);
        let s = String::from_utf8_lossy(&buf).to_string();
        if let Some(i) = s.find("http://") {
            if let Some(end) = s[i + 7..].find('/') {
                break s[i + 7..i + 7 + end].to_string();
            }
        }
    };
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(conn, "GET /models/deid/config.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let config: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(config["architectures"][0], "ModernBertForTokenClassification");
    assert!(config["id2label"].as_object().unwrap().values().any(|l| l == "B-NAME"));
    let _ = std::fs::remove_dir_all(root);
}

/// `--dtype int8` on the CPU (issue 23): the bundled de-identification model redacts the example
/// notes exactly as in f32, and the bundled encoder's embeddings stay within cosine 0.995.
#[test]
fn int8_deid_and_embed_match_f32_on_the_bundled_models() {
    let notes = repo().join("examples/notes.jsonl");
    let notes = notes.to_str().unwrap();
    let spans = |dtype: &str| -> Vec<(String, Vec<(u64, u64, String)>)> {
        ok(&["deid", notes, "--device", "cpu", "--dtype", dtype])
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let s = v["spans"].as_array().unwrap().iter().map(|s| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap(), s["label"].as_str().unwrap().to_string())).collect();
                (v["redacted"].as_str().unwrap().to_string(), s)
            })
            .collect()
    };
    let (a, b) = (spans("f32"), spans("int8"));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "int8 redacts the example notes differently from f32");
    let embed = |dtype: &str| -> Vec<Vec<f64>> {
        ok(&["embed", notes, "--device", "cpu", "--dtype", dtype])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
            .collect()
    };
    let (a, b) = (embed("f32"), embed("int8"));
    for (x, y) in a.iter().zip(&b) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let norm = |v: &[f64]| v.iter().map(|p| p * p).sum::<f64>().sqrt();
        let c = dot / norm(x) / norm(y);
        assert!(c >= kernels::tolerance::INT8_EMBEDDING_COSINE && x != y, "cosine {c}");
    }
    let info = ok(&["info", "--device", "cpu", "--dtype", "int8"]);
    assert!(info.contains("int8"), "{info}");
}
