//! `runtime-cli merge`: the outputs of a sharded run, assembled in input order into one output.
//!
//! Each shard's output has its `FILE.shard.json` (written by `parts.rs` when the shard finished):
//! the run it belongs to, its shard `k/N` and the number of documents in the input. Merge refuses
//! unless every file belongs to the same run, every shard is given exactly once, and each holds
//! exactly its documents; document `i` of the input is then the next record of shard `i mod N`.
//! JSONL shards are copied line by line (byte for byte); `.npy` and `.safetensors` shards are
//! read a row at a time and written in any embedding format. Nothing is held whole in memory
//! but the ids, and the output appears only when complete.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use super::Outcome;
use crate::parts::{read_shard_record, shard_file, Chunk, Final, Kind, Records, ShardRecord};
use crate::shard::Shard;
use crate::Failure;

/// Records per chunk handed to the writer.
const CHUNK: usize = 4096;

enum Source {
    Lines(std::io::Lines<BufReader<File>>),
    Rows { data: BufReader<File>, ids: std::vec::IntoIter<String>, cols: usize },
}

/// One shard's output, read a record at a time.
struct ShardFile {
    path: PathBuf,
    shard: Shard,
    source: Source,
    read: usize,
}

enum Record {
    Line(String),
    Row(String, Vec<f32>),
}

fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure(format!("{}: {e}", path.display()))
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// The shape of the `.npy` files `runtime-cli embed` writes (little-endian f32, C order), and
/// the file positioned at its data.
fn open_npy(path: &Path) -> Result<(BufReader<File>, usize, usize), Failure> {
    let bad = |why: &str| Failure(format!("{}: not an embedding matrix of runtime-cli ({why})", path.display()));
    let mut f = BufReader::new(File::open(path).map_err(|e| io(path, e))?);
    let mut start = [0u8; 10];
    f.read_exact(&mut start).map_err(|_| bad("too short"))?;
    if &start[..6] != b"\x93NUMPY" || start[6] != 1 {
        return Err(bad("not a .npy file of format 1.0"));
    }
    let len = u16::from_le_bytes([start[8], start[9]]) as usize;
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).map_err(|_| bad("a cut header"))?;
    let header = String::from_utf8(header).map_err(|_| bad("a header that is not text"))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad("not little-endian f32 in C order"));
    }
    let shape = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> =
        shape.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect::<Result<_, _>>().map_err(|_| bad("an unreadable shape"))?;
    let [rows, cols] = dims[..] else { return Err(bad("not a matrix")) };
    let size = f.get_ref().metadata().map_err(|e| io(path, e))?.len();
    let data = rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).map(|n| n as u64 + 10 + len as u64);
    if data != Some(size) {
        return Err(bad("a size that is not its shape's"));
    }
    Ok((f, rows, cols))
}

fn open_safetensors(path: &Path) -> Result<(BufReader<File>, Vec<String>, usize), Failure> {
    let bad = |why: String| Failure(format!("{}: not an embedding file of runtime-cli ({why})", path.display()));
    let mut f = BufReader::new(File::open(path).map_err(|e| io(path, e))?);
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad("too short".into()))?;
    let n = u64::from_le_bytes(n);
    if n > 1 << 32 {
        return Err(bad(format!("a header of {n} bytes")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|_| bad("a cut header".into()))?;
    #[derive(serde::Deserialize)]
    struct Tensor {
        dtype: String,
        shape: Vec<usize>,
        data_offsets: [u64; 2],
    }
    #[derive(serde::Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: std::collections::HashMap<String, String>,
        embeddings: Tensor,
    }
    let h: Header = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let t = h.embeddings;
    let [rows, cols] = t.shape[..] else { return Err(bad("embeddings that are not a matrix".into())) };
    let bytes = rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).map(|n| n as u64);
    if t.dtype != "F32" || t.data_offsets[1].checked_sub(t.data_offsets[0]) != bytes {
        return Err(bad("embeddings that are not f32 of their shape".into()));
    }
    let ids: Vec<String> = h.metadata.get("ids").and_then(|s| serde_json::from_str(s).ok()).ok_or_else(|| bad("no ids in the metadata".into()))?;
    if ids.len() != rows {
        return Err(bad(format!("{} ids for {rows} rows", ids.len())));
    }
    f.seek(std::io::SeekFrom::Start((8 + n).saturating_add(t.data_offsets[0]))).map_err(|e| io(path, e))?;
    Ok((f, ids, cols))
}

