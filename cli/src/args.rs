//! The command line: every command and its arguments (clap), checked as they are parsed.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use runtime::args::{in_range, probability, MAX_THREADS};

use crate::Failure;

#[derive(Parser)]
#[command(name = "runtime-cli", version, about = "Run ModernBERT-family clinical encoders on any GPU or the CPU")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
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
pub enum DTypeArg {
    F32,
    /// Half-precision weight matrices (GPUs with shader-f16); with `--activations f16`, f16 end to
    /// end.
    F16,
    /// bfloat16 weights and products, f32 accumulation (the CPU backend; twice the f32 rate with
    /// AVX512-BF16).
    Bf16,
    /// int8 products inside the encoder layers (weights per output channel, activations per
    /// token, quantised at load and at run time; AVX512-VNNI or AVX-VNNI, else a portable loop
    /// with the same results), bf16 elsewhere: the CPU backend.
    Int8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActArg {
    F32,
    F16,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json); embed,
    /// fill-mask, info and deid default to the small models bundled in models/.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Where a model runs: the device, weight and activation precision, CPU threads.
#[derive(Args, Clone, Copy)]
pub struct BackendArgs {
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// Storage precision of the weights (arithmetic stays f32; int8: integer products, rescaled
    /// in f32).
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    pub dtype: DTypeArg,
    /// Storage precision of the activations on a GPU: f16 halves their memory and bandwidth and
    /// lets GEMMs take f16 operands (f32 arithmetic and accumulation inside every kernel).
    #[arg(long, value_enum, default_value_t = ActArg::F32)]
    pub activations: ActArg,
    /// CPU threads (default: all cores).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
    pub threads: Option<usize>,
}

impl ModelArgs {
    /// The model folder: `--model`, or the bundled model of the command.
    pub fn dir(&self, bundled: Option<&str>) -> Result<PathBuf, Failure> {
        match (&self.model, bundled) {
            (Some(dir), _) => Ok(dir.clone()),
            (None, Some(name)) => runtime::bundled::locate(name).map_err(|e| Failure(format!("no --model DIR given, and {e}"))),
            (None, None) => Err(Failure("--model DIR is required: a Hugging Face model folder (no bundled model fits this command)".into())),
        }
    }
}

#[derive(Args)]
pub struct InputArgs {
    /// A .txt file (one document), .jsonl (`text`, optional `id`), .csv (with --text-column), a
    /// directory of .txt files, or - for standard input.
    pub input: String,
    /// One document per line of a text file.
    #[arg(long)]
    pub lines: bool,
    /// The text column of a CSV file.
    #[arg(long)]
    pub text_column: Option<String>,
    /// The id column of a CSV file (default: the row number).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Format of standard input: txt, jsonl or csv.
    #[arg(long, value_parser = ["txt", "jsonl", "csv"])]
    pub format: Option<String>,
    /// Skip documents that cannot be used (invalid UTF-8, larger than --max-doc-bytes, a
    /// directory entry that is not a readable file) instead of stopping; each is reported.
    #[arg(long)]
    pub skip_invalid: bool,
    /// The largest document, in bytes: a larger one is refused with its id and size (or skipped
    /// with --skip-invalid); one up to this size is windowed like any long document.
    #[arg(long, default_value_t = runtime::input::DEFAULT_MAX_DOC_BYTES, allow_negative_numbers = true, value_parser = in_range(1, 1 << 34))]
    pub max_doc_bytes: usize,
}

#[derive(Args, Clone, Copy)]
pub struct BatchArgs {
    /// Content tokens per window for documents longer than that (default: the model's context).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, runtime::config::MAX_CONTEXT as u64))]
    pub window: Option<usize>,
    /// Tokens shared by consecutive windows (default: an eighth of the window).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(0, runtime::config::MAX_CONTEXT as u64))]
    pub overlap: Option<usize>,
    /// Most tokens per batch (default: 16,384, or what the device can hold).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 1 << 24))]
    pub batch_tokens: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    Mean,
    Cls,
}

/// The input settings' flags, for the messages that say which one to change.
pub const INPUT_FLAGS: runtime::input::SettingNames =
    runtime::input::SettingNames { format: "--format", text_column: "--text-column", skip_invalid: "--skip-invalid", max_doc_bytes: "--max-doc-bytes" };

/// Which share of the input to work on, and how it is written (see `shard.rs`, `parts.rs`).
#[derive(Args)]
pub struct ShardArgs {
    /// Work on shard K of N (K from 0): the documents whose index i in the input has i mod N = K.
    /// Default: from a Slurm job array (SLURM_ARRAY_TASK_ID, _COUNT, _MIN) or a Kubernetes Indexed
    /// Job (JOB_COMPLETION_INDEX) when run in one. A sharded run needs -o FILE; it is written as
    /// fsync'd parts in FILE.parts/, resumes where it stopped when rerun, and ends with FILE and
    /// FILE.shard.json for `runtime-cli merge`.
    #[arg(long, value_name = "K/N", value_parser = crate::shard::parse)]
    pub shard: Option<crate::shard::Shard>,
    /// A Kubernetes Indexed Job's number of completions (default: $RUNTIME_CLI_SHARD_COUNT).
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, crate::shard::MAX_SHARDS as u64))]
    pub shard_count: Option<usize>,
    /// Documents read, batched and written together; a sharded run is resumed a chunk at a time.
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
    pub chunk_docs: usize,
}

