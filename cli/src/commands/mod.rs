//! The commands, one file each, and what they share: a loaded model folder, the input read a
//! chunk at a time, messages that name documents.

pub mod bench;
pub mod check;
pub mod classify;
pub mod deid;
pub mod embed;
pub mod fill_mask;
pub mod info;
pub mod serve_web;

use std::path::Path;

use kernels::Backend;
use runtime::config::Architecture;
use runtime::folder::ModelFolder;
use runtime::input::{Document, DocumentReader, InputOptions};
use runtime::pipeline::{Engine, Progress};
use runtime::tokenize::{Encoded, Tokenizer};
use runtime::Model;

use crate::args::{BatchArgs, InputArgs};
use crate::output::check_output;
use crate::progress::ProgressBar;
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

/// Text read per chunk: documents are tokenized, batched and written a chunk at a time, so
/// memory depends on this, not on the size of the input.
pub const CHUNK_BYTES: usize = 4 << 20;
pub const CHUNK_DOCS: usize = 4096;

/// What a streamed run did.
#[derive(Default)]
pub struct Streamed {
    /// Documents longer than one window (split into overlapping windows).
    pub split: usize,
}

/// Read the input a chunk at a time, tokenize each chunk, and hand its documents and encodings
/// to `work` with a progress callback; skipped documents are reported as they are met. A
/// non-finite model output is reported with the document's id.
pub fn for_each_chunk<B: Backend>(
    engine: &Engine<B>,
    reader: &mut DocumentReader,
    bar: &mut ProgressBar,
    mut work: impl FnMut(&[Document], &[Encoded], &mut dyn FnMut(Progress)) -> Result<(), Failure>,
) -> Result<Streamed, Failure> {
    let mut streamed = Streamed::default();
    loop {
        let chunk = reader.next_chunk(CHUNK_BYTES, CHUNK_DOCS);
        for m in reader.take_messages() {
            eprintln!("skipped {m}");
        }
        let Some(docs) = chunk? else { break };
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        let encs = engine.tokenize(&texts)?;
        streamed.split += encs.iter().filter(|e| e.len() > engine.settings.window).count();
        bar.begin_chunk(reader.fraction_read());
        work(&docs, &encs, &mut |p| bar.update(p))?;
        bar.end_chunk();
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
