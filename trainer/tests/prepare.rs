//! `prepare` streams every input format into the same shards: a CSV of several read blocks
//! (quoted fields with commas and newlines) gives byte-identical shards to the same notes as JSONL.

use std::path::{Path, PathBuf};

use trainer::data::{prepare, PrepareOptions};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn shard_bytes(dir: &Path, info: &trainer::data::DatasetInfo) -> Vec<Vec<u8>> {
    let files = info.train.iter().chain(&info.eval).flat_map(|s| [format!("{}.u16", s.file), format!("{}.idx", s.file)]);
    files.map(|f| std::fs::read(dir.join(f)).unwrap()).collect()
}

#[test]
fn csv_streams_to_the_same_shards_as_jsonl() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = runtime::tokenize::Tokenizer::from_dir(&root().join("tests/fixtures/tiny-modernbert-mlm")).unwrap();
    let notes: Vec<String> = (0..2500)
        .map(|i| format!("Patient {i} seen in clinic, BP {}/{} mmHg.\nPlan: follow up in {} weeks, \"as needed\".", 100 + i % 40, 60 + i % 25, 1 + i % 6))
        .collect();
    let mut csv = String::from("id,note\n");
    let mut jsonl = String::new();
    for (i, n) in notes.iter().enumerate() {
        csv.push_str(&format!("{i},\"{}\"\n", n.replace('"', "\"\"")));
        jsonl.push_str(&serde_json::json!({ "id": i, "text": n }).to_string());
        jsonl.push('\n');
    }
    std::fs::write(tmp.path().join("notes.csv"), csv).unwrap();
    std::fs::write(tmp.path().join("notes.jsonl"), jsonl).unwrap();
    let opts = PrepareOptions { max_seq_len: 32, eval_fraction: 0.1, text_column: Some("note".into()), ..Default::default() };
    let (a, b) = (tmp.path().join("from-csv"), tmp.path().join("from-jsonl"));
    let from_csv = prepare(&tok, &[tmp.path().join("notes.csv")], &a, &opts).unwrap();
    let from_jsonl = prepare(&tok, &[tmp.path().join("notes.jsonl")], &b, &opts).unwrap();
    assert_eq!(from_csv.documents, 2500);
    assert_eq!((from_csv.documents, from_csv.eval_documents), (from_jsonl.documents, from_jsonl.eval_documents));
    assert!(from_csv.train.iter().map(|s| s.tokens).sum::<u64>() > 2500 * 20, "every note tokenized");
    assert_eq!(shard_bytes(&a, &from_csv), shard_bytes(&b, &from_jsonl));

    // A bad row names the file and its line.
    std::fs::write(tmp.path().join("bad.csv"), "id,note\n1,ok\n2,\"too\",many\n").unwrap();
    let e = prepare(&tok, &[tmp.path().join("bad.csv")], &tmp.path().join("bad"), &opts).unwrap_err().to_string();
    assert!(e.contains("bad.csv:3: 3 fields where the header has 2"), "{e}");
}
