//! Reading documents: formats, limits, invalid input refused or skipped with a message naming
//! the file and line.

use std::path::PathBuf;

use runtime::input::*;
use runtime::{Error, Result};

/// The options as a command line gives them: messages name its flags.
fn opts() -> InputOptions {
    let names = SettingNames { format: "--format", text_column: "--text-column", skip_invalid: "--skip-invalid", max_doc_bytes: "--max-doc-bytes" };
    InputOptions { names, ..InputOptions::default() }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("input-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Documents of `bytes` written to a file named `name`.
fn parse(name: &str, bytes: &[u8], opts: &InputOptions) -> Result<Loaded> {
    let d = scratch(&name.replace('.', "_"));
    let p = d.join(name);
    std::fs::write(&p, bytes).unwrap();
    let strip = |m: String| m.replace(&format!("{}/", d.display()), "");
    let out = read_documents(p.to_str().unwrap(), opts)
        .map(|mut l| {
            l.skipped = l.skipped.into_iter().map(strip).collect();
            l
        })
        .map_err(|e| Error::Input(strip(e.to_string())));
    std::fs::remove_dir_all(&d).unwrap();
    out
}

fn docs(l: &Loaded) -> Vec<(&str, &str)> {
    l.documents.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect()
}

#[test]
fn txt_lines_jsonl_csv() {
    let l = parse("a.txt", b"hello\nworld\n", &opts()).unwrap();
    assert_eq!(l.documents, vec![Document { id: "a.txt".into(), text: "hello\nworld\n".into() }]);
    let l = parse("a.txt", b"hello\r\n\nworld", &InputOptions { lines: true, ..opts() }).unwrap();
    assert_eq!(docs(&l), vec![("1", "hello"), ("3", "world")]);
    let l = parse("a.jsonl", b"{\"text\": \"x\", \"id\": 7}\n\n{\"text\": \"y\"}\n", &opts()).unwrap();
    assert_eq!(docs(&l), vec![("7", "x"), ("3", "y")]);
    let csv = b"id,note\nn1,\"first, note\"\nn2,\"multi\nline\"\n";
    let l = parse("a.csv", csv, &InputOptions { text_column: Some("note".into()), id_column: Some("id".into()), ..opts() }).unwrap();
    assert_eq!(docs(&l), vec![("n1", "first, note"), ("n2", "multi\nline")]);
}

#[test]
fn byte_order_marks_are_ignored() {
    let l = parse("b.jsonl", b"\xEF\xBB\xBF{\"text\": \"x\"}\n", &opts()).unwrap();
    assert_eq!(docs(&l), vec![("1", "x")]);
    let l = parse("b.csv", b"\xEF\xBB\xBFnote\nhello\n", &InputOptions { text_column: Some("note".into()), ..opts() }).unwrap();
    assert_eq!(docs(&l), vec![("1", "hello")]);
    let l = parse("b.txt", b"\xEF\xBB\xBFhello", &opts()).unwrap();
    assert_eq!(docs(&l), vec![("b.txt", "hello")]);
}

#[test]
fn errors_name_file_and_line() {
    let bad = b"ok line\nbad \xff line\nok";
    let m = parse("n.txt", bad, &InputOptions { lines: true, ..opts() }).unwrap_err().to_string();
    assert!(m.starts_with("n.txt:2: invalid UTF-8") && m.contains("--skip-invalid"), "{m}");
    let l = parse("n.txt", bad, &InputOptions { lines: true, skip_invalid: true, ..opts() }).unwrap();
    assert_eq!(l.documents.len(), 2);
    assert!(l.skipped[0].starts_with("n.txt:2: invalid UTF-8"));
    let m = parse("n.txt", bad, &opts()).unwrap_err().to_string();
    assert!(m.starts_with("n.txt:2: invalid UTF-8"), "{m}");
    let m = parse("d.jsonl", b"{\"text\": 1}", &opts()).unwrap_err().to_string();
    assert_eq!(m, "d.jsonl:1: field \"text\": expected a string, found a number");
    let m = parse("d.jsonl", b"{\"note\": \"a\"}", &opts()).unwrap_err().to_string();
    assert_eq!(m, "d.jsonl:1: expected a string field \"text\"; the object has the fields \"note\"");
    let m = parse("d.jsonl", b"[1, 2]", &opts()).unwrap_err().to_string();
    assert_eq!(m, "d.jsonl:1: expected a JSON object with a string field \"text\", found an array");
    let m = parse("d.jsonl", b"{\"text\": \"a\"}\nnot json", &opts()).unwrap_err().to_string();
    assert!(m.starts_with("d.jsonl:2: not a JSON object"), "{m}");
    let m = parse("e.txt", b"  \n", &opts()).unwrap_err().to_string();
    assert!(m.contains("e.txt: the input is empty"), "{m}");
    let m = parse("c.csv", b"a,b\n1,2\n", &InputOptions { text_column: Some("note".into()), ..opts() }).unwrap_err().to_string();
    assert_eq!(m, "c.csv: no column \"note\"; the columns are a, b");
    let m = parse("c.csv", b"a,b\n1,2\n", &opts()).unwrap_err().to_string();
    assert!(m.contains("--text-column"), "{m}");
    let m = parse("c.csv", b"a,b\n1,2\n3\n", &InputOptions { text_column: Some("a".into()), ..opts() }).unwrap_err().to_string();
    assert_eq!(m, "c.csv:3: 1 fields where the header has 2");
}

#[test]
fn an_unterminated_csv_quote_is_an_error_not_one_long_document() {
    let csv = b"id,note\n1,fine\n2,\"starts here\n3,and never ends\n4,really\n";
    let m = parse("q.csv", csv, &InputOptions { text_column: Some("note".into()), ..opts() }).unwrap_err().to_string();
    assert!(m.starts_with("q.csv:3: a quoted field opens here and is never closed"), "{m}");
    // Quotes that close, doubled quotes and quotes inside unquoted fields are fine.
    let csv = b"id,note\n1,\"say \"\"hi\"\"\"\n2,5\" tall\n3,\"\"\n";
    let l = parse("q.csv", csv, &InputOptions { text_column: Some("note".into()), id_column: Some("id".into()), ..opts() }).unwrap();
    assert_eq!(docs(&l), vec![("1", "say \"hi\""), ("2", "5\" tall"), ("3", "")]);
}

#[test]
fn documents_over_the_limit_are_refused_with_id_and_size() {
    let o = InputOptions { max_doc_bytes: 10, ..opts() };
    let m = parse("big.txt", &[b'a'; 11], &o).unwrap_err().to_string();
    assert!(m.starts_with("big.txt: the file is 11 bytes, more than --max-doc-bytes 10"), "{m}");
    let m = parse("big.jsonl", b"{\"id\": \"n1\", \"text\": \"short\"}\n{\"id\": \"n2\", \"text\": \"much too long\"}\n", &o).unwrap_err().to_string();
    assert!(m.starts_with("big.jsonl:2: document \"n2\": its text is 13 bytes, more than --max-doc-bytes 10"), "{m}");
    let m = parse("big.txt", b"short\nmuch too long\n", &InputOptions { lines: true, ..o.clone() }).unwrap_err().to_string();
    assert!(m.starts_with("big.txt:2: the line is 13 bytes, more than a document may take with --max-doc-bytes 10"), "{m}");
    let l = parse("big.txt", b"short\nmuch too long\nok\n", &InputOptions { lines: true, skip_invalid: true, ..o.clone() }).unwrap();
    assert_eq!(docs(&l), vec![("1", "short"), ("3", "ok")]);
    let m = parse("big.csv", b"note\nshort\nmuch too long\n", &InputOptions { text_column: Some("note".into()), ..o }).unwrap_err().to_string();
    assert!(m.starts_with("big.csv:3: document \"2\": its text is 13 bytes"), "{m}");
}

#[test]
fn directories_report_what_they_cannot_read() {
    let d = scratch("dir");
    std::fs::write(d.join("a.txt"), "first note").unwrap();
    std::fs::write(d.join("readme.md"), "not a note").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(d.join("gone.txt"), d.join("b.txt")).unwrap();
    let m = read_documents(d.to_str().unwrap(), &opts()).unwrap_err().to_string();
    assert!(m.contains("b.txt: is a symbolic link to") && m.contains("gone.txt, which does not exist; use --skip-invalid"), "{m}");
    let l = read_documents(d.to_str().unwrap(), &InputOptions { skip_invalid: true, ..opts() }).unwrap();
    assert_eq!(docs(&l), vec![("a.txt", "first note")]);
    assert!(l.skipped.iter().any(|s| s.contains("b.txt: is a symbolic link")), "{:?}", l.skipped);
    assert!(l.skipped.iter().any(|s| s.contains("1 entries are not .txt files")), "{:?}", l.skipped);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn chunks_hold_whole_documents_in_order() {
    let d = scratch("chunks");
    let p = d.join("n.jsonl");
    let text: String = (0..10).map(|i| format!("{{\"id\": {i}, \"text\": \"{}\"}}\n", "x".repeat(i + 1))).collect();
    std::fs::write(&p, text).unwrap();
    let mut r = DocumentReader::open(p.to_str().unwrap(), &opts()).unwrap();
    let mut seen = Vec::new();
    while let Some(c) = r.next_chunk(10, 3).unwrap() {
        assert!(c.len() <= 3);
        assert!(c.len() == 1 || c[..c.len() - 1].iter().map(|d| d.text.len()).sum::<usize>() < 10);
        seen.extend(c.into_iter().map(|d| d.id));
    }
    assert_eq!(seen, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(r.fraction_read(), Some(1.0));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn messages_name_the_settings_as_the_caller_does() {
    let bad = b"ok\n\xff\n";
    let m = parse("named.txt", bad, &InputOptions { lines: true, ..InputOptions::default() }).unwrap_err().to_string();
    assert!(m.contains("use skip_invalid to skip it") && !m.contains("--"), "{m}");
    let m = parse("named-big.txt", b"much too long\n", &InputOptions { lines: true, max_doc_bytes: 4, ..InputOptions::default() }).unwrap_err().to_string();
    assert!(m.contains("more than a document may take with max_doc_bytes 4"), "{m}");
}
