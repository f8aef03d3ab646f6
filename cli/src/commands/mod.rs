//! The commands, one file each, and what they share: a loaded model folder, the input read a
//! chunk at a time, messages that name documents.

pub mod bench;
pub mod check;
pub mod classify;
pub mod deid;
pub mod embed;
pub mod fill_mask;
pub mod info;
pub mod merge;
pub mod serve_web;

use std::path::Path;

use kernels::Backend;
use runtime::config::Architecture;
use runtime::folder::ModelFolder;
use runtime::input::{Document, DocumentReader, InputOptions};
use runtime::pipeline::{Engine, Progress};
use runtime::tokenize::{Encoded, Tokenizer};
use runtime::Model;

use serde_json::Value;

use crate::args::{BatchArgs, DocumentArgs, InputArgs};
use crate::output::check_output;
use crate::parts::{input_identity, Chunk, Identity, Kind, Opened, Out, Records};
use crate::progress::ProgressBar;
use crate::shard::{self, Shard};
use crate::Failure;

/// What a command returns: `Ok(false)` when it ran but its check failed (exit status 1).
pub type Outcome = Result<bool, Failure>;

/// A loaded model folder on a backend.
pub struct Loaded<B: Backend> {
    pub folder: ModelFolder,
    pub model: Model<B>,
}

pub fn load<B: Backend>(be: &B, dir: &Path) -> Result<Loaded<B>, Failure> {
    let folder = ModelFolder::open(dir)?;
    let model = Model::load(be, folder.config.clone(), &folder.checkpoint)?;
    Ok(Loaded { folder, model })
}

impl<B: Backend> Loaded<B> {
    pub fn tokenizer(&self) -> Result<&Tokenizer, Failure> {
        self.folder.tokenizer.as_ref().ok_or_else(|| {
            Failure(format!(
                "{}: no tokenizer in the model folder (expected tokenizer.json, vocab.txt, or vocab.json with merges.txt)",
                self.folder.dir.display()
            ))
        })
    }
    pub fn engine<'a>(&'a self, be: &'a B, batch: &BatchArgs) -> Result<Engine<'a, B>, Failure> {
        let mut engine = Engine::new(be, &self.model, self.tokenizer()?);
        engine.settings = engine.settings.with_window(batch.window, batch.overlap)?;
        if let Some(t) = batch.batch_tokens {
            engine.settings.batch_tokens = t.max(engine.settings.window + 2);
        }
        let tokens = engine.settings.batch_tokens as u128;
        runtime::memory::ensure_fits(&format!("a batch of {tokens} tokens"), tokens * self.folder.config.activation_bytes_per_token(), "lower --batch-tokens")?;
        Ok(engine)
    }
    pub fn require_classifier(&self, command: &str) -> Result<(), Failure> {
        if !self.model.has_classifier() {
            return Err(Failure(format!("{}: {command} needs a classification head (classifier.weight); this checkpoint has none", self.folder.dir.display())));
        }
        Ok(())
    }
    /// Refuse a classifier of the other kind: a token classifier answers per token, a sequence
    /// classifier per document, and reading one as the other gives confident nonsense.
    pub fn require_head(&self, command: &str, wanted: Architecture) -> Result<(), Failure> {
        self.require_classifier(command)?;
        let config = &self.folder.config;
        match config.architecture() {
            Some(found) if found != wanted => Err(Failure(format!(
                "{}: {command} needs a {} (\"architectures\" in config.json); this model is a {}{}",
                self.folder.dir.display(),
                config.class_name(wanted),
                config.class_name(found),
                match found {
                    Architecture::TokenClassification => ", which labels each token: use `runtime-cli deid`",
                    Architecture::SequenceClassification => ", which labels whole documents: use `runtime-cli classify`",
                    _ => "",
                }
            ))),
            _ => Ok(()),
        }
    }
}

pub fn device_name<B: Backend>(be: &B) -> String {
    let i = be.device_info();
    format!("{} ({})", i.backend, i.name)
}

