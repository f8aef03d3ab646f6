//! Documents from files, read as a stream: `.txt` (one document, or one per line with `lines`),
//! `.jsonl` (a `text` field and an optional `id`), `.csv` (a named text column), a directory of
//! `.txt` files, or `-` for standard input. Memory depends on the chunk being processed, never on
//! the size of the file: lines, rows and files are read one at a time, and no document larger
//! than `max_doc_bytes` is ever held (it is refused with its id and size, or skipped when asked).
//! Invalid UTF-8, an unterminated CSV quote, a dangling link or a FIFO in a directory is reported
//! with the file and line, or skipped when asked; a UTF-8 byte-order mark is ignored.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::files::open_regular;
use crate::files::UTF8_BOM;
use crate::{Error, Result};

/// One input document.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub id: String,
    pub text: String,
}

/// The default `max_doc_bytes`: 8 MiB of text, some 2,000 pages, far beyond any single note;
/// a document up to it is windowed and processed in bounded memory.
pub const DEFAULT_MAX_DOC_BYTES: usize = 8 << 20;

/// How to read documents.
#[derive(Clone, Debug)]
pub struct InputOptions {
    /// One document per line of a text file (blank lines are not documents).
    pub lines: bool,
    /// The text column of a CSV file.
    pub text_column: Option<String>,
    /// The id column of a CSV file (default: the row number).
    pub id_column: Option<String>,
    /// Skip documents (lines, rows, files) that are not valid UTF-8, too large, or not readable
    /// files, instead of failing.
    pub skip_invalid: bool,
    /// Format of standard input: `txt` (default), `jsonl` or `csv`.
    pub stdin_format: Option<String>,
    /// The largest document, in bytes of UTF-8 text.
    pub max_doc_bytes: usize,
    /// How the caller names these settings to its users, for the messages that say which one to
    /// change (a command line gives its flags).
    pub names: SettingNames,
}

/// The names under which a caller exposes the input settings.
#[derive(Clone, Copy, Debug)]
pub struct SettingNames {
    pub format: &'static str,
    pub text_column: &'static str,
    pub skip_invalid: &'static str,
    pub max_doc_bytes: &'static str,
}

impl Default for SettingNames {
    /// The fields' own names.
    fn default() -> Self {
        SettingNames { format: "stdin_format", text_column: "text_column", skip_invalid: "skip_invalid", max_doc_bytes: "max_doc_bytes" }
    }
}

impl InputOptions {
    fn limit(&self) -> Limit {
        Limit { bytes: self.max_doc_bytes, name: self.names.max_doc_bytes }
    }
}

/// The document size limit, shown with its setting's name.
#[derive(Clone, Copy, Debug)]
struct Limit {
    bytes: usize,
    name: &'static str,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.bytes)
    }
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions { lines: false, text_column: None, id_column: None, skip_invalid: false, stdin_format: None, max_doc_bytes: DEFAULT_MAX_DOC_BYTES, names: SettingNames::default() }
    }
}

/// Every document of an input at once, and what was skipped (with where and why): for inputs
/// known to be small (tests, the trainer's single-document files). Tools stream with
/// [`DocumentReader`].
#[derive(Debug, Default)]
pub struct Loaded {
    pub documents: Vec<Document>,
    pub skipped: Vec<String>,
}

/// Read every document of `path` (`-` for standard input).
pub fn read_documents(path: &str, opts: &InputOptions) -> Result<Loaded> {
    let mut reader = DocumentReader::open(path, opts)?;
    let mut documents = Vec::new();
    while let Some(chunk) = reader.next_chunk(usize::MAX, usize::MAX)? {
        documents.extend(chunk);
    }
    Ok(Loaded { documents, skipped: reader.take_messages() })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Txt,
    Lines,
    Jsonl,
    Csv,
}

impl Format {
    fn named(name: &str, opts: &InputOptions) -> Result<Self> {
        Ok(match name {
            "txt" if opts.lines => Format::Lines,
            "txt" => Format::Txt,
            "jsonl" => Format::Jsonl,
            "csv" => Format::Csv,
            other => return Err(Error::Input(format!("{} {other}: expected txt, jsonl or csv", opts.names.format))),
        })
    }
}

