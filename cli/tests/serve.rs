//! `runtime-cli serve` over real HTTP: every route against the CLI's own results, the protocols'
//! shapes, every refusal (with the field named), queue limits, deadlines, API keys, logs without
//! note text, and a graceful stop. The clients nobody here wrote (huggingface_hub, openai,
//! requests) are tested by `tests/serve_clients.py`, which `.ci/run` runs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{jsonl, ok, repo};
use serde_json::{json, Value};

/// A server on a free loopback port, its stderr collected; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-cli"))
            // A small token budget: each server warms up with a full batch at start.
            .args(["serve", "--port", "0", "--device", "cpu", "--batch-tokens", "2048"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
        Server { child, base, log }
    }
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into()
}

/// POST a raw body: (status, JSON body, Retry-After).
fn post_raw(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value, Option<String>) {
    let mut req = agent().post(url).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let text = resp.body_mut().read_to_string().unwrap();
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")) };
    (status, value, retry)
}

fn post(url: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = post_raw(url, body.to_string().as_bytes(), &[]);
    (s, v)
}

fn get(url: &str) -> (u16, String) {
    let mut resp = agent().get(url).call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap())
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn notes() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("examples/notes.jsonl")).unwrap();
    jsonl(&text).iter().map(|d| d["text"].as_str().unwrap().to_string()).collect()
}

