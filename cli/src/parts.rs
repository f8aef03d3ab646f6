//! Results in the output's format, written directly or as resumable parts.
//!
//! A command hands each chunk of documents' results to an [`Out`]. Unsharded, they stream into
//! the output file as before. Sharded (`--shard`, a Slurm array, a Kubernetes Indexed Job), each
//! chunk becomes an fsync'd part file in `OUT.parts/`, and `OUT.parts/manifest.json` (replaced
//! atomically after its part is safe) records the chunks that are done. The same command rerun
//! after a crash or `kill -9` at any moment reads the manifest, skips the chunks it lists
//! without computing them, and redoes at most the chunk that was in flight. Chunks are formed
//! from the input the same way on every run, so the finished output is byte-identical to an
//! uninterrupted run's. At the end the parts are assembled into `OUT` through the same writers
//! an unsharded run uses, `OUT.shard.json` records which shard of which input and run it holds
//! (what `runtime-cli merge` checks), and the parts are removed. A rerun of a shard that is
//! complete does nothing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::output::{AtomicFile, EmbeddingWriter, Sink};
use crate::shard::Shard;
use crate::Failure;

/// The results of one chunk of documents, as the output holds them.
pub enum Records {
    /// One JSON line per document (deid, classify).
    Lines(Vec<String>),
    /// One embedding per document, `cols` values each, row after row.
    Rows { cols: usize, values: Vec<f32> },
}

pub struct Chunk {
    pub ids: Vec<String>,
    pub records: Records,
}

impl Chunk {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// What an output holds: JSON lines, or embeddings in the format the file name asks for
/// (`.npy`, `.safetensors`, else JSONL) with metadata (model, pooling, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Lines,
    Embeddings { metadata: Vec<(String, String)> },
}

impl Kind {
    /// The same kind of output for resuming and merging: embeddings' metadata may name the model
    /// folder as each command line spelled it (the identity holds its absolute path).
    pub fn same_as(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Lines, Kind::Lines) => true,
            (Kind::Embeddings { metadata: a }, Kind::Embeddings { metadata: b }) => {
                let strip = |m: &[(String, String)]| m.iter().filter(|(k, _)| k != "model").cloned().collect::<Vec<_>>();
                strip(a) == strip(b)
            }
            _ => false,
        }
    }
}

/// The writer of a finished output.
pub enum Final {
    Lines(Sink),
    Embeddings(EmbeddingWriter),
}

impl Final {
    pub fn open(kind: &Kind, path: Option<&Path>) -> Result<Final, Failure> {
        Ok(match kind {
            Kind::Lines => Final::Lines(Sink::open(path)?),
            Kind::Embeddings { metadata } => {
                let meta: Vec<(&str, String)> = metadata.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                Final::Embeddings(EmbeddingWriter::create(path, &meta)?)
            }
        })
    }

    pub fn put(&mut self, chunk: &Chunk) -> Result<(), Failure> {
        match (self, &chunk.records) {
            (Final::Lines(sink), Records::Lines(lines)) => {
                for l in lines {
                    sink.line(l)?;
                }
            }
            (Final::Embeddings(w), Records::Rows { cols, values }) => {
                let rows: Vec<Vec<f32>> = values.chunks(*cols.max(&1)).map(<[f32]>::to_vec).collect();
                w.write(&chunk.ids, &rows)?;
            }
            _ => return Err(Failure("internal error: records of another kind than the output".into())),
        }
        Ok(())
    }

    pub fn finish(self) -> Result<(), Failure> {
        match self {
            Final::Lines(s) => s.finish()?,
            Final::Embeddings(w) => w.finish()?,
        }
        Ok(())
    }
}

/// `OUT.parts`: where a sharded run keeps its parts and manifest.
pub fn parts_dir(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}.parts", output.display()))
}

/// `OUT.shard.json`: which shard of which input and run a finished sharded output holds.
pub fn shard_file(output: &Path) -> PathBuf {
    PathBuf::from(format!("{}.shard.json", output.display()))
}

const VERSION: u32 = 1;

/// What identifies a run: the command and every setting that changes its results, the model and
/// the input. A manifest or shard file made under another identity is not this run's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub command: String,
    /// The model folder (its absolute path) and the settings that change results.
    pub settings: serde_json::Map<String, Value>,
    /// The input: its absolute path, size in bytes and modification time.
    pub input: serde_json::Map<String, Value>,
}

