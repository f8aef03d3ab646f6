//! Pretraining data: text tokenized once into binary shards of uint16 token ids, then streamed
//! back as unpadded batches under a token budget.
//!
//! A prepared dataset is a directory:
//!   `dataset.json`         what was tokenized, with which tokenizer, the shards and their sizes
//!   `train-00000.u16` …    sequences back to back, little-endian u16 token ids
//!   `train-00000.idx` …    u64 little-endian offsets (in tokens) of every sequence, plus the end
//!   `eval-00000.*`         the held-out split, same format
//! Every sequence is `[CLS] … [SEP]` of at most `max_seq_len` tokens: each document is cut into
//! chunks, and the first token of a continuation chunk is re-encoded with a leading space (as
//! BioClinical ModernBERT's preparation does). Documents go to the eval split by a hash of their
//! position, so the split is stable across runs.
//!
//! Reading never loads more than one shard: an epoch visits the shards in a seeded random order
//! and each shard's sequences in a seeded random order, so the loader's whole state is four
//! integers (`LoaderState`) and a resumed run reads exactly what an uninterrupted one would.

use std::io::Write;
use std::path::{Path, PathBuf};

use runtime::init::Rng;
use runtime::tokenize::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io { path: path.display().to_string(), source: e }
}

/// One shard on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardInfo {
    pub file: String,
    pub sequences: u64,
    pub tokens: u64,
}

/// `dataset.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatasetInfo {
    pub format: String,
    pub max_seq_len: usize,
    pub vocab_size: usize,
    pub tokenizer: String,
    pub inputs: Vec<String>,
    pub documents: u64,
    pub eval_documents: u64,
    pub train: Vec<ShardInfo>,
    pub eval: Vec<ShardInfo>,
}

const FORMAT: &str = "modernbert-u16-v1";

/// How to prepare a dataset.
#[derive(Clone, Debug)]
pub struct PrepareOptions {
    pub max_seq_len: usize,
    /// Fraction of documents held out for evaluation (0 for none).
    pub eval_fraction: f64,
    /// Tokens per shard (a shard is closed at the first sequence boundary after this).
    pub shard_tokens: usize,
    /// For `.csv` inputs: the text column.
    pub text_column: Option<String>,
    /// A `.txt` file holds one document per line.
    pub lines: bool,
    /// Files whose documents all go to the eval split (a held-out file made apart), in
    /// addition to the `eval_fraction` of `inputs`.
    pub eval_inputs: Vec<PathBuf>,
    /// How the caller names the input settings (its flags), for messages.
    pub input_names: runtime::input::SettingNames,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions { max_seq_len: 8192, eval_fraction: 0.0, shard_tokens: 1 << 24, text_column: None, lines: false, eval_inputs: Vec::new(), input_names: Default::default() }
    }
}

/// Writes sequences into numbered shards.
struct ShardWriter {
    dir: PathBuf,
    prefix: &'static str,
    max_tokens: usize,
    tokens: Vec<u16>,
    offsets: Vec<u64>,
    done: Vec<ShardInfo>,
}