#[test]
fn routes_answer_what_the_cli_computes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deid.key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef").unwrap();
    let server = Server::start(&["--surrogate-key", key.to_str().unwrap()]);
    let notes = notes();
    let notes_path = repo().join("examples/notes.jsonl");
    let notes_arg = notes_path.to_str().unwrap();

    // TEI /embed (normalize false) against `runtime-cli embed`, document by document.
    let (cli_out, _) = ok(&["embed", notes_arg, "--device", "cpu"]);
    let cli: Vec<Vec<f64>> = jsonl(&cli_out).iter().map(|l| floats(&l["embedding"])).collect();
    let (status, body) = post(&server.url("/embed"), json!({"inputs": notes, "normalize": false}));
    assert_eq!(status, 200, "{body}");
    let served: Vec<Vec<f64>> = body.as_array().unwrap().iter().map(floats).collect();
    assert_eq!(served.len(), cli.len());
    for (s, c) in served.iter().zip(&cli) {
        assert!(cosine(s, c) >= 0.99999, "cosine {}", cosine(s, c));
    }
    // One string: still a list of lists, normalised by default.
    let (_, one) = post(&server.url("/embed"), json!({"inputs": notes[0]}));
    let v = floats(&one[0]);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5);
    assert!(cosine(&v, &cli[0]) >= 0.99999);
    let (_, short) = post(&server.url("/embed"), json!({"inputs": "x", "dimensions": 16}));
    let short = floats(&short[0]);
    assert_eq!(short.len(), 16);
    assert!((short.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5);
    assert_eq!(post(&server.url("/embed"), json!({"inputs": "x", "dimensions": 0})).0, 422);
    // `/` is TEI's embedding route too, and tolerates huggingface_hub's extra keys.
    let (status, root) = post(&server.url("/"), json!({"inputs": [notes[0]], "parameters": {}, "truncate": null}));
    assert_eq!(status, 200, "{root}");
    assert!(cosine(&floats(&root[0]), &v) > 0.999999);

    // OpenAI, float and base64 (little-endian f32).
    let (status, oa) = post(&server.url("/v1/embeddings"), json!({"input": [notes[0], notes[1]], "model": "anything"}));
    assert_eq!(status, 200, "{oa}");
    assert_eq!(oa["object"], "list");
    assert_eq!(oa["data"][1]["index"], 1);
    assert_eq!(oa["data"][0]["object"], "embedding");
    assert!(oa["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(cosine(&floats(&oa["data"][0]["embedding"]), &cli[0]) >= 0.99999);
    let (_, b64) = post(&server.url("/v1/embeddings"), json!({"input": notes[1], "model": "m", "encoding_format": "base64"}));
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let decoded: Vec<f64> = bytes.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect();
    assert!(cosine(&decoded, &cli[1]) >= 0.99999);

    // /deid: exactly `runtime-cli deid`'s spans and redacted text.
    let (cli_deid, _) = ok(&["deid", notes_arg, "--device", "cpu"]);
    let cli_deid = jsonl(&cli_deid);
    let (status, deid) = post(&server.url("/deid"), json!({"text": notes}));
    assert_eq!(status, 200, "{deid}");
    assert_eq!(deid.as_array().unwrap().len(), cli_deid.len());
    assert!(cli_deid.iter().any(|c| !c["spans"].as_array().unwrap().is_empty()), "the notes have PHI to find");
    for (s, c) in deid.as_array().unwrap().iter().zip(&cli_deid) {
        assert_eq!(s["redacted"], c["redacted"]);
        let key = |v: &Value| v["spans"].as_array().unwrap().iter().map(|x| (x["start"].clone(), x["end"].clone(), x["label"].clone())).collect::<Vec<_>>();
        assert_eq!(key(s), key(c));
    }

    // Surrogates under a kept key: `runtime-cli deid --surrogate-key` gives the same text.
    let (cli_sur, _) = ok(&["deid", notes_arg, "--device", "cpu", "--surrogate-key", key.to_str().unwrap()]);
    let (status, sur) = post(&server.url("/deid"), json!({"text": notes, "surrogate": true}));
    assert_eq!(status, 200, "{sur}");
    assert_eq!(sur.as_array().unwrap().len(), notes.len());
    assert!(sur.as_array().unwrap().iter().zip(deid.as_array().unwrap()).any(|(s, p)| s["redacted"] != p["redacted"]), "surrogates, not placeholders");
    for (s, c) in sur.as_array().unwrap().iter().zip(jsonl(&cli_sur)) {
        assert_eq!(s["redacted"], c["redacted"]);
    }
    // Shifted dates (the documents named by the CLI's ids) and keyed hashes, as the CLI's flags.
    let ids: Vec<String> = jsonl(&std::fs::read_to_string(&notes_path).unwrap()).iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    for (flag, body) in [
        ("--shift-dates", json!({"text": notes, "operator": "shift_dates", "document_ids": ids})),
        ("--hash", json!({"text": notes, "operator": "hash"})),
    ] {
        let (cli_out, _) = ok(&["deid", notes_arg, "--device", "cpu", flag, "--surrogate-key", key.to_str().unwrap()]);
        let (status, served) = post(&server.url("/deid"), body);
        assert_eq!(status, 200, "{served}");
        for (s, c) in served.as_array().unwrap().iter().zip(jsonl(&cli_out)) {
            assert_eq!(s["redacted"], c["redacted"], "{flag}");
        }
    }
    for (body, needle) in [
        (json!({"text": "x", "operator": "scramble"}), "field \"operator\": \"scramble\": expected"),
        (json!({"text": "x", "operator": "hash", "surrogate": true}), "field \"operator\""),
        (json!({"text": ["x", "y"], "operator": "shift_dates", "document_ids": ["a"]}), "field \"document_ids\": 1 ids for 2 texts"),
        (json!({"text": "x", "document_ids": ["a"]}), "field \"document_ids\": only with"),
    ] {
        let (status, err) = post(&server.url("/deid"), body);
        assert_eq!(status, 422, "{err}");
        assert!(err["error"].as_str().unwrap_or_default().contains(needle), "{err}");
    }

    // Presidio /analyze: code-point offsets, Presidio's names, entity filter and threshold.
    let text = "Seen by Dr. José Núñez 😀 on 03/14/2021; call 555-201-7788.";
    let (status, found) = post(&server.url("/analyze"), json!({"text": text, "language": "en"}));
    assert_eq!(status, 200, "{found}");
    let chars: Vec<char> = text.chars().collect();
    let mut names = Vec::new();
    for r in found.as_array().unwrap() {
        let (s, e) = (r["start"].as_u64().unwrap() as usize, r["end"].as_u64().unwrap() as usize);
        let piece: String = chars[s..e].iter().collect();
        names.push((r["entity_type"].as_str().unwrap().to_string(), piece));
        assert!(r.get("analysis_explanation").is_some());
        // What found it: "model", "rule:…", joined with "+".
        let found_by = r["recognition_metadata"]["recognizer_name"].as_str().unwrap();
        assert!(found_by.split('+').all(|p| p == "model" || p == "dictionary" || p == "propagated" || p == "extended" || p.starts_with("rule:")), "{found_by}");
    }
    assert!(names.contains(&("PERSON".into(), "José Núñez".into())), "{names:?}");
    assert!(names.iter().any(|(e, p)| e == "DATE_TIME" && p == "03/14/2021"), "{names:?}");
    let (_, only) = post(&server.url("/analyze"), json!({"text": text, "language": "en", "entities": ["DATE_TIME"], "score_threshold": 0.5}));
    let only = only.as_array().unwrap();
    assert!(!only.is_empty() && only.iter().all(|r| r["entity_type"] == "DATE_TIME" && r["score"].as_f64().unwrap() >= 0.5), "{only:?}");
    let (_, supported) = get(&server.url("/supportedentities?language=en"));
    let supported: Vec<String> = serde_json::from_str(&supported).unwrap();
    for e in ["PERSON", "DATE_TIME", "LOCATION", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_SSN"] {
        assert!(supported.iter().any(|s| s == e), "{supported:?}");
    }

    // /anonymize: replace, redact, mask, hash over code points; items in the output's offsets.
    let text = "Ça va, José? Call 555-201-7788 😀 or mail j@x.org";
    let results = json!([
        {"start": 7, "end": 11, "entity_type": "PERSON", "score": 0.9},
        {"start": 18, "end": 30, "entity_type": "PHONE_NUMBER", "score": 0.9},
        {"start": 41, "end": 48, "entity_type": "EMAIL_ADDRESS", "score": 0.9}
    ]);
    let ops = json!({
        "PERSON": {"type": "replace", "new_value": "<NAME>"},
        "PHONE_NUMBER": {"type": "mask", "masking_char": "*", "chars_to_mask": 4, "from_end": true},
        "EMAIL_ADDRESS": {"type": "redact"}
    });
    let (status, anon) = post(&server.url("/anonymize"), json!({"text": text, "analyzer_results": results, "anonymizers": ops}));
    assert_eq!(status, 200, "{anon}");
    assert_eq!(anon["text"], "Ça va, <NAME>? Call 555-201-**** 😀 or mail ");
    let out: Vec<char> = anon["text"].as_str().unwrap().chars().collect();
    let items = anon["items"].as_array().unwrap();
    // Presidio lists them from the end of the text back, with the operator that made each.
    let ops: Vec<&str> = items.iter().map(|i| i["operator"].as_str().unwrap()).collect();
    assert_eq!(ops, ["redact", "mask", "replace"]);
    for item in items {
        let (s, e) = (item["start"].as_u64().unwrap() as usize, item["end"].as_u64().unwrap() as usize);
        assert_eq!(out[s..e].iter().collect::<String>(), item["text"].as_str().unwrap());
    }
    let salted = json!({"PERSON": {"type": "hash", "hash_type": "sha256", "salt": "0123456789abcdef"}});
    let (_, hashed) = post(
        &server.url("/anonymize"),
        json!({"text": "José", "analyzer_results": [{"start": 0, "end": 4, "entity_type": "PERSON", "score": 1.0}], "anonymizers": salted}),
    );
    // sha256("José" + salt), computed independently by Python's hashlib.
    assert_eq!(hashed["text"], "2b42086e3c1f6e25fb49fc99d842dc3437d9c87064d8e899088d00ef9a862ea1");
    // Presidio's conflict rules: one type apart by spaces merges, by a newline does not; a result
    // inside another goes; `keep` keeps.
    let results = json!([
        {"start": 0, "end": 3, "entity_type": "PERSON", "score": 0.9},
        {"start": 4, "end": 7, "entity_type": "PERSON", "score": 0.9},
        {"start": 8, "end": 11, "entity_type": "PERSON", "score": 0.9},
        {"start": 8, "end": 10, "entity_type": "LOCATION", "score": 0.9},
        {"start": 12, "end": 14, "entity_type": "ID", "score": 0.9}
    ]);
    let (_, merged) = post(&server.url("/anonymize"), json!({"text": "Ann Lee\nBob 42", "analyzer_results": results, "anonymizers": {"ID": {"type": "keep"}}}));
    assert_eq!(merged["text"], "<PERSON>\n<PERSON> 42", "{merged}");
    // Default: replace with <ENTITY_TYPE>.
    let (_, plain) =
        post(&server.url("/anonymize"), json!({"text": "Mr Smith", "analyzer_results": [{"start": 3, "end": 8, "entity_type": "PERSON", "score": 0.8}]}));
    assert_eq!(plain["text"], "Mr <PERSON>");

    // TEI /tokenize: byte offsets, specials at the ends; /info; /health; /metrics.
    let (status, toks) = post(&server.url("/tokenize"), json!({"inputs": "Ça va"}));
    assert_eq!(status, 200, "{toks}");
    let list = toks[0].as_array().unwrap();
    assert_eq!(list[0]["special"], true);
    assert_eq!(list.last().unwrap()["special"], true);
    let (_, info) = get(&server.url("/info"));
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["model_id"], "clinical-small");
    assert!(info["model_type"]["embedding"]["pooling"].is_string());
    assert_eq!(get(&server.url("/health")).0, 200);
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("serve_requests_total{route=\"/embed\",status=\"200\"}"), "{metrics}");
    assert!(metrics.contains("serve_batch_tokens_bucket"), "{metrics}");
    assert!(metrics.contains("serve_compute_tokens_per_second{model=\"clinical-small\"}"), "{metrics}");
    assert!(metrics.contains("serve_queue_documents{model=\"deid-small\"} 0"), "{metrics}");

    // No note text ever reaches the log; every request has its line (the last ones read first).
    assert_eq!(get(&server.url("/health")).0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    let opening: String = notes[0].chars().take(40).collect();
    for secret in ["José", "Núñez", "555-201-7788", opening.as_str()] {
        assert!(!log.contains(secret), "note text in the log:\n{log}");
    }
    assert!(log.contains("route=/embed status=200 documents="), "{log}");
}

#[test]
fn bad_requests_are_refused_with_the_field_named_and_the_server_goes_on() {
    let server = Server::start(&["--max-body-bytes", "4096", "--max-inputs", "3", "--max-input-tokens", "50"]);
    let embed = server.url("/embed");
    let cases: Vec<(&[u8], u16, &str)> = vec![
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "no body"),
        (b"{\"inputs\": \"\xff\xfe\"}", 400, "UTF-8"),
        (b"{\"inputs\": 5}", 422, "inputs"),
        (b"{\"inputs\": [\"a\", 7]}", 422, "item 1"),
        (b"{\"nothing\": 1}", 422, "inputs"),
        (b"{\"inputs\": \"\"}", 400, "empty"),
        (b"{\"inputs\": [\"a\", \"  \"]}", 400, "inputs[1]"),
        (b"{\"inputs\": [\"a\", \"b\", \"c\", \"d\"]}", 413, "--max-inputs"),
        (b"{\"inputs\": \"x\", \"truncation_direction\": \"Up\"}", 422, "truncation_direction"),
    ];
    for (body, status, says) in cases {
        let (s, v, _) = post_raw(&embed, body, &[]);
        assert_eq!(s, status, "{:?} → {v}", String::from_utf8_lossy(body));
        assert!(v["error"].as_str().unwrap().contains(says), "{:?} → {v}", String::from_utf8_lossy(body));
        assert!(v["error_type"].is_string());
    }
    // Too large: the body, and one input's tokens.
    let (s, v, _) = post_raw(&embed, json!({"inputs": "word ".repeat(2000)}).to_string().as_bytes(), &[]);
    assert_eq!(s, 413, "{v}");
    let (s, v) = post(&embed, json!({"inputs": "word ".repeat(200)}));
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--max-input-tokens"), "{v}");
    // OpenAI's error object names the parameter.
    let (s, v) = post(&server.url("/v1/embeddings"), json!({"input": [[1, 2, 3]], "model": "m"}));
    assert_eq!(s, 422);
    assert_eq!(v["error"]["param"], "input");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, v) = post(&server.url("/v1/embeddings"), json!({"input": "x", "model": "m", "encoding_format": "hex"}));
    assert_eq!((s, v["error"]["param"].clone()), (422, json!("encoding_format")));
    // Presidio's routes.
    let (s, v) = post(&server.url("/analyze"), json!({"text": "x"}));
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("language"));
    let (s, v) = post(&server.url("/analyze"), json!({"text": "x", "language": "fr"}));
    assert_eq!(s, 422, "{v}");
    let (s, v) = post(&server.url("/anonymize"), json!({"text": "abc", "analyzer_results": [{"start": 2, "end": 9, "entity_type": "X", "score": 1.0}]}));
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("analyzer_results[0]"), "{v}");
    let (s, v) = post(&server.url("/anonymize"), json!({"text": "abc", "analyzer_results": [], "anonymizers": {"DEFAULT": {"type": "encrypt"}}}));
    assert_eq!(s, 422, "{v}");
    let (s, _) = post(&server.url("/anonymize"), json!({"text": "abc"}));
    assert_eq!(s, 422);
    // Unknown route; a route with no model of its kind.
    let (s, v) = post(&server.url("/nowhere"), json!({}));
    assert_eq!(s, 404, "{v}");
    let (s, v) = post(&server.url("/predict"), json!({"inputs": "x"}));
    assert_eq!(s, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("sequence-classification"), "{v}");
    // A route asked with the wrong method.
    let (s, body) = get(&server.url("/embed"));
    assert_eq!(s, 405, "{body}");
    assert!(body.contains("error"), "{body}");
    // Still healthy, and still answering.
    assert_eq!(get(&server.url("/health")).0, 200);
    assert_eq!(post(&embed, json!({"inputs": "still here"})).0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    assert!(!log.contains("panic"), "{log}");
    assert!(!log.contains("\u{fffe}") && !log.contains("word word"), "request text in the log:\n{log}");
}