/// A reader that counts what it hands on, and for CSV follows the quoting (to catch a quote
/// that is never closed) and refuses a record larger than its budget.
struct Tracked<R> {
    inner: R,
    counters: Rc<Counters>,
    /// The most a CSV record may take.
    budget: u64,
    /// Follow CSV quoting (CSV inputs only).
    track_quotes: bool,
}

/// Where an RFC 4180 reader is (the csv crate's default dialect: `,`, `"`, `""` escapes).
#[derive(Clone, Copy, Debug)]
struct QuoteState {
    line: u64,
    field_start: bool,
    in_quote: bool,
    /// A `"` seen inside a quoted field: the end of the field, or the first half of `""`.
    after_quote: bool,
    /// The line where the open quoted field started.
    opened_at: u64,
}

impl Default for QuoteState {
    /// The start of the input: line 1, a field about to start.
    fn default() -> Self {
        QuoteState { line: 1, field_start: true, in_quote: false, after_quote: false, opened_at: 0 }
    }
}

impl QuoteState {
    fn step(&mut self, b: u8) {
        if self.in_quote {
            if self.after_quote {
                self.after_quote = false;
                if b == b'"' {
                    return self.count_line(b);
                }
                self.in_quote = false;
            } else {
                if b == b'"' {
                    self.after_quote = true;
                }
                return self.count_line(b);
            }
        }
        match b {
            b'"' if self.field_start => {
                self.in_quote = true;
                self.opened_at = self.line;
                self.field_start = false;
            }
            b',' | b'\n' | b'\r' => self.field_start = true,
            _ => self.field_start = false,
        }
        self.count_line(b);
    }
    fn count_line(&mut self, b: u8) {
        if b == b'\n' {
            self.line += 1;
        }
    }
    /// True when the input ended inside a quoted field.
    fn unterminated(&self) -> bool {
        self.in_quote && !self.after_quote
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let c = &self.counters;
        c.consumed.set(c.consumed.get() + n as u64);
        let since = c.since_record.get() + n as u64;
        c.since_record.set(since);
        if since > self.budget {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "record too large"));
        }
        if self.track_quotes {
            let mut q = c.quotes.get();
            for &b in &buf[..n] {
                q.step(b);
            }
            c.quotes.set(q);
        }
        Ok(n)
    }
}

/// A byte-order mark at the start of a stream is dropped.
fn skip_bom(reader: &mut dyn BufRead) -> std::io::Result<()> {
    if reader.fill_buf()?.starts_with(UTF8_BOM) {
        reader.consume(UTF8_BOM.len());
    }
    Ok(())
}

enum Source {
    /// Text, lines and JSONL.
    Stream(Box<dyn BufRead>),
    Csv { reader: csv::Reader<Box<dyn Read>>, text_idx: usize, id_idx: Option<usize>, row: usize },
    /// The `.txt` files of a directory still to read.
    Dir(VecDeque<PathBuf>),
    Done,
}

/// Documents read one at a time and handed out in chunks.
pub struct DocumentReader {
    name: String,
    format: Format,
    opts: InputOptions,
    source: Source,
    line: usize,
    produced: usize,
    skipped: usize,
    messages: Vec<String>,
    counters: Rc<Counters>,
    total: Option<u64>,
}

/// What the reader under the buffers has seen (shared with its `Tracked` stream).
#[derive(Default)]
struct Counters {
    /// Bytes read from the input.
    consumed: Cell<u64>,
    /// Bytes read since the last CSV record began.
    since_record: Cell<u64>,
    /// Where a CSV input's quoting stands.
    quotes: Cell<QuoteState>,
}

fn io(path: &str, e: std::io::Error) -> Error {
    Error::Io { path: path.to_string(), source: e }
}

/// The longest JSONL line a document of `max` bytes can take (JSON escapes, the id and other
/// fields).
fn jsonl_line_limit(max: usize) -> usize {
    max.saturating_mul(2).saturating_add(1 << 16)
}