impl ShardWriter {
    fn new(dir: &Path, prefix: &'static str, max_tokens: usize) -> Self {
        ShardWriter { dir: dir.to_path_buf(), prefix, max_tokens, tokens: Vec::new(), offsets: vec![0], done: Vec::new() }
    }
    fn push(&mut self, seq: &[u32]) -> Result<()> {
        self.tokens.extend(seq.iter().map(|&t| t as u16));
        self.offsets.push(self.tokens.len() as u64);
        if self.tokens.len() >= self.max_tokens {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if self.offsets.len() <= 1 {
            return Ok(());
        }
        let name = format!("{}-{:05}", self.prefix, self.done.len());
        let bin = self.dir.join(format!("{name}.u16"));
        let idx = self.dir.join(format!("{name}.idx"));
        let bytes: Vec<u8> = self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        std::fs::write(&bin, bytes).map_err(|e| io(&bin, e))?;
        let bytes: Vec<u8> = self.offsets.iter().flat_map(|t| t.to_le_bytes()).collect();
        std::fs::write(&idx, bytes).map_err(|e| io(&idx, e))?;
        self.done.push(ShardInfo { file: name, sequences: self.offsets.len() as u64 - 1, tokens: self.tokens.len() as u64 });
        self.tokens.clear();
        self.offsets = vec![0];
        Ok(())
    }
}

/// Cut one document into `[CLS] … [SEP]` chunks of at most `max_len` tokens.
pub fn chunk_document(tok: &Tokenizer, text: &str, max_len: usize) -> Result<Vec<Vec<u32>>> {
    if max_len < 3 {
        return Err(Error::Input(format!("max_seq_len {max_len}: expected at least 3 ([CLS], one token, [SEP])")));
    }
    let enc = tok.encode_plain(text)?;
    let (cls, sep) = (tok.specials.cls, tok.specials.sep);
    let body = max_len - 2;
    let mut out = Vec::new();
    let mut start = 0;
    while start < enc.ids.len() {
        let mut ids = Vec::with_capacity(max_len);
        let mut first: Vec<u32> = vec![enc.ids[start]];
        if start > 0 {
            // A continuation starts mid-text: its first token is re-encoded as if a word began
            // there (leading space), like the chunks of BioClinical ModernBERT's preparation.
            let (a, b) = enc.offsets[start];
            if let Some(piece) = text.get(a..b) {
                if !piece.starts_with(char::is_whitespace) {
                    let re = tok.encode_plain(&format!(" {piece}"))?.ids;
                    if !re.is_empty() && re.len() <= body {
                        first = re;
                    }
                }
            }
        }
        let room = body.saturating_sub(first.len());
        let end = (start + 1 + room).min(enc.ids.len());
        ids.push(cls);
        ids.extend(&first);
        ids.extend(&enc.ids[start + 1..end]);
        ids.push(sep);
        out.push(ids);
        start = end;
    }
    Ok(out)
}

/// Documents of one input, streamed in blocks through the runtime's reader (JSONL and
/// line-per-document text line by line, CSV row by row, a single-document text file whole), with
/// its checks: invalid UTF-8, unterminated CSV quotes and FIFOs are errors naming the file and
/// line.
fn for_each_block(path: &Path, opts: &PrepareOptions, mut f: impl FnMut(Vec<String>) -> Result<()>) -> Result<()> {
    const BLOCK: usize = 1024;
    let io_opts = runtime::input::InputOptions {
        lines: opts.lines,
        text_column: opts.text_column.clone(),
        // Training corpora may hold whole books as one document; they are cut into sequences.
        max_doc_bytes: 1 << 30,
        names: opts.input_names,
        ..Default::default()
    };
    let mut reader = runtime::input::DocumentReader::open(&path.display().to_string(), &io_opts)?;
    while let Some(docs) = reader.next_chunk(usize::MAX, BLOCK)? {
        f(docs.into_iter().map(|d| d.text).collect())?;
    }
    Ok(())
}

/// Every file an input names: itself, or the `.txt`, `.jsonl` and `.csv` files of a directory
/// (sorted, recursively).
fn expand(input: &Path) -> Result<Vec<PathBuf>> {
    if !input.is_dir() {
        if !input.exists() {
            return Err(Error::Input(format!("{}: no such file or directory", input.display())));
        }
        return Ok(vec![input.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(input).map_err(|e| io(input, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(expand(&p)?);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("txt" | "jsonl" | "ndjson" | "csv")) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Whether document number `n` goes to the eval split (a stable hash of its position).
fn is_eval(n: u64, fraction: f64) -> bool {
    fraction > 0.0 && Rng::new(n ^ 0x5EED_0F_E7A1).uniform() < fraction
}

/// Tokenize `inputs` into a dataset directory `out` (written to `out.tmp`, then renamed).
pub fn prepare(tok: &Tokenizer, inputs: &[PathBuf], out: &Path, opts: &PrepareOptions) -> Result<DatasetInfo> {
    use rayon::prelude::*;
    if tok.vocab_size() > u16::MAX as usize + 1 {
        return Err(Error::Input(format!("{}: a vocabulary of {} tokens does not fit uint16 shards", tok.source(), tok.vocab_size())));
    }
    let tmp = out.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let mut train = ShardWriter::new(&tmp, "train", opts.shard_tokens);
    let mut eval = ShardWriter::new(&tmp, "eval", opts.shard_tokens);
    let (mut documents, mut eval_documents) = (0u64, 0u64);
    let files: Vec<PathBuf> = inputs.iter().map(|p| expand(p)).collect::<Result<Vec<_>>>()?.concat();
    if files.is_empty() {
        return Err(Error::Input("no input files (.txt, .jsonl, .csv) found".into()));
    }
    let eval_files: Vec<PathBuf> = opts.eval_inputs.iter().map(|p| expand(p)).collect::<Result<Vec<_>>>()?.concat();
    let all: Vec<(&PathBuf, bool)> = files.iter().map(|f| (f, false)).chain(eval_files.iter().map(|f| (f, true))).collect();
    for (file, eval_file) in all {
        for_each_block(file, opts, |block| {
            let chunks: Vec<Vec<Vec<u32>>> = block.par_iter().map(|t| chunk_document(tok, t, opts.max_seq_len)).collect::<Result<_>>()?;
            for doc in chunks {
                let held_out = eval_file || is_eval(documents, opts.eval_fraction);
                documents += 1;
                eval_documents += held_out as u64;
                for seq in doc {
                    if held_out { eval.push(&seq)? } else { train.push(&seq)? }
                }
            }
            Ok(())
        })?;
    }
    train.flush()?;
    eval.flush()?;
    if train.done.is_empty() {
        return Err(Error::Input("the inputs hold no text to train on".into()));
    }
    let info = DatasetInfo {
        format: FORMAT.into(),
        max_seq_len: opts.max_seq_len,
        vocab_size: tok.vocab_size(),
        tokenizer: tok.source().to_string(),
        inputs: files.iter().chain(&eval_files).map(|p| p.display().to_string()).collect(),
        documents,
        eval_documents,
        train: train.done,
        eval: eval.done,
    };
    let json = tmp.join("dataset.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&info).expect("serialisable")).map_err(|e| io(&json, e))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
    Ok(info)
}

/// Open a prepared dataset's description.
pub fn open(dir: &Path) -> Result<DatasetInfo> {
    let json = dir.join("dataset.json");
    let text = read_text(&json)?;
    let info: DatasetInfo = serde_json::from_str(&text).map_err(|e| Error::file(json.display().to_string(), format!("not a dataset description: {e}")))?;
    if info.format != FORMAT {
        return Err(Error::file(json.display().to_string(), format!("format {:?}, expected {FORMAT:?}", info.format)));
    }
    Ok(info)
}

/// Where a loader is: all a resumed run needs to continue with the same batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// Position in the epoch's shard order.
    pub shard: u64,
    /// Position in the current shard's sequence order.
    pub sequence: u64,
    pub seed: u64,
}

/// Streams sequences from one split of a dataset, shard by shard.
pub struct Loader {
    dir: PathBuf,
    shards: Vec<ShardInfo>,
    pub state: LoaderState,
    /// Whether to visit in seeded random order (training) or in file order (evaluation).
    shuffle: bool,
    loaded: Option<(u64, u64, Vec<u16>, Vec<u64>, Vec<u32>)>,
}

/// A seeded permutation of 0..n.
fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

impl Loader {
    pub fn new(dir: &Path, info: &DatasetInfo, eval: bool, state: LoaderState) -> Result<Self> {
        let shards = if eval { info.eval.clone() } else { info.train.clone() };
        if shards.is_empty() {
            return Err(Error::Input(format!("{}: the {} split is empty", dir.display(), if eval { "eval" } else { "train" })));
        }
        Ok(Loader { dir: dir.to_path_buf(), shards, state, shuffle: !eval, loaded: None })
    }

    fn shard_order(&self) -> Vec<u32> {
        if self.shuffle {
            permutation(self.shards.len(), self.state.seed ^ self.state.epoch.wrapping_mul(0x9E37_79B9))
        } else {
            (0..self.shards.len() as u32).collect()
        }
    }

    fn load(&mut self) -> Result<()> {
        let key = (self.state.epoch, self.state.shard);
        if self.loaded.as_ref().is_some_and(|l| (l.0, l.1) == key) {
            return Ok(());
        }
        let s = &self.shards[self.shard_order()[self.state.shard as usize] as usize];
        let bin = self.dir.join(format!("{}.u16", s.file));
        let idx = self.dir.join(format!("{}.idx", s.file));
        let tokens: Vec<u16> = std::fs::read(&bin).map_err(|e| io(&bin, e))?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let offsets: Vec<u64> = std::fs::read(&idx).map_err(|e| io(&idx, e))?.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        if offsets.len() as u64 != s.sequences + 1 || offsets.last().copied() != Some(tokens.len() as u64) {
            return Err(Error::file(idx.display().to_string(), format!("does not match {} ({} sequences, {} tokens expected)", bin.display(), s.sequences, s.tokens)));
        }
        let order = if self.shuffle {
            permutation(s.sequences as usize, self.state.seed ^ (key.0 << 32) ^ key.1 ^ 0xA5A5)
        } else {
            (0..s.sequences as u32).collect()
        };
        self.loaded = Some((key.0, key.1, tokens, offsets, order));
        Ok(())
    }

    /// The next sequence; the loader wraps into the next epoch at the end.
    pub fn next_sequence(&mut self) -> Result<Vec<u32>> {
        loop {
            self.load()?;
            let (_, _, tokens, offsets, order) = self.loaded.as_ref().unwrap();
            if (self.state.sequence as usize) < order.len() {
                let k = order[self.state.sequence as usize] as usize;
                self.state.sequence += 1;
                return Ok(tokens[offsets[k] as usize..offsets[k + 1] as usize].iter().map(|&t| t as u32).collect());
            }
            self.state.sequence = 0;
            self.state.shard += 1;
            if self.state.shard as usize == self.shards.len() {
                self.state.shard = 0;
                self.state.epoch += 1;
            }
        }
    }

    /// Sequences whose total length stays within `budget` tokens (at least one sequence). A
    /// sequence that would overflow the budget is left for the next batch (not consumed).
    pub fn next_batch(&mut self, budget: usize) -> Result<Vec<Vec<u32>>> {
        let mut batch: Vec<Vec<u32>> = Vec::new();
        let mut tokens = 0;
        loop {
            let before = self.state;
            let seq = self.next_sequence()?;
            if !batch.is_empty() && tokens + seq.len() > budget {
                self.state = before;
                return Ok(batch);
            }
            tokens += seq.len();
            batch.push(seq);
            if tokens >= budget {
                return Ok(batch);
            }
        }
    }

    /// Every sequence of the split once, in file order (evaluation).
    pub fn total_sequences(&self) -> u64 {
        self.shards.iter().map(|s| s.sequences).sum()
    }
}

/// A whole text file (a regular file, UTF-8, without a byte-order mark), or an error naming it.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = runtime::files::read_limited(path, 1 << 34, "a text file")?;
    Ok(runtime::files::text(&path.display().to_string(), bytes)?)
}

/// Items as JSONL, one object per line (written atomically).
pub fn write_jsonl<T: serde::Serialize>(path: &Path, items: impl IntoIterator<Item = T>) -> Result<()> {
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, &item).expect("serialisable");
        buf.push(b'\n');
    }
    write_atomic(path, &buf)
}

/// Write `bytes` to `path` atomically (temporary file, then rename); on failure the temporary
/// file is removed and any old `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, e)
    })
}