impl Identity {
    /// The first field in which `self` (what is on disk) differs from `now`, for messages.
    fn difference(&self, now: &Identity) -> Option<String> {
        if self.command != now.command {
            return Some(format!("the command was {}, not {}", self.command, now.command));
        }
        for (what, a, b) in [("input", &self.input, &now.input), ("setting", &self.settings, &now.settings)] {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k), b.get(k));
                if x != y {
                    let show = |v: Option<&Value>| v.map_or("(none)".to_string(), Value::to_string);
                    return Some(format!("the {what} {k} was {}, now {}", show(x), show(y)));
                }
            }
        }
        None
    }
}

/// The input's identity: absolute path, size, modification time (standard input has none, and
/// cannot be sharded).
pub fn input_identity(input: &str) -> Result<serde_json::Map<String, Value>, Failure> {
    let path = Path::new(input);
    let abs = std::fs::canonicalize(path).map_err(|e| Failure(format!("{input}: {e}")))?;
    let meta = std::fs::metadata(&abs).map_err(|e| Failure(format!("{input}: {e}")))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let mut m = serde_json::Map::new();
    m.insert("path".into(), Value::String(abs.display().to_string()));
    m.insert("bytes".into(), Value::from(if meta.is_dir() { 0 } else { meta.len() }));
    m.insert("modified_ns".into(), Value::String(modified.to_string()));
    Ok(m)
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    identity: Identity,
    shard: (usize, usize),
    kind: Kind,
    /// Chunks of this shard's documents done, in order: chunk `c` is in `parts[c]` (a chunk is
    /// made of documents, so none is empty).
    parts: Vec<Part>,
    /// Set once the whole input was read: how many documents it holds (every shard's).
    documents: Option<usize>,
}

#[derive(Serialize, Deserialize)]
struct Part {
    file: String,
    documents: usize,
    bytes: u64,
}

/// What a finished shard's `OUT.shard.json` holds.
#[derive(Clone, Serialize, Deserialize)]
pub struct ShardRecord {
    pub version: u32,
    pub identity: Identity,
    pub shard: usize,
    pub shards: usize,
    /// Documents in the whole input (every shard's); this shard holds those whose index `i`
    /// has `i mod shards == shard`, in input order.
    pub documents: usize,
    pub kind: Kind,
}

fn io(path: &Path, e: std::io::Error) -> Failure {
    Failure(format!("{}: {e}", path.display()))
}

/// Make a directory's entries (a rename, a new file) survive a crash.
fn sync_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Write `bytes` to `path` durably and atomically: a temporary file, fsync, rename, fsync of the
/// directory.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(dir)
}