/// Why a document cannot be used, to be reported or (when asked) skipped.
struct Invalid(String);

impl DocumentReader {
    /// Open `path` (`-`: standard input, in `opts.stdin_format`). Nothing is read yet beyond
    /// what tells the format apart (a CSV header, a directory's listing).
    pub fn open(path: &str, opts: &InputOptions) -> Result<Self> {
        let (name, format, raw, total): (String, Format, Box<dyn Read>, Option<u64>) = if path == "-" {
            let format = Format::named(opts.stdin_format.as_deref().unwrap_or("txt"), opts)?;
            ("<stdin>".to_string(), format, Box::new(std::io::stdin()), None)
        } else {
            let p = Path::new(path);
            if !crate::files::present(p) {
                return Err(Error::Input(format!("{path}: no such file or directory")));
            }
            if p.is_dir() {
                let (files, messages) = list_dir(p)?;
                let mut reader = DocumentReader::new(path.to_string(), Format::Txt, opts, Source::Dir(files), Rc::default(), None);
                reader.messages = messages;
                return Ok(reader);
            }
            let file = open_regular(p)?;
            let size = file.metadata().map_err(|e| io(path, e))?.len();
            let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
            let format = match ext.as_deref() {
                Some("jsonl") | Some("ndjson") => Format::Jsonl,
                Some("csv") => Format::Csv,
                _ if opts.lines => Format::Lines,
                _ => Format::Txt,
            };
            if format == Format::Txt && size > opts.max_doc_bytes as u64 {
                return Err(too_large(path, size, opts.limit(), "the file"));
            }
            (path.to_string(), format, Box::new(file), Some(size))
        };
        Self::stream(name, format, raw, opts, total)
    }

    /// Documents from any stream (a request body, a pipe) in `format` (`txt`, `jsonl` or `csv`;
    /// `txt` with `opts.lines` for one document per line); `name` names it in messages.
    pub fn from_reader(name: &str, format: &str, reader: Box<dyn Read>, opts: &InputOptions) -> Result<Self> {
        let format = Format::named(format, opts)?;
        Self::stream(name.to_string(), format, reader, opts, None)
    }

    fn stream(name: String, format: Format, raw: Box<dyn Read>, opts: &InputOptions, total: Option<u64>) -> Result<Self> {
        let counters = Rc::<Counters>::default();
        // A CSV record may take what a JSONL line may, and the read-ahead of the buffers.
        let budget = match format {
            Format::Csv => jsonl_line_limit(opts.max_doc_bytes).saturating_add(1 << 20) as u64,
            _ => u64::MAX,
        };
        let tracked: Box<dyn Read> = Box::new(Tracked { inner: raw, counters: counters.clone(), budget, track_quotes: format == Format::Csv });
        let mut buffered: Box<dyn BufRead> = Box::new(BufReader::with_capacity(64 << 10, tracked));
        skip_bom(&mut *buffered).map_err(|e| io(&name, e))?;
        let source = if format == Format::Csv {
            let column = opts.text_column.as_deref().ok_or_else(|| Error::Input(format!("{name}: a CSV input needs {} NAME", opts.names.text_column)))?;
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(Box::new(buffered) as Box<dyn Read>);
            let headers = reader.byte_headers().map_err(|e| Error::Input(format!("{name}: cannot read the CSV header ({e})")))?.clone();
            counters.since_record.set(0);
            let find = |col: &str| -> Result<usize> {
                headers.iter().position(|h| h == col.as_bytes()).ok_or_else(|| {
                    let names: Vec<String> = headers.iter().map(|h| String::from_utf8_lossy(h).into_owned()).collect();
                    Error::Input(format!("{name}: no column \"{col}\"; the columns are {}", names.join(", ")))
                })
            };
            let text_idx = find(column)?;
            let id_idx = opts.id_column.as_deref().map(find).transpose()?;
            Source::Csv { reader, text_idx, id_idx, row: 0 }
        } else {
            Source::Stream(buffered)
        };
        Ok(DocumentReader::new(name, format, opts, source, counters, total))
    }

