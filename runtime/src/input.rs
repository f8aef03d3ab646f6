//! Documents from files: `.txt` (one document, or one per line with `lines`), `.jsonl` (a `text`
//! field and an optional `id`), `.csv` (a named text column), a directory of `.txt` files, or `-`
//! for standard input. Invalid UTF-8 is reported with the file and line, or skipped when asked.

use std::path::Path;

use crate::{Error, Result};

/// One input document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: String,
    pub text: String,
}

/// How to read documents.
#[derive(Clone, Debug, Default)]
pub struct InputOptions {
    /// One document per line of a text file (blank lines are not documents).
    pub lines: bool,
    /// The text column of a CSV file.
    pub text_column: Option<String>,
    /// The id column of a CSV file (default: the row number).
    pub id_column: Option<String>,
    /// Skip documents (lines, rows, files) that are not valid UTF-8 instead of failing.
    pub skip_invalid: bool,
    /// Format of standard input: `txt` (default), `jsonl` or `csv`.
    pub stdin_format: Option<String>,
}

/// Documents read, and what was skipped (with where and why).
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub skipped: Vec<String>,
}

fn io(path: &str, e: std::io::Error) -> Error {
    Error::Io { path: path.to_string(), source: e }
}

/// Line (1-based) and column of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

fn utf8<'a>(name: &str, bytes: &'a [u8], first_line: usize) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = first_line + line_of(bytes, e.valid_up_to()) - 1;
        format!("{name}:{line}: invalid UTF-8 (byte {} of the line is not part of a UTF-8 character)", e.valid_up_to() - bytes[..e.valid_up_to()].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1)
    })
}

impl Loaded {
    fn invalid(&mut self, message: String, opts: &InputOptions) -> Result<()> {
        if opts.skip_invalid {
            self.skipped.push(message);
            Ok(())
        } else {
            Err(Error::Input(format!("{message}; use --skip-invalid to skip it")))
        }
    }
}

/// Read documents from `path` (`-` for standard input).
pub fn read_documents(path: &str, opts: &InputOptions) -> Result<Loaded> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(|e| io("<stdin>", e))?;
        let format = opts.stdin_format.as_deref().unwrap_or("txt");
        return parse(format, "<stdin>", &bytes, opts);
    }
    let p = Path::new(path);
    if p.is_dir() {
        return read_dir(p, opts);
    }
    let bytes = std::fs::read(p).map_err(|e| io(path, e))?;
    let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("jsonl") | Some("ndjson") => "jsonl",
        Some("csv") => "csv",
        _ => "txt",
    };
    parse(format, path, &bytes, opts)
}

fn parse(format: &str, name: &str, bytes: &[u8], opts: &InputOptions) -> Result<Loaded> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::Input(format!("{name}: the input is empty: there is no text to process")));
    }
    let loaded = match format {
        "txt" if opts.lines => parse_lines(name, bytes, opts)?,
        "txt" => {
            let mut l = Loaded::default();
            match utf8(name, bytes, 1) {
                Ok(text) => l.documents.push(Document { id: file_id(name), text: text.to_string() }),
                Err(m) => l.invalid(m, opts)?,
            }
            l
        }
        "jsonl" => parse_jsonl(name, bytes, opts)?,
        "csv" => parse_csv(name, bytes, opts)?,
        other => return Err(Error::Input(format!("--format {other}: expected txt, jsonl or csv"))),
    };
    if loaded.documents.is_empty() {
        return Err(Error::Input(format!("{name}: no document could be read ({} skipped)", loaded.skipped.len())));
    }
    Ok(loaded)
}

fn file_id(name: &str) -> String {
    Path::new(name).file_name().map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned())
}

fn split_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes.split(|&b| b == b'\n').enumerate().map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
}

fn parse_lines(name: &str, bytes: &[u8], opts: &InputOptions) -> Result<Loaded> {
    let mut l = Loaded::default();
    for (n, line) in split_lines(bytes) {
        match utf8(name, line, n) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => l.documents.push(Document { id: n.to_string(), text: text.to_string() }),
            Err(m) => l.invalid(m, opts)?,
        }
    }
    Ok(l)
}

fn parse_jsonl(name: &str, bytes: &[u8], opts: &InputOptions) -> Result<Loaded> {
    let mut l = Loaded::default();
    for (n, line) in split_lines(bytes) {
        let text = match utf8(name, line, n) {
            Ok(t) => t,
            Err(m) => {
                l.invalid(m, opts)?;
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Input(format!("{name}:{n}: not a JSON object ({e})")))?;
        let body = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| Error::Input(format!("{name}:{n}: expected a string field \"text\"")))?;
        let id = match v.get("id") {
            None | Some(serde_json::Value::Null) => n.to_string(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(x)) => x.to_string(),
            Some(other) => return Err(Error::Input(format!("{name}:{n}: field \"id\": expected a string or a number, found {other}"))),
        };
        l.documents.push(Document { id, text: body.to_string() });
    }
    Ok(l)
}

fn parse_csv(name: &str, bytes: &[u8], opts: &InputOptions) -> Result<Loaded> {
    let mut documents = Vec::new();
    let skipped = stream_csv(name, bytes, opts, |d| {
        documents.push(d);
        Ok(())
    })?;
    Ok(Loaded { documents, skipped })
}