/// What the commands over documents (embed, deid, classify) share: the input, the model, the
/// batching and the shard.
#[derive(Args)]
pub struct DocumentArgs {
    #[command(flatten)]
    pub input: InputArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    #[command(flatten)]
    pub shard: ShardArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// One embedding per document.
    #[command(
        after_help = "Examples:\n  runtime-cli embed examples/notes.txt            # the bundled clinical-small\n  runtime-cli embed notes.txt --model DIR\n  runtime-cli embed notes.jsonl --model DIR --normalize -o notes.npy\n  runtime-cli embed notes.csv --text-column note --model DIR -o notes.safetensors"
    )]
    Embed {
        #[command(flatten)]
        docs: DocumentArgs,
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
    #[command(
        after_help = "Examples:\n  runtime-cli fill-mask \"The patient denies chest [MASK].\"\n  runtime-cli fill-mask \"The patient denies chest [MASK].\" --model DIR --top-k 5"
    )]
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
    #[command(
        after_help = "Examples:\n  runtime-cli deid examples/notes.txt             # the bundled deid-small\n  runtime-cli deid note.txt --model DIR\n  runtime-cli deid notes.jsonl --model DIR --surrogate --threshold 0.2 -o deid.jsonl\n  runtime-cli deid notes.jsonl --shift-dates --surrogate-key deid.key -o deid.jsonl\n  runtime-cli deid notes.jsonl --hash --surrogate-key deid.key"
    )]
    Deid {
        #[command(flatten)]
        docs: DocumentArgs,
        /// A word is PHI when P(PHI) ≥ this (0 to 1); below 0.5 favours recall (a missed name is
        /// a leak).
        #[arg(long, default_value_t = runtime::deid::DEFAULT_THRESHOLD, allow_negative_numbers = true, value_parser = probability)]
        threshold: f32,
        /// Replace PHI with fake values of the same form instead of [CATEGORY] placeholders,
        /// consistent within the run and drawn under a fresh secret key.
        #[arg(long, conflicts_with = "hash")]
        surrogate: bool,
        /// Surrogates as --surrogate, but every date of a document moves by the same number of
        /// days (1 to 365, back or forward, drawn from the key and the document's id), so that
        /// the intervals between its dates survive.
        #[arg(long, conflicts_with = "hash")]
        shift_dates: bool,
        /// Replace each value by a keyed hash, `[NAME:0123456789abcdef]`: the same value gets
        /// the same hash under one key (records stay linkable), and nobody without the key can
        /// test a guess against it. The key (the salt) comes from --surrogate-key.
        #[arg(long)]
        hash: bool,
        /// With --surrogate, --shift-dates or --hash: the secret in this file (at least 16
        /// bytes, e.g. `head -c 32 /dev/urandom > deid.key`), so that other runs with the same
        /// file give the same surrogates, offsets and hashes. Keep it as secret as the notes.
        /// Default: a fresh key per run.
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
        docs: DocumentArgs,
        /// Pooling (default: the config's classifier_pooling).
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// Output JSONL file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Assemble the outputs of a sharded run (`--shard`, a Slurm array, a Kubernetes Indexed Job)
    /// into one, in input order; refuses unless every document of the input is there exactly once.
    #[command(after_help = "Examples:\n  runtime-cli merge -o notes.deid.jsonl out/deid-*.jsonl\n  runtime-cli merge -o notes.npy out/embed-*.npy")]
    Merge {
        /// The merged output: JSONL for JSONL shards; .npy, .safetensors or .jsonl for embeddings
        /// written as .npy or .safetensors.
        #[arg(short, long)]
        output: PathBuf,
        /// Every shard's output (each with its FILE.shard.json beside it).
        #[arg(required = true)]
        shards: Vec<PathBuf>,
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
    /// Serve models over HTTP to existing clients: text-embeddings-inference's routes (/embed,
    /// /predict, /tokenize, /info, /health, /metrics), OpenAI's /v1/embeddings, Presidio's
    /// /analyze, /anonymize and /supportedentities, and /deid. Requests from every client are
    /// batched together per model.
    #[command(
        after_help = "Examples:\n  runtime-cli serve                                   # bundled clinical-small (embeddings) and deid-small (de-identification)\n  runtime-cli serve --model enc=DIR --model deid=DIR2 --port 8080\n  runtime-cli serve --host 0.0.0.0 --api-key-file key.txt   # other machines, with a key"
    )]
    Serve(ServeArgs),
    /// Serve the browser de-identification page (built by web/build.sh) on this machine, with a
    /// model folder as the page's default model. Notes pasted into the page stay in the browser.
    #[command(
        after_help = "Examples:\n  web/build.sh && runtime-cli serve-web            # the bundled deid-small as the page's model\n  runtime-cli serve-web --model DIR\n  runtime-cli serve-web --no-model --port 8080     # pick a folder in the page"
    )]
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
    #[command(
        after_help = "Examples:\n  runtime-cli bench --config tests/data/modernbert-configs/ModernBERT-base.config.json --batch 8 --seq 128 --threads 1\n  runtime-cli bench --model DIR --batch 1 --seq 8192 --device gpu"
    )]
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
        /// the unit path), unit, cmma, double-cmma, tiled (the register-tiled kernel of CPU adapters).
        #[arg(long, default_value = "auto", value_parser = parse_gemm)]
        gemm: kernels::linear::GemmPath,
        /// Then one more pass with every kernel launch counted and timed on its own (a GPU's
        /// launches wait for each other while profiled): a table per kernel, and the distinct
        /// pipelines the first pass compiled.
        #[arg(long)]
        profile: bool,
    },
}