/// The input, opened (nothing read yet beyond its header), and checked against the output: an
/// output that is the input, or a directory, is refused before any work.
pub fn open_input(input: &InputArgs, output: Option<&Path>) -> Result<DocumentReader, Failure> {
    if let Some(out) = output {
        let source = (input.input != "-").then(|| Path::new(&input.input));
        check_output(out, source)?;
    } else {
        crate::output::check_stdout_open()?;
    }
    let opts = InputOptions {
        lines: input.lines,
        text_column: input.text_column.clone(),
        id_column: input.id_column.clone(),
        skip_invalid: input.skip_invalid,
        stdin_format: input.format.clone(),
        max_doc_bytes: input.max_doc_bytes,
        names: crate::args::INPUT_FLAGS,
    };
    Ok(DocumentReader::open(&input.input, &opts)?)
}

/// Text read per chunk, at most (and `--chunk-docs` documents): documents are tokenized, batched
/// and written a chunk at a time, so memory depends on this, not on the size of the input.
pub const CHUNK_BYTES: usize = 4 << 20;

/// What a streamed run did.
#[derive(Default)]
pub struct Streamed {
    /// Documents longer than one window (split into overlapping windows).
    pub split: usize,
    /// Documents in the whole input (every shard's).
    pub documents: usize,
    /// Documents of this run (its shard's).
    pub done: usize,
}

/// Where a command over documents writes, and which of them it takes.
pub struct Plan {
    pub shard: Option<Shard>,
    pub out: Out,
    /// Chunks done by an earlier run of the same command (skipped).
    pub skip: usize,
    pub chunk_docs: usize,
}

/// Choose the shard (`--shard` or the scheduler's environment, printed), and open the output:
/// directly, or as resumable parts identified by the command, its `settings` (the model folder
/// is added) and the input. `None`: this shard is already complete (said on standard error).
pub fn plan(command: &str, docs: &DocumentArgs, model_dir: &Path, mut settings: serde_json::Map<String, Value>, kind: Kind, output: Option<&Path>) -> Result<Option<Plan>, Failure> {
    let sa = &docs.shard;
    let chosen = shard::choose(sa.shard, sa.shard_count, |k| std::env::var(k).ok())?;
    let with_identity = match chosen {
        None => None,
        Some((s, source)) => {
            eprintln!("shard {s} (from {source}): the documents whose index i in the input has i mod {} = {}", s.count, s.index);
            if docs.input.input == "-" {
                return Err(Failure(format!("shard {s}: a sharded run reads a file or directory, not standard input (every shard must see the same documents)")));
            }
            let model = std::fs::canonicalize(model_dir).map_err(|e| Failure(format!("{}: {e}", model_dir.display())))?;
            settings.insert("model".into(), Value::String(model.display().to_string()));
            let b = &docs.batch;
            let i = &docs.input;
            for (k, v) in [
                ("window", serde_json::json!(b.window)),
                ("overlap", serde_json::json!(b.overlap)),
                ("chunk_docs", serde_json::json!(sa.chunk_docs)),
                ("lines", serde_json::json!(i.lines)),
                ("text_column", serde_json::json!(i.text_column)),
                ("id_column", serde_json::json!(i.id_column)),
                ("skip_invalid", serde_json::json!(i.skip_invalid)),
                ("max_doc_bytes", serde_json::json!(i.max_doc_bytes)),
                ("dtype", serde_json::json!(format!("{:?}", docs.model.backend.dtype).to_lowercase())),
                ("activations", serde_json::json!(format!("{:?}", docs.model.backend.activations).to_lowercase())),
                ("device", serde_json::json!(format!("{:?}", docs.model.backend.device).to_lowercase())),
                ("model_files", model_files(&model)),
            ] {
                settings.insert(k.into(), v);
            }
            let identity = Identity { command: command.into(), settings, input: input_identity(&i.input)? };
            Some((s, identity))
        }
    };
    let shard = with_identity.as_ref().map(|(s, _)| *s);
    match Out::open(kind, output, with_identity)? {
        Opened::Complete => {
            let out = output.map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("shard {}: already complete in {out} (with {out}.shard.json); remove them to compute it again", shard.expect("only shards complete"));
            Ok(None)
        }
        Opened::Run(out, skip) => Ok(Some(Plan { shard, out, skip, chunk_docs: sa.chunk_docs })),
    }
}