/// The documents of a CSV stream (a header row, then records), handed to `f` one row at a time
/// so that a file of any size is read in constant memory. Returns what was skipped.
pub fn stream_csv<R: std::io::Read>(name: &str, reader: R, opts: &InputOptions, mut f: impl FnMut(Document) -> Result<()>) -> Result<Vec<String>> {
    let column = opts.text_column.as_deref().ok_or_else(|| Error::Input(format!("{name}: a CSV input needs --text-column NAME")))?;
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(reader);
    let headers = reader.byte_headers().map_err(|e| Error::Input(format!("{name}: cannot read the CSV header ({e})")))?.clone();
    let find = |col: &str| -> Result<usize> {
        headers.iter().position(|h| h == col.as_bytes()).ok_or_else(|| {
            let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
            Error::Input(format!("{name}: no column \"{col}\"; the columns are {}", names.join(", ")))
        })
    };
    let text_idx = find(column)?;
    let id_idx = opts.id_column.as_deref().map(find).transpose()?;
    let mut skipped = Loaded::default();
    let mut record = csv::ByteRecord::new();
    let mut row = 0usize;
    while reader.read_byte_record(&mut record).map_err(|e| Error::Input(format!("{name}: {e}")))? {
        let line = record.position().map_or(row + 2, |p| p.line() as usize);
        let field = |i: usize| record.get(i).unwrap_or_default();
        match (utf8(name, field(text_idx), line), id_idx.map(|i| utf8(name, field(i), line)).transpose()) {
            (Ok(text), Ok(id)) => f(Document { id: id.map_or_else(|| (row + 1).to_string(), str::to_string), text: text.to_string() })?,
            (Err(m), _) | (_, Err(m)) => skipped.invalid(m, opts)?,
        }
        row += 1;
    }
    Ok(skipped.skipped)
}

fn read_dir(dir: &Path, opts: &InputOptions) -> Result<Loaded> {
    let shown = dir.display().to_string();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(&shown, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!("{shown}: no .txt files in this directory")));
    }
    let mut l = Loaded::default();
    for f in files {
        let name = f.display().to_string();
        let bytes = std::fs::read(&f).map_err(|e| io(&name, e))?;
        match utf8(&name, &bytes, 1) {
            Ok(text) if text.trim().is_empty() => l.skipped.push(format!("{name}: empty file")),
            Ok(text) => l.documents.push(Document { id: file_id(&name), text: text.to_string() }),
            Err(m) => l.invalid(m, opts)?,
        }
    }
    if l.documents.is_empty() {
        return Err(Error::Input(format!("{shown}: no document could be read ({} skipped)", l.skipped.len())));
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> InputOptions {
        InputOptions::default()
    }

    #[test]
    fn txt_lines_jsonl_csv() {
        let l = parse("txt", "a.txt", b"hello\nworld\n", &opts()).unwrap();
        assert_eq!(l.documents, vec![Document { id: "a.txt".into(), text: "hello\nworld\n".into() }]);
        let l = parse("txt", "a.txt", b"hello\r\n\nworld", &InputOptions { lines: true, ..opts() }).unwrap();
        assert_eq!(l.documents.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect::<Vec<_>>(), vec![("1", "hello"), ("3", "world")]);
        let l = parse("jsonl", "a.jsonl", b"{\"text\": \"x\", \"id\": 7}\n\n{\"text\": \"y\"}\n", &opts()).unwrap();
        assert_eq!(l.documents.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect::<Vec<_>>(), vec![("7", "x"), ("3", "y")]);
        let csv = b"id,note\nn1,\"first, note\"\nn2,\"multi\nline\"\n";
        let l = parse("csv", "a.csv", csv, &InputOptions { text_column: Some("note".into()), id_column: Some("id".into()), ..opts() }).unwrap();
        assert_eq!(l.documents.iter().map(|d| (d.id.as_str(), d.text.as_str())).collect::<Vec<_>>(), vec![("n1", "first, note"), ("n2", "multi\nline")]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let bad = b"ok line\nbad \xff line\nok";
        let m = parse("txt", "n.txt", bad, &InputOptions { lines: true, ..opts() }).unwrap_err().to_string();
        assert!(m.starts_with("n.txt:2: invalid UTF-8") && m.contains("--skip-invalid"), "{m}");
        let l = parse("txt", "n.txt", bad, &InputOptions { lines: true, skip_invalid: true, ..opts() }).unwrap();
        assert_eq!(l.documents.len(), 2);
        assert!(l.skipped[0].starts_with("n.txt:2: invalid UTF-8"));
        let m = parse("txt", "n.txt", bad, &opts()).unwrap_err().to_string();
        assert!(m.starts_with("n.txt:2: invalid UTF-8"), "{m}");
        let m = parse("jsonl", "d.jsonl", b"{\"text\": 1}", &opts()).unwrap_err().to_string();
        assert_eq!(m, "d.jsonl:1: expected a string field \"text\"");
        let m = parse("jsonl", "d.jsonl", b"{\"text\": \"a\"}\nnot json", &opts()).unwrap_err().to_string();
        assert!(m.starts_with("d.jsonl:2: not a JSON object"), "{m}");
        let m = parse("txt", "e.txt", b"  \n", &opts()).unwrap_err().to_string();
        assert!(m.contains("e.txt: the input is empty"), "{m}");
        let m = parse("csv", "c.csv", b"a,b\n1,2\n", &InputOptions { text_column: Some("note".into()), ..opts() }).unwrap_err().to_string();
        assert_eq!(m, "c.csv: no column \"note\"; the columns are a, b");
        let m = parse("csv", "c.csv", b"a,b\n1,2\n", &opts()).unwrap_err().to_string();
        assert!(m.contains("--text-column"), "{m}");
    }
}
