//! `runtime-cli`: run ModernBERT-family models from Hugging Face folders. Thin: parse arguments,
//! pick the device, call the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kernels::device::{cuda_device, wgpu_device, AdapterChoice};
use kernels::backend::DType;
use kernels::{Backend, CpuBackend, GpuBackend};
use runtime::args::{in_range, probability, MAX_THREADS};
use runtime::check::check;
use runtime::config::Pooling;
use runtime::config::Architecture;
use runtime::deid::{deidentify, LabelScheme, Span, SurrogateKey, Surrogates};
use runtime::folder::{sentence_transformers_pooling, ModelFolder};
use runtime::input::{Document, DocumentReader, InputOptions};
use runtime::output::{check_output, EmbeddingWriter, Sink};
use runtime::pipeline::{softmax, Engine, Progress, Settings};
use runtime::tokenize::Encoded;
use runtime::progress::ProgressBar;
use runtime::tokenize::Tokenizer;
use runtime::weights::Checkpoint;
use runtime::{Model, ModernBert};

#[derive(Parser)]
#[command(name = "runtime-cli", version, about = "Run ModernBERT-family clinical encoders on any GPU or the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Device {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    /// The wgpu GPU backend (Vulkan, Metal, DX12), software adapters included.
    Gpu,
    /// The CPU backend.
    Cpu,
    /// NVIDIA GPUs through cubecl's CUDA runtime (builds with `--features cuda`).
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DTypeArg {
    F32,
    /// Half-precision weight matrices (GPUs with shader-f16); with `--activations f16`, f16 end to
    /// end.
    F16,
    /// bfloat16 weights and products, f32 accumulation (the CPU backend; twice the f32 rate with
    /// AVX512-BF16).
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ActArg {
    F32,
    F16,
}

#[derive(Args)]
struct ModelArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json); embed,
    /// fill-mask, info and deid default to the small models bundled in models/.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Storage precision of the weights (arithmetic stays f32).
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    /// Storage precision of the activations on a GPU: f16 halves their memory and bandwidth and
    /// lets GEMMs take f16 operands (f32 arithmetic and accumulation inside every kernel).
    #[arg(long, value_enum, default_value_t = ActArg::F32)]
    activations: ActArg,
    /// CPU threads (default: all cores).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
    threads: Option<usize>,
}

impl ModelArgs {
    /// The model folder: `--model`, or the bundled model of the command.
    fn dir(&self, bundled: Option<&str>) -> Result<PathBuf, Failure> {
        match (&self.model, bundled) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(name)) => runtime::bundled::locate(name).map_err(|e| Failure(e.to_string())),
            (None, None) => Err(Failure("--model DIR is required: a Hugging Face model folder (no bundled model fits this command)".into())),
        }
    }
}

#[derive(Args)]
struct InputArgs {
    /// A .txt file (one document), .jsonl (`text`, optional `id`), .csv (with --text-column), a
    /// directory of .txt files, or - for standard input.
    input: String,
    /// One document per line of a text file.
    #[arg(long)]
    lines: bool,
    /// The text column of a CSV file.
    #[arg(long)]
    text_column: Option<String>,
    /// The id column of a CSV file (default: the row number).
    #[arg(long)]
    id_column: Option<String>,
    /// Format of standard input: txt, jsonl or csv.
    #[arg(long, value_parser = ["txt", "jsonl", "csv"])]
    format: Option<String>,
    /// Skip documents that cannot be used (invalid UTF-8, larger than --max-doc-bytes, a
    /// directory entry that is not a readable file) instead of stopping; each is reported.
    #[arg(long)]
    skip_invalid: bool,
    /// The largest document, in bytes: a larger one is refused with its id and size (or skipped
    /// with --skip-invalid); one up to this size is windowed like any long document.
    #[arg(long, default_value_t = runtime::input::DEFAULT_MAX_DOC_BYTES, allow_negative_numbers = true, value_parser = in_range(1, 1 << 34))]
    max_doc_bytes: usize,
}