    fn new(name: String, format: Format, opts: &InputOptions, source: Source, counters: Rc<Counters>, total: Option<u64>) -> Self {
        DocumentReader { name, format, opts: opts.clone(), source, line: 0, produced: 0, skipped: 0, messages: Vec::new(), counters, total }
    }

    /// Messages about skipped documents and ignored entries since the last call.
    pub fn take_messages(&mut self) -> Vec<String> {
        std::mem::take(&mut self.messages)
    }

    /// How far through the input, when its size is known (0 to 1).
    pub fn fraction_read(&self) -> Option<f64> {
        self.total.filter(|&t| t > 0).map(|t| (self.counters.consumed.get() as f64 / t as f64).min(1.0))
    }

    /// The next documents, up to `max_docs` of them and about `max_bytes` of text (a document is
    /// never split: one larger than `max_bytes` comes alone); `None` at the end.
    pub fn next_chunk(&mut self, max_bytes: usize, max_docs: usize) -> Result<Option<Vec<Document>>> {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        while chunk.len() < max_docs && bytes < max_bytes {
            match self.next_document()? {
                Some(d) => {
                    bytes += d.text.len();
                    chunk.push(d);
                }
                None => break,
            }
        }
        Ok(if chunk.is_empty() { None } else { Some(chunk) })
    }

    fn invalid(&mut self, Invalid(message): Invalid) -> Result<()> {
        if self.opts.skip_invalid {
            self.skipped += 1;
            self.messages.push(message);
            Ok(())
        } else {
            Err(Error::Input(format!("{message}; use {} to skip it", self.opts.names.skip_invalid)))
        }
    }

    /// The next document, `None` at the end (an input that held none is an error).
    pub fn next_document(&mut self) -> Result<Option<Document>> {
        loop {
            let item = match self.read_one()? {
                Step::Document(d) => d,
                Step::Invalid(m) => {
                    self.invalid(m)?;
                    continue;
                }
                Step::Nothing => continue,
                Step::End => {
                    self.source = Source::Done;
                    if self.produced == 0 {
                        let what = if self.skipped > 0 { format!("no document could be read ({} skipped)", self.skipped) } else { "the input is empty: there is no text to process".to_string() };
                        self.produced = usize::MAX; // report once
                        return Err(Error::Input(format!("{}: {what}", self.name)));
                    }
                    return Ok(None);
                }
            };
            self.produced += 1;
            return Ok(Some(item));
        }
    }