pub fn parse_gemm(s: &str) -> Result<kernels::linear::GemmPath, String> {
    kernels::linear::GemmPath::parse(s).ok_or_else(|| format!("unknown GEMM path {s:?}; expected auto, unit, cmma, double-cmma or tiled"))
}

#[derive(Args)]
pub struct ServeArgs {
    /// A model folder to serve, optionally named (`NAME=DIR`; default name: the folder's name).
    /// Repeat for several. Default: the bundled clinical-small and deid-small.
    #[arg(long = "model", value_name = "[NAME=]DIR")]
    pub models: Vec<String>,
    /// The address to listen on: loopback unless another is asked for.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// How long a request may wait for others to share its batch (0: a batch takes what is
    /// queued when the model is free, and nothing waits).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = in_range(0, 10_000))]
    pub max_batch_wait_ms: usize,
    /// Documents waiting per model, at most: beyond that a request is answered 429 with Retry-After.
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true, value_parser = in_range(1, 1 << 24))]
    pub max_queue_docs: usize,
    /// The most work a model's queue holds, in milliseconds at the model's recent rate: a request
    /// that would wait longer is answered 429 at once (clients retry; the server recovers its
    /// full rate within about this long after a burst).
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = in_range(1, 3_600_000))]
    pub max_queue_ms: usize,
    /// Requests in the server at once, at most (429 beyond, as TEI's flag of the same name):
    /// with the body limit, this bounds the memory requests can hold.
    #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
    pub max_concurrent_requests: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = 16 << 20, allow_negative_numbers = true, value_parser = in_range(1, 1 << 32))]
    pub max_body_bytes: usize,
    /// Most inputs in one request (413 beyond).
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
    pub max_inputs: usize,
    /// Most tokens in one input (413 beyond); up to this, a long input is windowed like
    /// `runtime-cli embed` does (or cut to one window with TEI's `truncate`).
    #[arg(long, default_value_t = 1 << 17, allow_negative_numbers = true, value_parser = in_range(1, 1 << 26))]
    pub max_input_tokens: usize,
    /// A request not answered within this many milliseconds gets 503.
    #[arg(long, default_value_t = 60_000, allow_negative_numbers = true, value_parser = in_range(1, 3_600_000))]
    pub timeout_ms: usize,
    /// On SIGTERM or Ctrl-C, how long requests in flight may take to finish.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = in_range(0, 3600))]
    pub shutdown_timeout_s: usize,
    /// A file holding the API key clients must send (`Authorization: Bearer KEY`); every route
    /// but /health asks for it. Prefer it to --api-key: a file keeps the key out of `ps`.
    #[arg(long, conflicts_with = "api_key")]
    pub api_key_file: Option<PathBuf>,
    /// The API key itself, as TEI's flag takes it (visible to other users in the process list;
    /// --api-key-file is safer).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The key of `/deid`'s surrogates (`"surrogate": true`), as `runtime-cli deid
    /// --surrogate-key` takes it (at least 16 secret bytes); default: a fresh random key per
    /// server run, so the same original gets the same surrogate until the server restarts.
    #[arg(long)]
    pub surrogate_key: Option<PathBuf>,
    /// De-identification's decision threshold: a word is PHI when P(PHI) ≥ this, as in
    /// `runtime-cli deid`.
    #[arg(long, default_value_t = runtime::deid::DEFAULT_THRESHOLD, allow_negative_numbers = true, value_parser = probability)]
    pub threshold: f32,
}