#[test]
fn several_models_are_chosen_by_name() {
    let small = repo().join("models/clinical-small");
    let a = format!("a={}", small.display());
    let b = format!("b={}", small.display());
    let server = Server::start(&["--model", &a, "--model", &b]);
    let (s, v) = post(&server.url("/v1/embeddings"), json!({"input": "x", "model": "c"}));
    assert_eq!(s, 404, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("a (embeddings)") && message.contains("b (embeddings)"), "{message}");
    let (s, v) = post(&server.url("/v1/embeddings"), json!({"input": "x", "model": "b"}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "b");
    // Without a token classifier, the de-identification routes say so.
    let (s, v) = post(&server.url("/deid"), json!({"text": "x"}));
    assert_eq!(s, 404, "{v}");
}

/// While a first request waits in the worker (its batch wait holding it), a second one is
/// refused: 429 with Retry-After, the server still healthy, and the first answered.
fn second_request_is_refused(server: &Server) -> Value {
    let url = server.url("/embed");
    let first = {
        let url = url.clone();
        std::thread::spawn(move || post(&url, json!({"inputs": "first"})))
    };
    std::thread::sleep(Duration::from_millis(400));
    let (s, v, retry) = post_raw(&url, json!({"inputs": "second"}).to_string().as_bytes(), &[]);
    assert_eq!((s, retry.is_some()), (429, true), "{v}");
    assert_eq!(get(&server.url("/health")).0, 200, "health answers when the server is full");
    assert_eq!(first.join().unwrap().0, 200);
    v
}

#[test]
fn a_full_queue_answers_429_and_a_late_answer_503() {
    // The queue's one place, then the server's one request at a time.
    let v = second_request_is_refused(&Server::start(&["--max-queue-docs", "1", "--max-batch-wait-ms", "1500", "--timeout-ms", "60000"]));
    assert_eq!(v["error_type"], "Overloaded");
    second_request_is_refused(&Server::start(&["--max-concurrent-requests", "1", "--max-batch-wait-ms", "1500"]));

    let server = Server::start(&["--max-batch-wait-ms", "2000", "--timeout-ms", "300"]);
    let started = Instant::now();
    let (s, v) = post(&server.url("/embed"), json!({"inputs": "late"}));
    assert_eq!(s, 503, "{v}");
    assert!(started.elapsed() < Duration::from_millis(1900), "the deadline was not kept");
    assert_eq!(get(&server.url("/health")).0, 200);
}

#[test]
fn a_client_that_disconnects_has_its_work_dropped() {
    let server = Server::start(&["--max-batch-wait-ms", "1000"]);
    let impatient: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_millis(200))).build().into();
    assert!(impatient.post(&server.url("/embed")).send_json(json!({"inputs": "gone"})).is_err());
    std::thread::sleep(Duration::from_millis(1500));
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(!metrics.contains("serve_batch_documents_count{model=\"clinical-small\"}"), "the abandoned request was computed:\n{metrics}");
    assert_eq!(post(&server.url("/embed"), json!({"inputs": "here"})).0, 200);
    let (_, metrics) = get(&server.url("/metrics"));
    assert!(metrics.contains("serve_batch_documents_count{model=\"clinical-small\"} 1"), "{metrics}");
}