    fn read_one(&mut self) -> Result<Step> {
        let max = self.opts.limit();
        let name = self.name.clone();
        match &mut self.source {
            Source::Done => Ok(Step::End),
            Source::Dir(files) => {
                let Some(f) = files.pop_front() else { return Ok(Step::End) };
                let shown = f.display().to_string();
                let file = match open_regular(&f) {
                    Ok(file) => file,
                    Err(e) => return Ok(Step::Invalid(Invalid(e.to_string()))),
                };
                let size = file.metadata().map_err(|e| io(&shown, e))?.len();
                if size > max.bytes as u64 {
                    return Ok(Step::Invalid(Invalid(too_large(&shown, size, max, "the file").to_string())));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                file.take(max.bytes as u64 + 1).read_to_end(&mut bytes).map_err(|e| io(&shown, e))?;
                let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes);
                match utf8(&shown, bytes, 1) {
                    Ok(text) if text.trim().is_empty() => {
                        self.messages.push(format!("{shown}: empty file"));
                        Ok(Step::Nothing)
                    }
                    Ok(text) => Ok(Step::Document(Document { id: file_id(&shown), text: text.to_string() })),
                    Err(m) => Ok(Step::Invalid(m)),
                }
            }
            Source::Stream(reader) => match self.format {
                Format::Txt => {
                    let mut bytes = Vec::new();
                    (&mut **reader).take(max.bytes as u64 + 1).read_to_end(&mut bytes).map_err(|e| io(&name, e))?;
                    self.source = Source::Done;
                    if bytes.len() > max.bytes {
                        return Err(too_large_stream(&name, max));
                    }
                    match utf8(&name, &bytes, 1) {
                        Ok(text) if text.trim().is_empty() => Ok(Step::End),
                        Ok(text) => Ok(Step::Document(Document { id: file_id(&name), text: text.to_string() })),
                        Err(m) => Ok(Step::Invalid(m)),
                    }
                }
                Format::Lines | Format::Jsonl => {
                    let limit = if self.format == Format::Jsonl { jsonl_line_limit(max.bytes) } else { max.bytes };
                    let mut buf = Vec::new();
                    let Some((read, full)) = read_line_bounded(&mut **reader, &mut buf, limit).map_err(|e| io(&name, e))? else {
                        return Ok(Step::End);
                    };
                    self.line += 1;
                    let n = self.line;
                    if !full {
                        let what = if self.format == Format::Jsonl { "a JSONL line" } else { "a document" };
                        return Ok(Step::Invalid(Invalid(format!("{name}:{n}: the line is {read} bytes, more than {what} may take with {max}"))));
                    }
                    let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let text = match utf8(&name, line, n) {
                        Ok(t) => t,
                        Err(m) => return Ok(Step::Invalid(m)),
                    };
                    if text.trim().is_empty() {
                        return Ok(Step::Nothing);
                    }
                    if self.format == Format::Lines {
                        return Ok(Step::Document(Document { id: n.to_string(), text: text.to_string() }));
                    }
                    jsonl_document(&name, n, text, max).map(Step::Document)
                }
                Format::Csv => unreachable!("CSV has its own source"),
            },
            Source::Csv { reader, text_idx, id_idx, row } => {
                let mut record = csv::ByteRecord::new();
                self.counters.since_record.set(0);
                let more = match reader.read_byte_record(&mut record) {
                    Ok(more) => more,
                    Err(e) => {
                        let line = e.position().map_or(*row + 2, |p| p.line() as usize);
                        let message = match e.kind() {
                            csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::InvalidData && io.to_string() == "record too large" => {
                                format!("{name}: the record after line {line} is larger than a document may take with {max} (an unclosed quote can make the rest of a file one field)")
                            }
                            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                                format!("{name}:{line}: {len} fields where the header has {expected_len}")
                            }
                            _ => format!("{name}:{line}: {e}"),
                        };
                        return Err(Error::Input(message));
                    }
                };
                if !more {
                    let q = self.counters.quotes.get();
                    if q.unterminated() {
                        return Err(Error::Input(format!(
                            "{name}:{}: a quoted field opens here and is never closed: the rest of the file would be read as one field (close the quote, or double a quote inside a field as \"\")",
                            q.opened_at
                        )));
                    }
                    return Ok(Step::End);
                }
                *row += 1;
                let line = record.position().map_or(*row + 1, |p| p.line() as usize);
                let field = |i: usize| record.get(i).unwrap_or_default();
                let text = match utf8(&name, field(*text_idx), line) {
                    Ok(t) => t,
                    Err(m) => return Ok(Step::Invalid(m)),
                };
                let id = match id_idx.map(|i| utf8(&name, field(i), line)).transpose() {
                    Ok(id) => id.map_or_else(|| row.to_string(), str::to_string),
                    Err(m) => return Ok(Step::Invalid(m)),
                };
                if text.len() > max.bytes {
                    return Ok(Step::Invalid(Invalid(too_large(&format!("{name}:{line}: document \"{id}\""), text.len() as u64, max, "its text").to_string())));
                }
                Ok(Step::Document(Document { id, text: text.to_string() }))
            }
        }
    }
}

enum Step {
    Document(Document),
    Invalid(Invalid),
    /// A blank line or an empty file: not a document, not an error.
    Nothing,
    End,
}

fn too_large(what: &str, size: u64, max: Limit, whose: &str) -> Error {
    Error::Input(format!("{what}: {whose} is {size} bytes, more than {max}; raise the limit to process it (it is windowed like any long document), or split it"))
}

fn too_large_stream(name: &str, max: Limit) -> Error {
    Error::Input(format!("{name}: the document is more than {max} bytes; raise the limit to process it (it is windowed like any long document), or split it"))
}