/// A part file: a JSON header line (`ids`, `cols` for embeddings), then the records (JSON lines,
/// or little-endian f32 rows).
fn encode_part(chunk: &Chunk) -> Vec<u8> {
    let cols = match &chunk.records {
        Records::Rows { cols, .. } => Some(*cols),
        Records::Lines(_) => None,
    };
    let mut out = serde_json::to_vec(&serde_json::json!({"ids": chunk.ids, "cols": cols})).expect("strings serialise");
    out.push(b'\n');
    match &chunk.records {
        Records::Lines(lines) => {
            for l in lines {
                out.extend_from_slice(l.as_bytes());
                out.push(b'\n');
            }
        }
        Records::Rows { values, .. } => {
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

fn decode_part(path: &Path, bytes: &[u8]) -> Result<Chunk, Failure> {
    let bad = |what: &str| {
        Failure(format!("{}: a damaged part ({what}); remove {} to start this shard over", path.display(), path.parent().unwrap_or(path).display()))
    };
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no header line"))?;
    #[derive(Deserialize)]
    struct Header {
        ids: Vec<String>,
        cols: Option<usize>,
    }
    let h: Header = serde_json::from_slice(&bytes[..nl]).map_err(|_| bad("unreadable header"))?;
    let body = &bytes[nl + 1..];
    let records = match h.cols {
        None => {
            let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
            if !text.is_empty() && !text.ends_with('\n') {
                return Err(bad("a cut last line"));
            }
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() != h.ids.len() {
                return Err(bad("the line count is not the id count"));
            }
            Records::Lines(lines)
        }
        Some(cols) => {
            if body.len() != h.ids.len() * cols * 4 {
                return Err(bad("the data size is not ids × cols"));
            }
            Records::Rows { cols, values: body.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect() }
        }
    };
    Ok(Chunk { ids: h.ids, records })
}

/// Where a command's results go.
pub enum Out {
    Direct(Final),
    Parted(Parted),
}

/// The state of a sharded, resumable run.
pub struct Parted {
    output: PathBuf,
    dir: PathBuf,
    manifest: Manifest,
}

/// What opening a sharded output found.
pub enum Opened {
    /// Work to do: skip the first `done` chunks (already in parts).
    Run(Out, usize),
    /// The shard's output is complete from an earlier run of the same command.
    Complete,
}

impl Out {
    /// Open the output. `shard` makes it parted and resumable (it then needs a file); the parts
    /// of an earlier run of the same command are taken up, those of another run refused.
    pub fn open(kind: Kind, output: Option<&Path>, shard: Option<(Shard, Identity)>) -> Result<Opened, Failure> {
        let Some((shard, identity)) = shard else {
            return Ok(Opened::Run(Out::Direct(Final::open(&kind, output)?), 0));
        };
        let output = match output {
            Some(p) if p.as_os_str() != "-" => p.to_path_buf(),
            _ => {
                return Err(Failure(format!(
                    "a sharded run (shard {shard}) needs -o FILE: its parts and manifest are kept beside the file, so that a rerun resumes"
                )))
            }
        };
        let dir = parts_dir(&output);
        let record_path = shard_file(&output);
        let manifest_path = dir.join("manifest.json");
        // Finished before: the shard file and the output are there, for this same run, and no
        // manifest (removed first when a run completes; leftover parts are removed now).
        if record_path.exists() && output.exists() && !manifest_path.exists() {
            let record = read_shard_record(&record_path)?;
            if record.identity == identity && record.shard == shard.index && record.shards == shard.count && record.kind.same_as(&kind) {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
                }
                return Ok(Opened::Complete);
            }
        }
        let manifest = if manifest_path.exists() {
            let text = std::fs::read(&manifest_path).map_err(|e| io(&manifest_path, e))?;
            let m: Manifest = serde_json::from_slice(&text).map_err(|e| {
                Failure(format!("{}: not a manifest this version can read ({e}); remove {} to start this shard over", manifest_path.display(), dir.display()))
            })?;
            let mismatch = if m.version != VERSION {
                Some(format!("it is of format {}, this program writes {VERSION}", m.version))
            } else if let Some(d) = m.identity.difference(&identity) {
                Some(d)
            } else if m.shard != (shard.index, shard.count) {
                Some(format!("it holds shard {}/{}, not {shard}", m.shard.0, m.shard.1))
            } else if !m.kind.same_as(&kind) {
                Some("its output format differs".into())
            } else {
                None
            };
            if let Some(why) = mismatch {
                return Err(Failure(format!(
                    "{} holds the parts of another run ({why}); rerun that command to finish it, or remove {} to start over",
                    dir.display(),
                    dir.display()
                )));
            }
            for p in &m.parts {
                let path = dir.join(&p.file);
                let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(u64::MAX);
                if len != p.bytes {
                    return Err(Failure(format!(
                        "{}: missing or of the wrong size (the manifest says {} bytes); remove {} to start this shard over",
                        path.display(),
                        p.bytes,
                        dir.display()
                    )));
                }
            }
            eprintln!("shard {shard}: resuming from {} ({} chunks done)", dir.display(), m.parts.len());
            m
        } else {
            // Check the output like an unsharded run would, before any work.
            crate::output::check_output(&output, None)?;
            // An earlier run's shard file must not stand beside this run's output, whatever
            // happens before this run finishes (merge would take the pair for one shard).
            if record_path.exists() {
                std::fs::remove_file(&record_path).map_err(|e| io(&record_path, e))?;
            }
            std::fs::create_dir_all(&dir).map_err(|e| Failure(format!("{}: cannot create the parts directory ({e})", dir.display())))?;
            let m = Manifest { version: VERSION, identity, shard: (shard.index, shard.count), kind, parts: Vec::new(), documents: None };
            write_durably(&manifest_path, &serde_json::to_vec_pretty(&m).expect("serialises"))?;
            if let Some(parent) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            m
        };
        let done = manifest.parts.len();
        Ok(Opened::Run(Out::Parted(Parted { output, dir, manifest }), done))
    }

    /// Check that chunk `c`, skipped because an earlier run finished it, holds the documents its
    /// part holds (an input edited between the runs would shift the chunks).
    pub fn check_skipped(&self, c: usize, ids: &[String]) -> Result<(), Failure> {
        let Out::Parted(p) = self else { return Ok(()) };
        let Some(part) = p.manifest.parts.get(c) else { return Ok(()) };
        let path = p.dir.join(&part.file);
        let mut header = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::open(&path).map_err(|e| io(&path, e))?), &mut header)
            .map_err(|e| io(&path, e))?;
        #[derive(Deserialize)]
        struct Ids {
            ids: Vec<String>,
        }
        let held: Ids = serde_json::from_str(&header)
            .map_err(|_| Failure(format!("{}: a damaged part; remove {} to start this shard over", path.display(), p.dir.display())))?;
        if held.ids != ids {
            return Err(Failure(format!(
                "{}: chunk {c} of the input no longer holds the documents an earlier run finished (the input changed since); remove {} to start this shard over",
                path.display(),
                p.dir.display()
            )));
        }
        Ok(())
    }

    /// The results of the next chunk.
    pub fn put(&mut self, chunk: Chunk) -> Result<(), Failure> {
        match self {
            Out::Direct(f) => f.put(&chunk),
            Out::Parted(p) => p.put(chunk),
        }
    }

    /// Complete the output; `documents` is how many the whole input holds.
    pub fn finish(self, documents: usize) -> Result<(), Failure> {
        match self {
            Out::Direct(f) => f.finish(),
            Out::Parted(p) => p.finish(documents),
        }
    }
}