#[test]
fn an_api_key_guards_every_route_but_health() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let server = Server::start(&["--api-key-file", key.to_str().unwrap()]);
    let (s, v, _) = post_raw(&server.url("/embed"), br#"{"inputs": "x"}"#, &[]);
    assert_eq!(s, 401, "{v}");
    let (s, _, _) = post_raw(&server.url("/embed"), br#"{"inputs": "x"}"#, &[("authorization", "Bearer wrong")]);
    assert_eq!(s, 401);
    let (s, _, _) = post_raw(&server.url("/embed"), br#"{"inputs": "x"}"#, &[("authorization", "Bearer s3cret-key")]);
    assert_eq!(s, 200);
    assert_eq!(get(&server.url("/health")).0, 200);
    assert_eq!(get(&server.url("/metrics")).0, 401);
    drop(server);
    // TEI's flag, the key given on the command line.
    let server = Server::start(&["--api-key", "k-on-the-line"]);
    assert_eq!(post_raw(&server.url("/embed"), br#"{"inputs": "x"}"#, &[]).0, 401);
    assert_eq!(post_raw(&server.url("/embed"), br#"{"inputs": "x"}"#, &[("authorization", "Bearer k-on-the-line")]).0, 200);
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_server_gracefully() {
    // A request in flight (held by the batch wait) when SIGTERM comes is still answered.
    let mut server = Server::start(&["--max-batch-wait-ms", "1000"]);
    assert_eq!(post(&server.url("/embed"), json!({"inputs": "x"})).0, 200);
    let in_flight = {
        let url = server.url("/embed");
        std::thread::spawn(move || post(&url, json!({"inputs": "in flight"})))
    };
    std::thread::sleep(Duration::from_millis(300));
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(in_flight.join().unwrap().0, 200);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(server.log().contains("stopped"), "{}", server.log());
}