/// Read one line into `buf` (with its `\n`), keeping it only if its length without the newline
/// is at most `limit`: returns that length and whether it fit, `None` at the end of the input. A
/// longer line is read to its end without being kept.
fn read_line_bounded(reader: &mut dyn BufRead, buf: &mut Vec<u8>, limit: usize) -> std::io::Result<Option<(usize, bool)>> {
    let mut total = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((total > 0).then_some((total, total <= limit)));
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if total + take <= limit.saturating_add(1) {
            buf.extend_from_slice(&available[..take]);
        } else {
            buf.clear();
        }
        total += take;
        reader.consume(take);
        if done {
            return Ok(Some((total - 1, total - 1 <= limit)));
        }
    }
}

fn jsonl_document(name: &str, n: usize, text: &str, max: Limit) -> Result<Document> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Input(format!("{name}:{n}: not a JSON object ({e})")))?;
    let obj = v.as_object().ok_or_else(|| Error::Input(format!("{name}:{n}: expected a JSON object with a string field \"text\", found {}", json_kind(&v))))?;
    let id = match obj.get("id") {
        None | Some(serde_json::Value::Null) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(x)) => x.to_string(),
        Some(other) => return Err(Error::Input(format!("{name}:{n}: field \"id\": expected a string or a number, found {}", json_kind(other)))),
    };
    let body = match obj.get("text") {
        Some(serde_json::Value::String(s)) => s,
        None => return Err(Error::Input(format!("{name}:{n}: expected a string field \"text\"; the object has {}", field_list(obj)))),
        Some(other) => return Err(Error::Input(format!("{name}:{n}: field \"text\": expected a string, found {}", json_kind(other)))),
    };
    if body.len() > max.bytes {
        return Err(too_large(&format!("{name}:{n}: document \"{id}\""), body.len() as u64, max, "its text"));
    }
    Ok(Document { id, text: body.clone() })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn field_list(obj: &serde_json::Map<String, serde_json::Value>) -> String {
    if obj.is_empty() {
        return "no fields".into();
    }
    let names: Vec<String> = obj.keys().take(8).map(|k| format!("\"{k}\"")).collect();
    format!("the fields {}{}", names.join(", "), if obj.len() > 8 { ", …" } else { "" })
}

/// The `.txt` entries of a directory, sorted, and a message about what else is there.
fn list_dir(dir: &Path) -> Result<(VecDeque<PathBuf>, Vec<String>)> {
    let shown = dir.display().to_string();
    let mut files = Vec::new();
    let mut ignored = 0usize;
    for entry in std::fs::read_dir(dir).map_err(|e| io(&shown, e))? {
        let entry = entry.map_err(|e| io(&shown, e))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
            files.push(p);
        } else {
            ignored += 1;
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!("{shown}: no .txt files in this directory")));
    }
    let mut messages = Vec::new();
    if ignored > 0 {
        messages.push(format!("{shown}: {ignored} entries are not .txt files and were not read"));
    }
    Ok((files.into(), messages))
}

fn file_id(name: &str) -> String {
    Path::new(name).file_name().map_or_else(|| name.to_string(), |f| f.to_string_lossy().into_owned())
}

/// Line (1-based) of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}

fn utf8<'a>(name: &str, bytes: &'a [u8], first_line: usize) -> std::result::Result<&'a str, Invalid> {
    std::str::from_utf8(bytes).map_err(|e| {
        let line = first_line + line_of(bytes, e.valid_up_to()) - 1;
        let column = e.valid_up_to() - bytes[..e.valid_up_to()].iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
        Invalid(format!("{name}:{line}: invalid UTF-8 (byte {column} of the line is not part of a UTF-8 character)"))
    })
}

/// Whether `path` names a file that is also `other` (the same file under another name, or the
/// same path): an output must never overwrite its input.
pub fn same_file(path: &Path, other: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(path), std::fs::metadata(other)) {
            return a.dev() == b.dev() && a.ino() == b.ino();
        }
    }
    match (std::fs::canonicalize(path), std::fs::canonicalize(other)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