impl ShardFile {
    fn open(path: &Path, record: &ShardRecord) -> Result<ShardFile, Failure> {
        let source = match extension(path).as_str() {
            "npy" => {
                let (data, rows, cols) = open_npy(path)?;
                let ids_path = PathBuf::from(format!("{}.ids.json", path.display()));
                let text = std::fs::read(&ids_path).map_err(|e| io(&ids_path, e))?;
                let ids: Vec<String> = serde_json::from_slice(&text).map_err(|e| Failure(format!("{}: not a list of ids ({e})", ids_path.display())))?;
                if ids.len() != rows {
                    return Err(Failure(format!("{}: {} ids for the {rows} rows of {}", ids_path.display(), ids.len(), path.display())));
                }
                Source::Rows { data, ids: ids.into_iter(), cols }
            }
            "safetensors" => {
                let (data, ids, cols) = open_safetensors(path)?;
                Source::Rows { data, ids: ids.into_iter(), cols }
            }
            _ => Source::Lines(BufReader::new(File::open(path).map_err(|e| io(path, e))?).lines()),
        };
        Ok(ShardFile { path: path.to_path_buf(), shard: Shard { index: record.shard, count: record.shards }, source, read: 0 })
    }

    fn next(&mut self) -> Result<Option<Record>, Failure> {
        let record = match &mut self.source {
            Source::Lines(lines) => match lines.next() {
                None => None,
                Some(line) => {
                    let line = line.map_err(|e| io(&self.path, e))?;
                    #[derive(serde::Deserialize)]
                    struct Id {
                        #[allow(dead_code)]
                        id: String,
                    }
                    if serde_json::from_str::<Id>(&line).is_err() {
                        return Err(Failure(format!("{}: line {} is not a JSON object with an \"id\"", self.path.display(), self.read + 1)));
                    }
                    Some(Record::Line(line))
                }
            },
            Source::Rows { data, ids, cols } => match ids.next() {
                None => None,
                Some(id) => {
                    let mut bytes = vec![0u8; *cols * 4];
                    data.read_exact(&mut bytes).map_err(|e| io(&self.path, e))?;
                    Some(Record::Row(id, bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
                }
            },
        };
        self.read += usize::from(record.is_some());
        Ok(record)
    }
}

/// The documents of shard `s` of an input of `documents`, as the start of a list for messages.
fn indices(s: Shard, documents: usize) -> String {
    let mut shown: Vec<String> = (s.index..documents).step_by(s.count).take(4).map(|i| i.to_string()).collect();
    if s.share_of(documents) > 4 {
        shown.push("…".into());
    }
    format!("documents {} of the input ({} in all)", shown.join(", "), s.share_of(documents))
}

pub fn merge(output: &Path, shards: &[PathBuf]) -> Outcome {
    // The files and what each holds.
    let mut records: Vec<(PathBuf, ShardRecord)> = Vec::new();
    for path in shards {
        let rp = shard_file(path);
        if !path.is_file() {
            return Err(Failure(format!("{}: no such file", path.display())));
        }
        if !rp.is_file() {
            return Err(Failure(format!(
                "{}: no {} beside it: not the output of a finished shard (a shard stopped before the end has only its .parts directory: rerun its command to finish it)",
                path.display(),
                rp.display()
            )));
        }
        // A shard file beside a run in progress belongs to an earlier run of that output.
        let manifest = crate::parts::parts_dir(path).join("manifest.json");
        if manifest.exists() {
            return Err(Failure(format!(
                "{}: a run of this shard has not finished ({} is there): rerun its command to finish it",
                path.display(),
                manifest.display()
            )));
        }
        records.push((path.clone(), read_shard_record(&rp)?));
    }
    let (first_path, first) = &records[0];
    for (path, r) in &records[1..] {
        let why = if r.identity != first.identity {
            Some(match (&r.identity.command, &first.identity.command) {
                (a, b) if a != b => format!("one is of `{a}`, the other of `{b}`"),
                _ if r.identity.input != first.identity.input => format!(
                    "different inputs ({} and {})",
                    r.identity.input.get("path").map_or("?".into(), |v| v.to_string()),
                    first.identity.input.get("path").map_or("?".into(), |v| v.to_string())
                ),
                _ => "runs with different models or settings".into(),
            })
        } else if r.shards != first.shards {
            Some(format!("{} shards and {} shards", r.shards, first.shards))
        } else if r.documents != first.documents || !r.kind.same_as(&first.kind) {
            Some("different runs".into())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Failure(format!("{} and {} are not shards of the same run: {why}", first_path.display(), path.display())));
        }
    }
    let (count, documents) = (first.shards, first.documents);
    let mut by_shard: Vec<Option<&PathBuf>> = vec![None; count];
    let mut problems = Vec::new();
    for (path, r) in &records {
        match by_shard[r.shard] {
            Some(other) => problems.push(format!("shard {}/{count} is in both {} and {}", r.shard, other.display(), path.display())),
            None => by_shard[r.shard] = Some(path),
        }
    }
    for (k, p) in by_shard.iter().enumerate() {
        if p.is_none() {
            problems.push(format!("no file holds shard {k}/{count}: {}", indices(Shard { index: k, count }, documents)));
        }
    }
    if !problems.is_empty() {
        return Err(Failure(format!("cannot merge: every document must be present exactly once\n  {}", problems.join("\n  "))));
    }
    // Formats: JSONL shards are copied as lines; matrices are read as rows.
    let rows = extension(first_path) == "npy" || extension(first_path) == "safetensors";
    for (path, _) in &records {
        let r = extension(path) == "npy" || extension(path) == "safetensors";
        if r != rows {
            return Err(Failure(format!(
                "{} and {} are in different formats (JSONL and a matrix): merge outputs written the same way",
                first_path.display(),
                path.display()
            )));
        }
    }
    let kind = match (&first.kind, rows) {
        (Kind::Embeddings { metadata }, true) => Kind::Embeddings { metadata: metadata.clone() },
        (_, false) => {
            if matches!(extension(output).as_str(), "npy" | "safetensors") {
                return Err(Failure(format!("-o {}: JSONL shards merge into JSONL (the format their run wrote)", output.display())));
            }
            Kind::Lines
        }
        (Kind::Lines, true) => return Err(Failure(format!("{}: a matrix file, but its run wrote JSON lines", first_path.display()))),
    };
    for (path, _) in &records {
        if runtime::input::same_file(output, path) {
            return Err(Failure(format!("-o {}: this is one of the shards; write the merged output to another file", output.display())));
        }
    }
    crate::output::check_output(output, None)?;
    let mut files: Vec<ShardFile> = Vec::with_capacity(count);
    for p in by_shard.into_iter().flatten() {
        let (_, r) = records.iter().find(|(q, _)| q == p).expect("listed above");
        files.push(ShardFile::open(p, r)?);
    }
    let mut out = Final::open(&kind, Some(output))?;
    let short = |f: &ShardFile| {
        Failure(format!(
            "{} ends after {} documents, but shard {} of an input of {documents} documents holds {}: the file is cut or was changed; run that shard again",
            f.path.display(),
            f.read,
            f.shard,
            f.shard.share_of(documents)
        ))
    };
    let mut pending: Vec<Record> = Vec::with_capacity(CHUNK);
    let flush = |pending: &mut Vec<Record>, out: &mut Final| -> Result<(), Failure> {
        if pending.is_empty() {
            return Ok(());
        }
        let chunk = if rows {
            let mut ids = Vec::with_capacity(pending.len());
            let mut values = Vec::new();
            let mut cols = 0;
            for r in pending.drain(..) {
                if let Record::Row(id, v) = r {
                    cols = v.len();
                    ids.push(id);
                    values.extend(v);
                }
            }
            Chunk { ids, records: Records::Rows { cols, values } }
        } else {
            let lines: Vec<String> = pending.drain(..).filter_map(|r| if let Record::Line(l) = r { Some(l) } else { None }).collect();
            Chunk { ids: vec![String::new(); lines.len()], records: Records::Lines(lines) }
        };
        out.put(&chunk)
    };
    for i in 0..documents {
        let f = &mut files[i % count];
        let record = f.next()?.ok_or_else(|| short(f))?;
        if let (Record::Row(_, v), Some(Record::Row(_, w))) = (&record, pending.first()) {
            if v.len() != w.len() {
                return Err(Failure(format!("{}: embeddings of {} values; the other shards' have {}", f.path.display(), v.len(), w.len())));
            }
        }
        pending.push(record);
        if pending.len() == CHUNK {
            flush(&mut pending, &mut out)?;
        }
    }
    flush(&mut pending, &mut out)?;
    for f in &mut files {
        if f.next()?.is_some() {
            return Err(Failure(format!(
                "{} holds more than the {} documents of shard {} of an input of {documents}: the file was changed; run that shard again",
                f.path.display(),
                f.shard.share_of(documents),
                f.shard
            )));
        }
    }
    out.finish()?;
    eprintln!("merged {documents} documents from {count} shards into {}", output.display());
    Ok(true)
}