impl Parted {
    fn save_manifest(&self) -> Result<(), Failure> {
        write_durably(&self.dir.join("manifest.json"), &serde_json::to_vec_pretty(&self.manifest).expect("serialises"))
    }

    fn put(&mut self, chunk: Chunk) -> Result<(), Failure> {
        let file = format!("part-{:08}", self.manifest.parts.len());
        let bytes = encode_part(&chunk);
        // The part first: the manifest never names a part that is not safely on disk.
        write_durably(&self.dir.join(&file), &bytes)?;
        self.manifest.parts.push(Part { file, documents: chunk.len(), bytes: bytes.len() as u64 });
        self.save_manifest()
    }

    fn finish(mut self, documents: usize) -> Result<(), Failure> {
        self.manifest.documents = Some(documents);
        self.save_manifest()?;
        let mut out = Final::open(&self.manifest.kind, Some(&self.output))?;
        for p in &self.manifest.parts {
            let path = self.dir.join(&p.file);
            let mut bytes = Vec::new();
            std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| io(&path, e))?;
            out.put(&decode_part(&path, &bytes)?)?;
        }
        out.finish()?;
        let (shard, shards) = self.manifest.shard;
        let record = ShardRecord { version: VERSION, identity: self.manifest.identity.clone(), shard, shards, documents, kind: self.manifest.kind.clone() };
        let record_path = shard_file(&self.output);
        let mut f = AtomicFile::create(&record_path)?;
        f.write_all(&serde_json::to_vec_pretty(&record).expect("serialises")).map_err(|e| io(&record_path, e))?;
        f.commit()?;
        // The manifest goes first: without it the shard is complete, whatever else is left.
        let manifest_path = self.dir.join("manifest.json");
        std::fs::remove_file(&manifest_path).map_err(|e| io(&manifest_path, e))?;
        sync_dir(&self.dir)?;
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| Failure(format!("{}: the output is complete but its parts could not be removed ({e})", self.dir.display())))?;
        Ok(())
    }
}

pub fn read_shard_record(path: &Path) -> Result<ShardRecord, Failure> {
    let text = std::fs::read(path).map_err(|e| io(path, e))?;
    let r: ShardRecord = serde_json::from_slice(&text).map_err(|e| Failure(format!("{}: not a shard file of runtime-cli ({e})", path.display())))?;
    if r.version != VERSION {
        return Err(Failure(format!("{}: shard file format {}; this program reads {VERSION}", path.display(), r.version)));
    }
    if r.shards == 0 || r.shards > crate::shard::MAX_SHARDS || r.shard >= r.shards {
        return Err(Failure(format!("{}: shard {} of {} does not exist", path.display(), r.shard, r.shards)));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let dir = std::env::temp_dir().join(format!("parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = Chunk { ids: vec!["a".into(), "b".into()], records: Records::Lines(vec!["{\"id\":\"a\"}".into(), "{\"id\":\"b\"}".into()]) };
        let rows = Chunk { ids: vec!["a".into(), "b".into()], records: Records::Rows { cols: 3, values: vec![1.0, -2.5, 3.0, 0.1, f32::MIN_POSITIVE, 7.0] } };
        for c in [lines, rows] {
            let p = dir.join("part");
            let bytes = encode_part(&c);
            let back = decode_part(&p, &bytes).ok().unwrap();
            assert_eq!(back.ids, c.ids);
            assert_eq!(encode_part(&back), bytes);
            assert!(decode_part(&p, &bytes[..bytes.len() - 1]).is_err(), "a cut part is refused");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn identity_differences_are_named() {
        let mut settings = serde_json::Map::new();
        settings.insert("threshold".into(), Value::from(0.3));
        let a = Identity { command: "deid".into(), settings: settings.clone(), input: serde_json::Map::new() };
        let mut b = a.clone();
        assert_eq!(a.difference(&b), None);
        b.settings.insert("threshold".into(), Value::from(0.5));
        assert_eq!(a.difference(&b).unwrap(), "the setting threshold was 0.3, now 0.5");
    }
}