#[derive(Args)]
struct BatchArgs {
    /// Content tokens per window for documents longer than that (default: the model's context).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, runtime::config::MAX_CONTEXT as u64))]
    window: Option<usize>,
    /// Tokens shared by consecutive windows (default: an eighth of the window).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(0, runtime::config::MAX_CONTEXT as u64))]
    overlap: Option<usize>,
    /// Most tokens per batch (default: 16,384, or what the device can hold).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 1 << 24))]
    batch_tokens: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PoolingArg {
    Mean,
    Cls,
}

#[derive(Subcommand)]
enum Command {
    /// One embedding per document.
    #[command(after_help = "Examples:\n  runtime-cli embed examples/notes.txt            # the bundled clinical-small\n  runtime-cli embed notes.txt --model DIR\n  runtime-cli embed notes.jsonl --model DIR --normalize -o notes.npy\n  runtime-cli embed notes.csv --text-column note --model DIR -o notes.safetensors")]
    Embed {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        batch: BatchArgs,
        /// Pooling (default: the folder's sentence-transformers config, else mean).
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// L2-normalise each embedding.
        #[arg(long)]
        normalize: bool,
        /// Output file: .jsonl (default, also stdout), .npy (ids in FILE.ids.json) or .safetensors.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Predict the tokens behind every [MASK].
    #[command(after_help = "Examples:\n  runtime-cli fill-mask \"The patient denies chest [MASK].\"\n  runtime-cli fill-mask \"The patient denies chest [MASK].\" --model DIR --top-k 5")]
    FillMask {
        /// Text with one or more mask tokens.
        text: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Candidates per mask.
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = in_range(1, 1000))]
        top_k: usize,
        /// JSON output instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find and redact protected health information with a token-classification model.
    #[command(after_help = "Examples:\n  runtime-cli deid examples/notes.txt             # the bundled deid-small\n  runtime-cli deid note.txt --model DIR\n  runtime-cli deid notes.jsonl --model DIR --surrogate --threshold 0.2 -o deid.jsonl")]
    Deid {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        batch: BatchArgs,
        /// A word is PHI when P(PHI) ≥ this (0 to 1); below 0.5 favours recall (a missed name is
        /// a leak).
        #[arg(long, default_value_t = runtime::deid::DEFAULT_THRESHOLD, allow_negative_numbers = true, value_parser = probability)]
        threshold: f32,
        /// Replace PHI with fake values of the same form instead of [CATEGORY] placeholders,
        /// consistent within the run and drawn under a fresh secret key.
        #[arg(long)]
        surrogate: bool,
        /// With --surrogate: draw the surrogates under the secret in this file (at least 16
        /// bytes, e.g. `head -c 32 /dev/urandom > deid.key`), so that other runs with the same
        /// file give the same surrogates. Keep it as secret as the notes.
        #[arg(long, value_name = "FILE")]
        surrogate_key: Option<PathBuf>,
        /// Output JSONL file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Sequence classification: a label and probabilities per document.
    #[command(after_help = "Example:\n  runtime-cli classify notes.jsonl --model DIR -o labels.jsonl")]
    Classify {
        #[command(flatten)]
        input: InputArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        batch: BatchArgs,
        /// Pooling (default: the config's classifier_pooling).
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// Output JSONL file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Compare the model with reference tensors made by transformers (parity check).
    #[command(after_help = "Example:\n  runtime-cli check --model tests/fixtures/tiny-modernbert-mlm --reference tests/fixtures/reference.safetensors")]
    Check {
        #[command(flatten)]
        model: ModelArgs,
        /// Reference file in the schema of tests/fixtures/reference.safetensors.
        #[arg(long)]
        reference: PathBuf,
        /// Largest acceptable error on real tokens, measured as the dtypes' criterion says
        /// (default: 1e-4 absolute in f32; 3e-2 of max(1, |reference|) with f16 weights, 8e-2 with
        /// f16 activations too).
        #[arg(long)]
        tol: Option<f32>,
    },
    /// Describe a model folder and the device that would run it.
    #[command(after_help = "Example:\n  runtime-cli info --model DIR")]
    Info {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Serve the browser de-identification page (built by web/build.sh) on this machine, with a
    /// model folder as the page's default model. Notes pasted into the page stay in the browser.
    #[command(after_help = "Examples:\n  web/build.sh && runtime-cli serve-web            # the bundled deid-small as the page's model\n  runtime-cli serve-web --model DIR\n  runtime-cli serve-web --no-model --port 8080     # pick a folder in the page")]
    ServeWeb {
        /// A token-classification model folder, served at /models/deid/ (the page loads it);
        /// default: the bundled deid-small. `--no-model` serves the page alone.
        #[arg(long, conflicts_with = "no_model")]
        model: Option<PathBuf>,
        #[arg(long)]
        no_model: bool,
        /// The built page.
        #[arg(long, default_value = "web/dist")]
        root: PathBuf,
        #[arg(long, default_value_t = 8000)]
        port: u16,
        /// Listen on every interface instead of loopback only.
        #[arg(long)]
        public: bool,
    },
    /// Time the encoder: median tokens/s, useful GFLOP/s and peak memory.
    #[command(after_help = "Examples:\n  runtime-cli bench --config tests/data/modernbert-configs/ModernBERT-base.config.json --batch 8 --seq 128 --threads 1\n  runtime-cli bench --model DIR --batch 1 --seq 8192 --device gpu")]
    Bench {
        /// A model folder, or --config for random seeded weights.
        #[arg(long, conflicts_with = "config", required_unless_present = "config")]
        model: Option<PathBuf>,
        /// A config.json: the model is built with random seeded weights.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Sequences per forward pass.
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
        batch: usize,
        /// Tokens per sequence (at most the model's context).
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, runtime::config::MAX_CONTEXT as u64))]
        seq: usize,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
        dtype: DTypeArg,
        #[arg(long, value_enum, default_value_t = ActArg::F32)]
        activations: ActArg,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
        threads: Option<usize>,
        /// Also time one GEMM the size of the model's fused QKV projection on 1,024 tokens and
        /// print its rate: the machine's matmul peak, measured in the same run.
        #[arg(long)]
        matmul_peak: bool,
        /// Rows of the --matmul-peak GEMM.
        #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
        matmul_rows: usize,
        /// Timed forward passes (after one warm-up).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = in_range(1, 10_000))]
        iters: usize,
        /// GEMM path on a GPU: auto (tensor cores where the device and operand types allow, else
        /// the unit path), unit, cmma, double-cmma.
        #[arg(long, default_value = "auto", value_parser = parse_gemm)]
        gemm: kernels::linear::GemmPath,
    },
}

fn parse_gemm(s: &str) -> Result<kernels::linear::GemmPath, String> {
    kernels::linear::GemmPath::parse(s).ok_or_else(|| format!("unknown GEMM path {s:?}; expected auto, unit, cmma or double-cmma"))
}

/// A failed command's message (exit status 2).
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

type Outcome = Result<bool, Failure>;

/// The backend a command runs on.
enum Chosen {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

fn choose(device: Device, dtype: DTypeArg, activations: ActArg) -> Result<Chosen, Failure> {
    let dtype = match dtype {
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
        DTypeArg::Bf16 => DType::BF16,
    };
    let act = match activations {
        ActArg::F32 => DType::F32,
        ActArg::F16 => DType::F16,
    };
    if act == DType::F16 && dtype != DType::F16 {
        return Err(Failure("--activations f16 goes with --dtype f16 (f16 end to end); f32 weights with f16 activations is not a supported mix".into()));
    }
    let gpu = |d| -> Result<Chosen, Failure> { Ok(Chosen::Gpu(GpuBackend::new(d).with_dtype(dtype)?.with_activations(act)?)) };
    let cpu = || -> Result<Chosen, Failure> {
        if act == DType::F16 {
            return Err(Failure("--activations f16 needs a GPU with shader-f16; the CPU backend keeps activations in f32 (use --device gpu)".into()));
        }
        Ok(Chosen::Cpu(CpuBackend::new().with_dtype(dtype)?))
    };
    let chosen = match device {
        Device::Cpu => cpu()?,
        Device::Gpu => gpu(wgpu_device(AdapterChoice::Default)?)?,
        Device::Cuda => gpu(cuda_device(0)?)?,
        Device::Auto => match wgpu_device(AdapterChoice::Default) {
            // A software rasteriser (lavapipe) is slower than the CPU backend.
            Ok(d) if d.device_type != "Cpu" && (dtype == DType::F32 || (dtype == DType::F16 && d.limits.f16)) => gpu(d)?,
            _ if dtype == DType::F16 || act == DType::F16 => {
                return Err(Failure("f16 (--dtype f16, --activations f16) needs a GPU with shader-f16; the CPU backend stores f32 or bf16 (use --device gpu, or --dtype f32/bf16)".into()))
            }
            _ => cpu()?,
        },
    };
    Ok(chosen)
}

/// Run `$body` with `$be` bound to the chosen backend.
macro_rules! on_backend {
    ($model:expr, |$be:ident| $body:expr) => {
        match { set_threads($model.threads)?; choose($model.device, $model.dtype, $model.activations)? } {
            Chosen::Cpu($be) => $body,
            Chosen::Gpu($be) => $body,
        }
    };
}

/// A loaded model folder on a backend.
struct Loaded<B: Backend> {
    folder: ModelFolder,
    model: Model<B>,
}

fn load<B: Backend>(be: &B, dir: &Path) -> Result<Loaded<B>, Failure> {
    let folder = ModelFolder::open(dir)?;
    let model = Model::load(be, folder.config.clone(), &folder.checkpoint)?;
    Ok(Loaded { folder, model })
}

impl<B: Backend> Loaded<B> {
    fn tokenizer(&self) -> Result<&Tokenizer, Failure> {
        self.folder.tokenizer.as_ref().ok_or_else(|| Failure(format!("{}: no tokenizer in the model folder (expected tokenizer.json, vocab.txt, or vocab.json with merges.txt)", self.folder.dir.display())))
    }
    fn engine<'a>(&'a self, be: &'a B, batch: &BatchArgs) -> Result<Engine<'a, B>, Failure> {
        let mut engine = Engine::new(be, &self.model, self.tokenizer()?);
        engine.settings = engine.settings.with_window(batch.window, batch.overlap)?;
        if let Some(t) = batch.batch_tokens {
            engine.settings.batch_tokens = t.max(engine.settings.window + 2);
        }
        let tokens = engine.settings.batch_tokens as u128;
        runtime::memory::ensure_fits(
            &format!("a batch of {tokens} tokens"),
            tokens * self.folder.config.activation_bytes_per_token(),
            "lower --batch-tokens",
        )?;
        Ok(engine)
    }
    fn require_classifier(&self, command: &str) -> Result<(), Failure> {
        if !self.model.has_classifier() {
            return Err(Failure(format!(
                "{}: {command} needs a classification head (classifier.weight); this checkpoint has none",
                self.folder.dir.display()
            )));
        }
        Ok(())
    }
    /// Refuse a classifier of the other kind: a token classifier answers per token, a sequence
    /// classifier per document, and reading one as the other gives confident nonsense.
    fn require_head(&self, command: &str, wanted: Architecture) -> Result<(), Failure> {
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

fn device_name<B: Backend>(be: &B) -> String {
    let i = be.device_info();
    format!("{} ({})", i.backend, i.name)
}

/// The input, opened (nothing read yet beyond its header), and checked against the output: an
/// output that is the input, or a directory, is refused before any work.
fn open_input(input: &InputArgs, output: Option<&Path>) -> Result<DocumentReader, Failure> {
    if let Some(out) = output {
        let source = (input.input != "-").then(|| Path::new(&input.input));
        check_output(out, source)?;
    } else {
        runtime::output::check_stdout_open()?;
    }
    let opts = InputOptions {
        lines: input.lines,
        text_column: input.text_column.clone(),
        id_column: input.id_column.clone(),
        skip_invalid: input.skip_invalid,
        stdin_format: input.format.clone(),
        max_doc_bytes: input.max_doc_bytes,
    };
    Ok(DocumentReader::open(&input.input, &opts)?)
}

/// Text read per chunk: documents are tokenized, batched and written a chunk at a time, so
/// memory depends on this, not on the size of the input.
const CHUNK_BYTES: usize = 4 << 20;
const CHUNK_DOCS: usize = 4096;

/// What a streamed run did.
#[derive(Default)]
struct Streamed {
    /// Documents longer than one window (split into overlapping windows).
    split: usize,
}

/// Read the input a chunk at a time, tokenize each chunk, and hand its documents and encodings
/// to `work` with a progress callback; skipped documents are reported as they are met. A
/// non-finite model output is reported with the document's id.
fn for_each_chunk<B: Backend>(
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
fn named(docs: &[Document]) -> impl Fn(runtime::Error) -> Failure + '_ {
    move |e| {
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        Failure(e.naming_documents(&ids).to_string())
    }
}

fn split_note(window: usize, split: usize) -> String {
    if split == 0 {
        String::new()
    } else {
        format!("; {split} longer than the {window}-token window, split into overlapping windows")
    }
}

fn embed<B: Backend>(be: &B, input: &InputArgs, model: &ModelArgs, batch: &BatchArgs, pooling: Option<PoolingArg>, normalize: bool, output: Option<&Path>) -> Outcome {
    let dir = model.dir(Some(runtime::bundled::CLINICAL_SMALL))?;
    let mut reader = open_input(input, output)?;
    let loaded = load(be, &dir)?;
    let st = sentence_transformers_pooling(&dir)?;
    let pooling = match (pooling, st) {
        (Some(PoolingArg::Mean), _) => Pooling::Mean,
        (Some(PoolingArg::Cls), _) => Pooling::Cls,
        (None, Some((p, _))) => p,
        (None, None) => Pooling::Mean,
    };
    let normalize = normalize || st.is_some_and(|(_, n)| n);
    let engine = loaded.engine(be, batch)?;
    let meta = [("model", dir.display().to_string()), ("pooling", format!("{pooling:?}").to_lowercase()), ("normalized", normalize.to_string())];
    let mut writer = EmbeddingWriter::create(output, &meta)?;
    let mut bar = ProgressBar::new("embedded");
    let streamed = for_each_chunk(&engine, &mut reader, &mut bar, |docs, encs, progress| {
        let embeddings = kernels::block_on(engine.embed(encs, pooling, normalize, progress)).map_err(named(docs))?;
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        writer.write(&ids, &embeddings)?;
        Ok(())
    })?;
    writer.finish()?;
    bar.finish(&device_name(be), &split_note(engine.settings.window, streamed.split));
    Ok(true)
}

fn fill_mask<B: Backend>(be: &B, text: &str, model: &ModelArgs, top_k: usize, json: bool) -> Outcome {
    runtime::output::check_stdout_open()?;
    let dir = model.dir(Some(runtime::bundled::CLINICAL_SMALL))?;
    let loaded = load(be, &dir)?;
    if !loaded.model.has_mlm() {
        return Err(Failure(format!("{}: fill-mask needs a masked-LM head (ModernBertForMaskedLM or BertForMaskedLM); this checkpoint has none", dir.display())));
    }
    let engine = Engine::new(be, &loaded.model, loaded.tokenizer()?);
    let predictions = kernels::block_on(engine.fill_mask(text, top_k))?;
    let mask = &loaded.tokenizer()?.names.mask;
    let mut out = Sink::open(None)?;
    for (k, p) in predictions.iter().enumerate() {
        if json {
            let candidates: Vec<serde_json::Value> = p
                .candidates
                .iter()
                .map(|c| serde_json::json!({"token": c.token_id, "token_str": c.token.trim(), "piece": loaded.tokenizer().ok().and_then(|t| t.token(c.token_id)), "score": c.score}))
                .collect();
            out.line(serde_json::json!({"mask": k, "offset": p.char_offset, "predictions": candidates}))?;
        } else {
            out.line(format!("{mask} #{} at character {}:", k + 1, p.char_offset))?;
            for c in &p.candidates {
                out.line(format!("  {:>8.4}  {:?}", c.score, shown_token(loaded.tokenizer()?, c)))?;
            }
        }
    }
    out.finish()?;
    Ok(true)
}

/// A candidate as text; a byte-level piece that is not whole UTF-8 on its own is shown as the
/// vocabulary entry instead.
fn shown_token(tokenizer: &Tokenizer, c: &runtime::pipeline::Candidate) -> String {
    if c.token.contains('\u{FFFD}') {
        tokenizer.token(c.token_id).unwrap_or_else(|| c.token.clone())
    } else {
        c.token.trim().to_string()
    }
}

#[allow(clippy::too_many_arguments)]
fn deid<B: Backend>(be: &B, input: &InputArgs, model: &ModelArgs, batch: &BatchArgs, threshold: f32, surrogate: bool, surrogate_key: Option<&Path>, output: Option<&Path>) -> Outcome {
    let dir = model.dir(Some(runtime::bundled::DEID_SMALL))?;
    let surrogates = match (surrogate, surrogate_key) {
        (_, Some(key)) => {
            let bytes = runtime::files::read_limited(key, 1 << 20, "a surrogate key file")?;
            Some(Surrogates::new(SurrogateKey::from_file_bytes(&key.display().to_string(), &bytes)?))
        }
        (true, None) => Some(Surrogates::new(SurrogateKey::random()?)),
        (false, None) => None,
    };
    let mut reader = open_input(input, output)?;
    let loaded = load(be, &dir)?;
    loaded.require_head("deid", Architecture::TokenClassification)?;
    let scheme = LabelScheme::from_labels(loaded.folder.config.source(), loaded.model.labels())?;
    let engine = loaded.engine(be, batch)?;
    let mut sink = Sink::open(output)?;
    let mut bar = ProgressBar::new("de-identified");
    let mut n_spans = 0;
    let streamed = for_each_chunk(&engine, &mut reader, &mut bar, |docs, encs, progress| {
        let probs = kernels::block_on(engine.token_probabilities(encs, progress)).map_err(named(docs))?;
        for ((doc, enc), p) in docs.iter().zip(encs).zip(&probs) {
            let (spans, redacted) = deidentify(&doc.text, enc, p, &scheme, threshold, surrogates.as_ref());
            n_spans += spans.len();
            sink.line(serde_json::json!({"id": doc.id, "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(), "redacted": redacted}))?;
        }
        Ok(())
    })?;
    sink.finish()?;
    bar.finish(&device_name(be), &format!("; {n_spans} PHI spans{}", split_note(engine.settings.window, streamed.split)));
    Ok(true)
}

fn classify<B: Backend>(be: &B, input: &InputArgs, model: &ModelArgs, batch: &BatchArgs, pooling: Option<PoolingArg>, output: Option<&Path>) -> Outcome {
    let dir = model.dir(None)?;
    let mut reader = open_input(input, output)?;
    let loaded = load(be, &dir)?;
    loaded.require_head("classify", Architecture::SequenceClassification)?;
    // None: the model's own (ModernBERT's classifier_pooling; BERT's pooler).
    let pooling = pooling.map(|p| match p {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Cls => Pooling::Cls,
    });
    let engine = loaded.engine(be, batch)?;
    let labels = loaded.model.labels();
    let problem = loaded.model.problem_type();
    let mut sink = Sink::open(output)?;
    let mut bar = ProgressBar::new("classified");
    let streamed = for_each_chunk(&engine, &mut reader, &mut bar, |docs, encs, progress| {
        let logits = kernels::block_on(engine.sequence_logits(encs, pooling, progress)).map_err(named(docs))?;
        for (doc, l) in docs.iter().zip(&logits) {
            let line = if labels.len() == 1 || problem == Some("regression") {
                serde_json::json!({"id": doc.id, "value": l[0]})
            } else if problem == Some("multi_label_classification") {
                let probs: Vec<f32> = l.iter().map(|&x| 1.0 / (1.0 + (-x).exp())).collect();
                let chosen: Vec<&String> = labels.iter().zip(&probs).filter(|(_, p)| **p >= 0.5).map(|(n, _)| n).collect();
                let scores: serde_json::Map<String, serde_json::Value> = labels.iter().zip(&probs).map(|(n, p)| (n.clone(), serde_json::json!(p))).collect();
                serde_json::json!({"id": doc.id, "labels": chosen, "scores": scores})
            } else {
                let probs = softmax(l);
                let best = (0..probs.len()).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
                let scores: serde_json::Map<String, serde_json::Value> = labels.iter().zip(&probs).map(|(n, p)| (n.clone(), serde_json::json!(p))).collect();
                serde_json::json!({"id": doc.id, "label": labels[best], "score": probs[best], "scores": scores})
            };
            sink.line(line)?;
        }
        Ok(())
    })?;
    sink.finish()?;
    bar.finish(&device_name(be), &split_note(engine.settings.window, streamed.split));
    Ok(true)
}

fn run_check<B: Backend>(be: &B, model: &Path, reference: &Path, tol: Option<f32>) -> Outcome {
    let mut criterion = kernels::tolerance::parity_with_activations(be.dtype(), be.activation_dtype());
    if let Some(t) = tol {
        criterion.limit = t;
    }
    let folder = ModelFolder::open(model)?;
    let reference = Checkpoint::open_file(reference)?;
    let model = runtime::check::load_for_check(be, folder.config, &folder.checkpoint, &reference)?;
    let report = kernels::block_on(check(be, &model, &reference))?;
    println!("device: {} ({})", device_name(be), be.dtype().name());
    if let Model::Bert(runtime::Bert { pooler_source: Some(from), .. }) = &model {
        println!("pooler: from the reference file {from} (the checkpoint has none)");
    }
    let worst = report.max_err(criterion.scale);
    let ok = worst <= criterion.limit;
    println!(
        "criterion: {} ≤ {:e} for {} weights, {} activations: {worst:.3e}, {}",
        criterion.scale.describe(),
        criterion.limit,
        be.dtype().name(),
        be.activation_dtype().name(),
        if ok { "pass" } else { "FAIL" }
    );
    print!("{}", report.render());
    if !ok {
        eprintln!("error: an error exceeds the tolerance {:e} ({})", criterion.limit, criterion.scale.describe());
    }
    Ok(ok)
}

fn info<B: Backend>(be: &B, model: &Path) -> Outcome {
    let loaded = load(be, model)?;
    let (folder, m) = (&loaded.folder, &loaded.model);
    let c = &folder.config;
    let params: usize = folder.checkpoint.names().filter_map(|n| folder.checkpoint.get(n)).map(|t| t.shape.iter().product::<usize>()).sum();
    println!("model: {}", folder.dir.display());
    println!("architecture: {}", m.description());
    println!(
        "encoder: {} layers, hidden {}, {} heads of {}, intermediate {}, vocabulary {}, context {}",
        c.num_hidden_layers(),
        c.hidden_size(),
        c.num_attention_heads(),
        c.hidden_size() / c.num_attention_heads(),
        c.intermediate_size(),
        c.vocab_size(),
        c.context()
    );
    match c {
        runtime::ModelConfig::ModernBert(c) => {
            let global = c.layer_types.iter().filter(|t| **t == runtime::config::LayerType::Full).count();
            println!(
                "attention: {global} global layers (RoPE θ {}), {} sliding-window layers (±{} tokens, RoPE θ {})",
                c.global_rope_theta,
                c.num_hidden_layers - global,
                c.window(),
                c.local_rope_theta
            );
        }
        runtime::ModelConfig::Bert(c) => {
            println!(
                "attention: {} global layers; learned absolute positions (up to {} tokens), {} token types",
                c.num_hidden_layers, c.max_position_embeddings, c.type_vocab_size
            );
        }
    }
    println!("weights: {}", folder.checkpoint.describe());
    println!("parameters: {params} stored");
    let mut heads = Vec::new();
    if m.has_mlm() {
        heads.push("masked LM".to_string());
    }
    if m.has_classifier() {
        heads.push(format!("token / sequence classification ({} labels: {})", m.labels().len(), m.labels().join(", ")));
    }
    if let Model::Bert(b) = m {
        heads.push(if b.pooler.is_some() { "pooler (tanh)".to_string() } else { "no pooler".to_string() });
    }
    println!("heads: {}", if heads.is_empty() { "none (bare encoder)".into() } else { heads.join("; ") });
    match &folder.tokenizer {
        Some(t) => println!("tokenizer: {}", t.description),
        None => println!("tokenizer: none (no tokenizer.json, vocab.txt or vocab.json)"),
    }
    let s = Settings::for_model(be, m);
    println!("batching: windows of {} tokens (overlap {}), up to {} tokens per batch", s.window, s.overlap, s.batch_tokens);
    let info = be.device_info();
    println!("device: {} ({})", info.backend, info.name);
    for (k, v) in &info.details {
        println!("  {k}: {v}");
    }
    Ok(true)
}

/// Size the CPU thread pool (before anything uses it).
fn set_threads(threads: Option<usize>) -> Result<(), Failure> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Failure("--threads: expected at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| Failure(format!("--threads {n}: {e}")))?;
    }
    Ok(())
}

/// Peak resident memory of this process, in MiB (Linux; 0 elsewhere).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Best rate, in GFLOP/s, of `x[rows, h] · Wᵀ[h, 3h]` on this backend (the fused QKV projection
/// of a model of width `h`): the matmul peak the encoder's figures are compared with.
fn matmul_peak<B: Backend>(be: &B, h: usize, rows: usize) -> Result<f64, Failure> {
    let x = be.upload_vec(kernels::testing::rand_vec(rows * h, 1, 1.0), &[rows, h])?;
    let w = be.upload_weight(kernels::testing::rand_vec(3 * h * h, 2, 0.05), &[3 * h, h])?;
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t0 = std::time::Instant::now();
        let y = be.linear(&x, &w, None)?;
        kernels::block_on(be.read(&y))?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(2.0 * (rows * h * 3 * h) as f64 / best / 1e9)
}

fn bench<B: Backend>(be: &B, model: Option<&Path>, config: Option<&Path>, batch: usize, seq: usize, iters: usize, peak: Option<usize>) -> Outcome {
    // The sizes are checked against the config and the machine before anything is built.
    let c = match (model, config) {
        (Some(dir), _) => runtime::ModelConfig::from_file(&dir.join("config.json"))?,
        (None, Some(cfg)) => runtime::ModelConfig::from_file(cfg)?,
        (None, None) => return Err(Failure("give --model DIR or --config FILE".into())),
    };
    if seq > c.context() {
        return Err(Failure(format!("--seq {seq} exceeds the model's context of {} tokens (max_position_embeddings in {})", c.context(), c.source())));
    }
    // (The weights' memory is checked by the load below, before it allocates.)
    let tokens = (batch * seq) as u128;
    runtime::memory::ensure_fits(
        &format!("--batch {batch} --seq {seq} ({tokens} tokens in one forward pass)"),
        tokens * (c.activation_bytes_per_token() + 4),
        "lower --batch or --seq",
    )?;
    if let Some(rows) = peak {
        let h = c.hidden_size() as u128;
        runtime::memory::ensure_fits(&format!("--matmul-rows {rows}"), 4 * (rows as u128 * h * 4 + 3 * h * h), "lower --matmul-rows")?;
    }
    let m = match (model, c) {
        (Some(dir), _) => load(be, dir)?.model,
        (None, runtime::ModelConfig::ModernBert(mut c)) => {
            c.architecture = Some(runtime::config::Architecture::Model); // the encoder alone, like ModernBertModel
            let weights = runtime::init::RandomWeights::new(&c, runtime::config::Architecture::Model, 0, 42);
            Model::ModernBert(ModernBert::load(be, c, &weights)?)
        }
        (None, runtime::ModelConfig::Bert(mut c)) => {
            c.architecture = Some(runtime::config::Architecture::Model); // the encoder alone, like BertModel
            let weights = runtime::init::RandomWeights::bert(&c, runtime::config::Architecture::Model, 0, 42);
            Model::Bert(runtime::Bert::load(be, c, &weights)?)
        }
    };
    let c = m.config();
    let ids: Vec<Vec<u32>> = (0..batch).map(|b| kernels::testing::rand_ids(seq, b as u32 + 1, (c.vocab_size() as u32).min(50_000))).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let run = || -> Result<f64, Failure> {
        let t0 = std::time::Instant::now();
        let b = m.batch(be, &seqs)?;
        let h = m.encode(be, &b, None)?;
        kernels::block_on(be.read(&h))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    run()?; // warm-up: kernel compilation, allocator, caches
    let mut times = (0..iters).map(|_| run()).collect::<Result<Vec<f64>, Failure>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (batch * seq) as f64;
    let flops = c.useful_flops(batch, seq);
    println!(
        "{} {} ({}), {}, batch {batch} x {seq}, {} thread(s): median {:.3} s, {:.1} GFLOP/s useful",
        be.device_info().backend,
        be.device_info().name,
        be.dtype().name(),
        model.or(config).map(|p| p.display().to_string()).unwrap_or_default(),
        rayon::current_num_threads(),
        median,
        flops / median / 1e9
    );
    let rss = peak_rss_mib(); // before the matmul-peak buffers
    let device_memory = be.device_memory();
    for (k, v) in be.device_info().details.iter().filter(|(k, _)| k == "GEMM path" || k == "weights stored as" || k == "activations stored as") {
        println!("{k}: {v}");
    }
    if let Some((in_use, peak)) = device_memory {
        println!("device memory: peak {:.0} MiB reserved by the allocator's pools, {:.0} MiB in use after the passes", mib(peak), mib(in_use));
    }
    if let Some(rows) = peak {
        println!("matmul peak {:.1} GFLOP/s ({} x {} x {}, best of 6)", matmul_peak(be, c.hidden_size(), rows)?, rows, c.hidden_size(), 3 * c.hidden_size());
    }
    let device = device_memory.map(|(_, r)| format!(" device_reserved_mib={:.0}", mib(r))).unwrap_or_default();
    println!("tokens_per_s={:.1} peak_rss_mib={:.0}{device}", tokens / median, rss);
    Ok(true)
}

fn serve_web(model: Option<&Path>, root: &Path, port: u16, public: bool) -> Outcome {
    if !root.join("index.html").is_file() {
        return Err(Failure(format!("{}: no index.html; build the page first with web/build.sh (or pass --root)", root.display())));
    }
    if let Some(m) = model {
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            if !m.join(f).is_file() {
                return Err(Failure(format!("{}: no {f}; --model expects a Hugging Face model folder", m.display())));
            }
        }
    }
    let host = if public { "0.0.0.0" } else { "127.0.0.1" };
    let listener = std::net::TcpListener::bind((host, port)).map_err(|e| Failure(format!("cannot listen on {host}:{port}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Failure(e.to_string()))?;
    eprintln!("serving {} at http://{addr}/{}", root.display(), model.map(|m| format!(" with model {}", m.display())).unwrap_or_default());
    let site = runtime::serve::Site { root: root.to_path_buf(), model: model.map(Path::to_path_buf), loopback: !public };
    site.serve(listener).map_err(|e| Failure(e.to_string()))?;
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An interrupted command leaves no temporary file behind (and no output: outputs appear
    // only when complete).
    let _ = ctrlc::set_handler(|| {
        runtime::output::remove_temporaries();
        eprintln!("\ninterrupted");
        std::process::exit(130);
    });
    let result: Outcome = (|| match &cli.command {
        Command::Embed { input, model, batch, pooling, normalize, output } => {
            on_backend!(model, |be| embed(&be, input, model, batch, *pooling, *normalize, output.as_deref()))
        }
        Command::FillMask { text, model, top_k, json } => on_backend!(model, |be| fill_mask(&be, text, model, *top_k, *json)),
        Command::Deid { input, model, batch, threshold, surrogate, surrogate_key, output } => {
            on_backend!(model, |be| deid(&be, input, model, batch, *threshold, *surrogate, surrogate_key.as_deref(), output.as_deref()))
        }
        Command::Classify { input, model, batch, pooling, output } => {
            on_backend!(model, |be| classify(&be, input, model, batch, *pooling, output.as_deref()))
        }
        Command::Check { model, reference, tol } => on_backend!(model, |be| run_check(&be, &model.dir(None)?, reference, *tol)),
        Command::Info { model } => on_backend!(model, |be| info(&be, &model.dir(Some(runtime::bundled::CLINICAL_SMALL))?)),
        Command::ServeWeb { model, no_model, root, port, public } => {
            let model = match (model, no_model) {
                (Some(m), _) => Some(m.clone()),
                (None, true) => None,
                (None, false) => Some(runtime::bundled::locate(runtime::bundled::DEID_SMALL).map_err(|e| Failure(e.to_string()))?),
            };
            serve_web(model.as_deref(), root, *port, *public)
        }
        Command::Bench { model, config, batch, seq, device, dtype, activations, threads, matmul_peak, matmul_rows, iters, gemm } => {
            set_threads(*threads)?;
            let peak = matmul_peak.then_some(*matmul_rows);
            match choose(*device, *dtype, *activations)? {
                Chosen::Cpu(_) if *gemm != kernels::linear::GemmPath::Auto => Err(Failure("--gemm chooses among the GPU's GEMMs; the CPU backend has its own".into())),
                Chosen::Cpu(be) => bench(&be, model.as_deref(), config.as_deref(), *batch, *seq, *iters, peak),
                Chosen::Gpu(be) => bench(&be.with_gemm(*gemm), model.as_deref(), config.as_deref(), *batch, *seq, *iters, peak),
            }
        }
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