/// The size and modification time of a model folder's files: a model replaced in the same
/// folder is another run.
fn model_files(dir: &Path) -> Value {
    let mut files = serde_json::Map::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).map(|r| r.flatten().collect()).unwrap_or_default();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.ends_with(".json") || name.ends_with(".safetensors") || name.ends_with(".bin") || name.ends_with(".txt")) {
            continue;
        }
        if let Ok(m) = e.metadata() {
            let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            files.insert(name, serde_json::json!([m.len(), t.to_string()]));
        }
    }
    Value::Object(files)
}

/// The next chunk of this run's documents: up to `max_docs` of them and about `max_bytes` of
/// text, counting every document read in `index` (a document is never split: one larger than
/// `max_bytes` comes alone); `None` at the end of the input.
fn next_chunk(reader: &mut DocumentReader, shard: Option<Shard>, index: &mut usize, max_docs: usize) -> Result<Option<Vec<Document>>, Failure> {
    let mut chunk = Vec::new();
    let mut bytes = 0usize;
    while chunk.len() < max_docs && bytes < CHUNK_BYTES {
        let Some(d) = reader.next_document()? else { break };
        let i = *index;
        *index += 1;
        if shard.is_none_or(|s| s.owns(i)) {
            bytes += d.text.len();
            chunk.push(d);
        }
    }
    Ok(if chunk.is_empty() { None } else { Some(chunk) })
}

/// Read the input a chunk at a time (this shard's documents), skip the chunks an earlier run
/// finished, tokenize each other chunk and hand its documents and encodings to `work` with a
/// progress callback, and give its records to the output, which is completed at the end.
/// Skipped documents are reported as they are met; a non-finite model output is reported with
/// the document's id.
pub fn run_chunks<B: Backend>(
    engine: &Engine<B>,
    reader: &mut DocumentReader,
    bar: &mut ProgressBar,
    plan: Plan,
    mut work: impl FnMut(&[Document], &[Encoded], &mut dyn FnMut(Progress)) -> Result<Records, Failure>,
) -> Result<Streamed, Failure> {
    let Plan { shard, mut out, skip, chunk_docs } = plan;
    let mut streamed = Streamed::default();
    let mut chunk_no = 0;
    loop {
        let chunk = next_chunk(reader, shard, &mut streamed.documents, chunk_docs);
        for m in reader.take_messages() {
            eprintln!("skipped {m}");
        }
        let Some(docs) = chunk? else { break };
        chunk_no += 1;
        if chunk_no <= skip {
            out.check_skipped(chunk_no - 1, &docs.iter().map(|d| d.id.clone()).collect::<Vec<_>>())?;
            continue;
        }
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let encs = engine.tokenize(&texts)?;
        streamed.split += encs.iter().filter(|e| e.len() > engine.settings.window).count();
        bar.begin_chunk(reader.fraction_read());
        let records = work(&docs, &encs, &mut |p| bar.update(p))?;
        streamed.done += docs.len();
        out.put(Chunk { ids: docs.iter().map(|d| d.id.clone()).collect(), records })?;
        bar.end_chunk();
    }
    if chunk_no < skip {
        return Err(Failure(format!("the input holds {chunk_no} chunks of this run's documents, but an earlier run finished {skip}: the input changed; remove the parts directory to start over")));
    }
    out.finish(streamed.documents)?;
    if let Some(s) = shard {
        // Said again at the end: a job array over per-task files would otherwise keep a share
        // of each without anyone noticing (`--shard 0/1` takes the whole input).
        eprintln!(
            "shard {s}: {} of the input's {} documents are this shard's; `runtime-cli merge` assembles the shards",
            s.share_of(streamed.documents),
            streamed.documents
        );
    }
    Ok(streamed)
}

/// A model error with the documents of its chunk named by id.
pub fn named(docs: &[Document]) -> impl Fn(runtime::Error) -> Failure + '_ {
    move |e| {
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        Failure(e.naming_documents(&ids).to_string())
    }
}

pub fn split_note(window: usize, split: usize) -> String {
    if split == 0 {
        String::new()
    } else {
        format!("; {split} longer than the {window}-token window, split into overlapping windows")
    }
}
