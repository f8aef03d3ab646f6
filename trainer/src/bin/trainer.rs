//! `trainer`: continued masked-LM pretraining, fine-tuning and parity checks of ModernBERT-family
//! encoders, on the runtime's kernels (any GPU through wgpu, CUDA, or the CPU).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kernels::device::{cuda_device, wgpu_device, AdapterChoice};
use kernels::{Backend, CpuBackend, GpuBackend};
use runtime::Encoder;
use runtime::args::{fraction, in_range, non_negative, positive, probability, MAX_THREADS};
use runtime::weights::Checkpoint;
use trainer::dist::Dist;

/// The longest sequence a command line may ask for.
const MAX_CONTEXT: u64 = runtime::config::MAX_CONTEXT as u64;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train ModernBERT-family encoders on the runtime's kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    /// The CPU backend.
    Cpu,
    /// The wgpu GPU backend (Vulkan, Metal, DX12), software adapters included.
    Gpu,
    /// NVIDIA GPUs through cubecl's CUDA runtime (builds with `--features cuda`).
    Cuda,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum DTypeArg {
    F32,
    /// Mixed precision on the CPU: bf16 products (twice the f32 rate with AVX512-BF16), f32
    /// master weights, gradients and optimizer state.
    Bf16,
    /// Mixed precision on the GPU (adapters with shader-f16): the products take f16 copies of
    /// the f32 master weights; activations, gradients and optimizer state stay f32.
    F16,
    /// Evaluation only, on the CPU: the encoder layers' products in int8 (`runtime-cli --dtype
    /// int8`), everything else in bf16.
    Int8,
}

/// int8 is an inference format: training keeps f32 master weights and gradients.
fn training_dtype(dtype: DTypeArg) -> Result<(), String> {
    if dtype == DTypeArg::Int8 {
        return Err("--dtype int8 is for inference (evaluate, eval-deid); train in f32 or bf16 (CPU) or f16 (GPU)".into());
    }
    Ok(())
}

/// Run `$body` with `$be` bound to the chosen backend.
macro_rules! on_device {
    ($device:expr, $dtype:expr, |$be:ident| $body:expr) => {{
        let dtype = match $dtype {
            DTypeArg::F32 => kernels::backend::DType::F32,
            DTypeArg::Bf16 => kernels::backend::DType::BF16,
            DTypeArg::F16 => kernels::backend::DType::F16,
            DTypeArg::Int8 => kernels::backend::DType::Int8,
        };
        match $device {
            Device::Cpu if dtype == kernels::backend::DType::F16 => Err("--dtype f16 trains on a GPU; on the CPU use --dtype bf16 (or f32)".to_string()),
            Device::Cpu => {
                let $be = CpuBackend::new().with_dtype(dtype).map_err(|e| e.to_string())?;
                $body
            }
            _ if dtype == kernels::backend::DType::Int8 => Err("--dtype int8 evaluates on the CPU backend (--device cpu)".to_string()),
            _ if dtype == kernels::backend::DType::BF16 => Err("--dtype bf16 trains on the CPU backend; on a GPU use --dtype f16 (or f32)".to_string()),
            Device::Gpu => {
                let $be = GpuBackend::new(wgpu_device(AdapterChoice::Default).map_err(|e| e.to_string())?).with_dtype(dtype).map_err(|e| e.to_string())?;
                $body
            }
            Device::Cuda => {
                let $be = GpuBackend::new(cuda_device(0).map_err(|e| e.to_string())?).with_dtype(dtype).map_err(|e| e.to_string())?;
                $body
            }
        }
    }};
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Train,
    Test,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreArg {
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    TokenClassification,
    SequenceClassification,
}

/// `trainer prepare`'s flags for the input settings it has, for the reader's messages.
const PREPARE_FLAGS: runtime::input::SettingNames = runtime::input::SettingNames { text_column: "--text-column", format: "format", skip_invalid: "skip_invalid", max_doc_bytes: "max_doc_bytes" };

/// Where a training command runs: the device, the weights' precision, CPU threads.
#[derive(Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
    dtype: DTypeArg,
    #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Tokenize text once into uint16 shards for pretraining: each document cut into
    /// `[CLS] … [SEP]` chunks of at most --max-seq-len tokens, a held-out eval split.
    #[command(after_help = "Example:\n  trainer prepare notes/ mimic.jsonl --tokenizer ModernBERT-base --max-seq-len 1024 --eval-fraction 0.01 -o data/clinical")]
    Prepare {
        /// Text files (one document each, or one per line with --lines), JSONL with a "text"
        /// field, CSV (with --text-column), or directories of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// A folder with tokenizer.json (a model folder).
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 8192, allow_negative_numbers = true, value_parser = in_range(3, MAX_CONTEXT))]
        max_seq_len: usize,
        /// Fraction of documents held out for evaluation.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = fraction)]
        eval_fraction: f64,
        #[arg(long)]
        lines: bool,
        #[arg(long)]
        text_column: Option<String>,
        /// Inputs held out whole (every document to the eval split), e.g. `trainer corpus`'s
        /// heldout.jsonl.
        #[arg(long)]
        eval_input: Vec<PathBuf>,
        /// The dataset directory to write.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Assemble the bundled models' public clinical corpus (ACI-BENCH, MTS-Dialog, NegEx, ICD-9
    /// descriptions) from the repository's data/ folder into train.jsonl and heldout.jsonl.
    #[command(after_help = "Example:\n  trainer corpus --data data -o target/models/corpus")]
    Corpus {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Fraction of documents held out (a seeded hash of each document's source).
        #[arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = fraction)]
        heldout_fraction: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Train a byte-level BPE tokenizer (ModernBERT's layout and special tokens) on the "text"
    /// fields of a JSONL file.
    #[command(after_help = "Example:\n  trainer tokenizer target/models/corpus/train.jsonl --vocab-size 8192 -o target/models/tokenizer")]
    Tokenizer {
        input: PathBuf,
        #[arg(long, default_value_t = 8192, allow_negative_numbers = true, value_parser = in_range(256, 1 << 20))]
        vocab_size: usize,
        /// The folder to write tokenizer.json, tokenizer_config.json and special_tokens_map.json to.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Masked-token loss and top-1/5/10/25 accuracy on a prepared dataset's eval split (15%
    /// masking at seeded positions), for a model folder or for a run's untrained initialisation.
    #[command(after_help = "Examples:\n  trainer evaluate --model runs/small/final --data target/models/dataset\n  trainer evaluate --init-of models/clinical-small.toml --data target/models/dataset")]
    Evaluate {
        #[arg(long, conflicts_with = "init_of", required_unless_present = "init_of")]
        model: Option<PathBuf>,
        /// A pretraining run file: evaluate the model it starts from.
        #[arg(long)]
        init_of: Option<PathBuf>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 8192, allow_negative_numbers = true, value_parser = in_range(1, 1 << 24))]
        batch_tokens: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// Weight precision of the evaluated model (int8: the CPU's int8 products).
        #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
        dtype: DTypeArg,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
        threads: Option<usize>,
    },
    /// Generate synthetic clinical notes with PHI inserted and its character offsets (JSONL
    /// `{"text", "spans"}`), for training and testing de-identification; seeded.
    #[command(after_help = "Example:\n  trainer synth-deid --split train --notes 3000 --seed 1 -o target/models/deid-train.jsonl")]
    SynthDeid {
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// `test` draws notes, names, streets and cities from parts the train split never uses.
        #[arg(long, value_enum)]
        split: SplitArg,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 10_000_000))]
        notes: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Score a de-identification model on span-annotated notes as `runtime-cli deid` runs it:
    /// per-category precision/recall/F1 and the fraction of PHI characters left unredacted.
    #[command(after_help = "Example:\n  trainer eval-deid --model models/deid-small --data target/models/deid-test.jsonl")]
    EvalDeid {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = runtime::deid::DEFAULT_THRESHOLD, allow_negative_numbers = true, value_parser = probability)]
        threshold: f32,
        /// Score the model's spans alone, without the pattern rules and dictionaries every
        /// tool combines them with (to see what each part contributes).
        #[arg(long)]
        model_only: bool,
        /// Also write the report (Markdown) and its JSON next to it (`.json`).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write every leaked value and every over-redacted run of words here (JSONL). It
        /// quotes the evaluation notes: keep it with them.
        #[arg(long)]
        errors: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// Weight precision of the scored model (int8: the CPU's int8 products).
        #[arg(long, value_enum, default_value_t = DTypeArg::F32)]
        dtype: DTypeArg,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
        threads: Option<usize>,
    },
    /// Copy a model folder with its weights stored in f16 or bf16 (half the size) or f32.
    #[command(after_help = "Example:\n  trainer export runs/small/final --dtype f16 -o models/clinical-small")]
    Export {
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = StoreArg::F16)]
        dtype: StoreArg,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Continued masked-LM pretraining in phases, as a TOML run file describes (see the README).
    #[command(after_help = "Examples:\n  trainer pretrain --config run.toml\n  trainer pretrain --config run.toml --resume   # continue from the last checkpoint")]
    Pretrain {
        #[arg(long)]
        config: PathBuf,
        /// Continue from the newest checkpoint under the run's output folder.
        #[arg(long)]
        resume: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Fine-tune a classification head from any masked-LM or task checkpoint, ModernBERT or
    /// classic BERT, evaluating every epoch (per-label precision/recall/F1) and keeping the best.
    #[command(after_help = "Examples:\n  trainer finetune --task token-classification --model BioClinical-ModernBERT-base \\\n      --train deid-train.jsonl --eval deid-valid.jsonl -o deid-model\n  trainer finetune --task token-classification --model Bio_ClinicalBERT \\\n      --train deid-train.jsonl --eval deid-valid.jsonl -o bert-deid-model\n  trainer finetune --task sequence-classification --model DIR --train train.csv --eval valid.csv \\\n      --text-column text --label-column label -o classifier\n\nToken classification reads JSONL lines {\"text\": …, \"spans\": [{\"start\": 10, \"end\": 22, \"label\": \"NAME\"}]}\n(character offsets); sequence classification reads JSONL {\"text\", \"label\"} or CSV.")]
    Finetune {
        #[arg(long, value_enum)]
        task: TaskArg,
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        train: PathBuf,
        #[arg(long)]
        eval: PathBuf,
        /// The fine-tuned model folder to write.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = in_range(1, 10_000))]
        epochs: usize,
        #[arg(long, default_value_t = 2e-5, allow_negative_numbers = true, value_parser = positive)]
        lr: f64,
        #[arg(long, default_value_t = 0.01, allow_negative_numbers = true, value_parser = non_negative)]
        weight_decay: f64,
        #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = in_range(1, 1 << 16))]
        batch_size: usize,
        /// Micro-batches per step, their gradients summed: the same step in less memory; under
        /// MPI each rank computes its share of them (default: 1, or the number of ranks).
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 1 << 16))]
        grad_accum: Option<usize>,
        #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = in_range(3, MAX_CONTEXT))]
        max_seq_len: usize,
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = fraction)]
        warmup_ratio: f64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        text_column: Option<String>,
        #[arg(long)]
        label_column: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time training steps (forward, backward, AdamW) of the MLM with 30% of the tokens masked:
    /// median tokens/s and peak memory; last line `tokens_per_s=<v> peak_rss_mib=<v>`.
    #[command(after_help = "Example:\n  trainer bench --config tests/data/modernbert-configs/ModernBERT-base.config.json --batch 4 --seq 512 --threads 1")]
    Bench {
        /// A config.json: the model is built with random seeded weights.
        #[arg(long)]
        config: PathBuf,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, 1 << 20))]
        batch: usize,
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(3, MAX_CONTEXT))]
        seq: usize,
        /// Timed steps (after one warm-up).
        #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = in_range(1, 10_000))]
        iters: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Replay a transformers training fixture (gradients, optimizer steps, 10-step trajectories,
    /// gradient accumulation, token classification) and compare every tensor.
    #[command(after_help = "Examples:\n  trainer check --model tests/fixtures/tiny-modernbert-mlm --reference tests/fixtures/reference.safetensors\n  trainer check --model tests/fixtures/tiny-modernbert-mlm --model tests/fixtures/tiny-modernbert-tokcls \\\n      --reference tests/fixtures-training/training.safetensors --device gpu\n  trainer check --model tests/fixtures-bert/tiny-bert-mlm --model tests/fixtures-bert/tiny-bert-tokcls \\\n      --reference tests/fixtures-bert/reference.safetensors")]
    Check {
        /// Model folders: the masked-LM model, and the token classifier for `tokcls.*` (repeat).
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        /// `reference.safetensors` (gradients, one AdamW step) or `training.safetensors`.
        #[arg(long)]
        reference: PathBuf,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// CPU threads (default: all cores).
        #[arg(long, allow_negative_numbers = true, value_parser = in_range(1, MAX_THREADS))]
        threads: Option<usize>,
    },
}

fn check<B: Backend>(be: &B, models: &[PathBuf], reference: &PathBuf) -> Result<bool, String> {
    let r = Checkpoint::open_file(reference).map_err(|e| e.to_string())?;
    let report = trainer::check::run(be, &trainer::check::Models { dirs: models }, &r).map_err(|e| e.to_string())?;
    print!("{}", report.render());
    Ok(report.passed())
}

/// A failure on one rank of a job stops every rank (none is left waiting for it), with the
/// message and the rank.
fn fail_job(dist: &Dist, message: String) -> String {
    if dist.size() > 1 {
        eprintln!("error on rank {} of {}: {message}", dist.rank(), dist.size());
        dist.abort(2);
    }
    message
}

fn set_threads(threads: &Option<usize>) -> Result<(), String> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads((*n).max(1)).build_global().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The data-parallel job this process is a rank of (a single process unless started by
/// `mpirun` or `srun`), announced once by rank 0.
fn job() -> Result<Dist, String> {
    let dist = Dist::from_environment().map_err(|e| e.to_string())?;
    if dist.size() > 1 && dist.is_root() {
        eprintln!("data-parallel over {} ranks (MPI): each takes its micro-batches of every step; rank 0 writes", dist.size());
    }
    Ok(dist)
}

fn pretrain<B: Backend>(be: &B, dist: &Dist, config: &PathBuf, resume: bool) -> Result<bool, String> {
    let c = trainer::pretrain::RunConfig::from_file(config).map_err(|e| e.to_string())?;
    let opts = trainer::pretrain::RunOptions { resume, stop_after: None };
    let state = trainer::pretrain::run_distributed(be, &c, &opts, dist, |m| {
        let ranks = if m.ranks > 1 { format!(", allreduce {:.3} s / {:.1} MB per step", m.allreduce_s_per_step, m.allreduce_bytes_per_step as f64 / 1e6) } else { String::new() };
        eprintln!(
            "[{}] {} step {:>6} loss {:.4} top1 {:.3} top10 {:.3} lr {:.3e} mask {:.3} {:.0} tok/s{ranks}",
            m.split, m.phase, m.step, m.loss, m.top1, m.top10, m.lr, m.mask_rate, m.tokens_per_s
        )
    })
    .map_err(|e| e.to_string())?;
    if dist.is_root() {
        println!("trained {} steps on {} tokens; model in {}", state.global_step, state.tokens, c.output.join("final").display());
    }
    Ok(true)
}

fn finetune<B: Backend>(be: &B, dist: &Dist, o: &trainer::finetune::FinetuneOptions) -> Result<bool, String> {
    let r = trainer::finetune::finetune_distributed(be, o, dist, |e| {
        eprintln!("epoch {}: train loss {:.4}, eval loss {:.4}, F1 {:.4}, accuracy {:.4}", e.epoch, e.train_loss, e.eval_loss, e.f1, e.accuracy);
        for l in &e.labels {
            eprintln!("    {:<24} P {:.3}  R {:.3}  F1 {:.3}  ({})", l.label, l.precision, l.recall, l.f1, l.support);
        }
    })
    .map_err(|e| e.to_string())?;
    if !dist.is_root() {
        return Ok(true);
    }
    if r.truncated > 0 {
        eprintln!("note: {} documents longer than --max-seq-len were truncated for training/evaluation", r.truncated);
    }
    let best = &r.epochs[r.best];
    println!("best epoch {} (F1 {:.4}) saved to {}; labels {:?}", best.epoch, best.f1, o.output.display(), r.labels);
    Ok(true)
}

fn evaluate<B: Backend>(be: &B, model: Option<&std::path::Path>, init_of: Option<&std::path::Path>, data: &PathBuf, batch_tokens: usize, seed: u64) -> Result<bool, String> {
    let (m, tok, what) = match (model, init_of) {
        (Some(dir), _) => {
            let (m, t) = trainer::pretrain::load_masked_lm(be, dir).map_err(|e| e.to_string())?;
            (m, t, dir.display().to_string())
        }
        (None, Some(run)) => {
            let c = trainer::pretrain::RunConfig::from_file(run).map_err(|e| e.to_string())?;
            let (m, t) = trainer::pretrain::initial_model(be, &c).map_err(|e| e.to_string())?;
            (m, t, format!("the initialisation of {}", run.display()))
        }
        (None, None) => return Err("give --model DIR or --init-of RUN.toml".into()),
    };
    let r = trainer::pretrain::heldout_metrics(be, &m, &tok, data, batch_tokens, seed).map_err(|e| e.to_string())?;
    println!("{what}: held-out masked tokens (15%): loss {:.4}, top-1 {:.4}, top-5 {:.4}, top-10 {:.4}, top-25 {:.4}", r.loss, r.top1, r.top5, r.top10, r.top25);
    println!("{}", serde_json::json!({"model": what, "loss": r.loss, "top1": r.top1, "top5": r.top5, "top10": r.top10, "top25": r.top25}));
    Ok(true)
}

fn eval_deid<B: Backend>(be: &B, model: &std::path::Path, data: &std::path::Path, threshold: f32, model_only: bool, output: Option<&std::path::Path>, errors: Option<&std::path::Path>) -> Result<bool, String> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(format!("--threshold {threshold}: expected a probability between 0 and 1"));
    }
    let detector = if model_only { trainer::deid_eval::Detector::ModelOnly } else { trainer::deid_eval::Detector::Combined };
    let (r, errs) = trainer::deid_eval::evaluate(be, model, data, threshold, detector).map_err(|e| e.to_string())?;
    if let Some(path) = errors {
        let lines: String = errs.iter().map(|e| format!("{e}\n")).collect();
        trainer::data::write_atomic(path, lines.as_bytes()).map_err(|e| e.to_string())?;
    }
    let text = format!("De-identification scores of {} on {}\n\n{}", model.display(), data.display(), r.render());
    print!("{text}");
    if let Some(path) = output {
        trainer::data::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())?;
        trainer::data::write_atomic(&path.with_extension("json"), &serde_json::to_vec_pretty(&r).expect("json")).map_err(|e| e.to_string())?;
    }
    Ok(true)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench<B: Backend>(be: &B, config: &PathBuf, batch: usize, seq: usize, iters: usize) -> Result<bool, String> {
    use runtime::config::Architecture;
    use trainer::backward::{forward_backward, Grads, Target};
    if batch == 0 || seq < 3 || iters == 0 {
        return Err("--batch and --iters must be at least 1, --seq at least 3".into());
    }
    let mut c = runtime::ModernBertConfig::from_file(config).map_err(|e| e.to_string())?;
    c.architecture = Some(Architecture::MaskedLm);
    let weights = runtime::init::RandomWeights::new(&c, Architecture::MaskedLm, 0, 42);
    let mut model = runtime::ModernBert::load_trainable(be, c.clone(), &weights).map_err(|e| e.to_string())?;
    let seqs: Vec<Vec<u32>> = (0..batch).map(|b| runtime::init::Rng::new(b as u64 + 1).ids(seq, c.vocab_size.min(50_000))).collect();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    // 30% of the tokens labelled (every third-ish position), like ModernBERT's pretraining.
    let rows: Vec<u32> = (0..(batch * seq) as u32).filter(|r| r % 10 < 3).collect();
    let ids = seqs.concat();
    let labels: Vec<u32> = rows.iter().map(|&r| ids[r as usize]).collect();
    let mut opt = trainer::optim::Optimizer::new(trainer::optim::OptimizerConfig { kind: trainer::optim::OptimizerKind::AdamW, lr: 1e-4, betas: (0.9, 0.98), eps: 1e-6, weight_decay: 1e-5, grad_clip: None });
    let mut step = || -> Result<f64, String> {
        let t0 = std::time::Instant::now();
        let b = model.batch(be, &refs).map_err(|e| e.to_string())?;
        let mut grads = Grads::default();
        forward_backward(be, &model, &b, &ids, &Target::MaskedLm { rows: &rows, labels: &labels }, 1.0 / rows.len() as f32, &mut grads).map_err(|e| e.to_string())?;
        opt.step(be, &mut model, &grads, 1e-4, false).map_err(|e| e.to_string())?;
        Ok(t0.elapsed().as_secs_f64())
    };
    step()?;
    let mut times = (0..iters).map(|_| step()).collect::<Result<Vec<f64>, String>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!("{} ({}), {}, batch {batch} x {seq}, {} thread(s): median step {:.3} s (forward, backward, AdamW; 30% masked)", be.device_info().backend, be.device_info().name, config.display(), rayon::current_num_threads(), median);
    println!("tokens_per_s={:.1} peak_rss_mib={:.0}", (batch * seq) as f64 / median, peak_rss_mib());
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Corpus { data, heldout_fraction, seed, output } => (|| {
            let r = trainer::corpus::build(data, output, *heldout_fraction, *seed).map_err(|e| e.to_string())?;
            for (source, n) in &r.sources {
                println!("{n:>6} documents from {source}");
            }
            println!("train {} documents ({} characters), held out {} documents ({} characters) in {}", r.train_documents, r.train_chars, r.heldout_documents, r.heldout_chars, output.display());
            Ok(true)
        })(),
        Command::Tokenizer { input, vocab_size, output } => (|| {
            let n = trainer::corpus::train_tokenizer(input, *vocab_size, output).map_err(|e| e.to_string())?;
            println!("{n} tokens in {}", output.join("tokenizer.json").display());
            Ok(true)
        })(),
        Command::Evaluate { model, init_of, data, batch_tokens, seed, device, dtype, threads } => (|| {
            set_threads(threads)?;
            on_device!(device, *dtype, |be| evaluate(&be, model.as_deref(), init_of.as_deref(), data, *batch_tokens, *seed))
        })(),
        Command::SynthDeid { data, split, notes, seed, output } => (|| {
            let split = match split {
                SplitArg::Train => trainer::synth::Split::Train,
                SplitArg::Test => trainer::synth::Split::Test,
            };
            let v = trainer::synth::generate(data, split, *notes, *seed).map_err(|e| e.to_string())?;
            trainer::data::write_jsonl(output, &v).map_err(|e| e.to_string())?;
            let spans: usize = v.iter().map(|n| n.spans.len()).sum();
            println!("{} notes, {spans} PHI spans in {}", v.len(), output.display());
            Ok(true)
        })(),
        Command::EvalDeid { model, data, threshold, model_only, output, errors, device, dtype, threads } => (|| {
            set_threads(threads)?;
            on_device!(device, *dtype, |be| eval_deid(&be, model, data, *threshold, *model_only, output.as_deref(), errors.as_deref()))
        })(),
        Command::Export { model, dtype, output } => (|| {
            let d = match dtype {
                StoreArg::F32 => runtime::weights::StoredDtype::F32,
                StoreArg::F16 => runtime::weights::StoredDtype::F16,
                StoreArg::Bf16 => runtime::weights::StoredDtype::BF16,
            };
            let bytes = trainer::checkpoint::export(model, output, d).map_err(|e| e.to_string())?;
            println!("{} ({:.1} MB of weights)", output.display(), bytes as f64 / 1e6);
            Ok(true)
        })(),
        Command::Prepare { inputs, tokenizer, max_seq_len, eval_fraction, lines, text_column, eval_input, output } => (|| {
            let tok = runtime::tokenize::Tokenizer::from_dir(tokenizer).map_err(|e| e.to_string())?;
            let opts = trainer::data::PrepareOptions { max_seq_len: *max_seq_len, eval_fraction: *eval_fraction, lines: *lines, text_column: text_column.clone(), eval_inputs: eval_input.clone(), input_names: PREPARE_FLAGS, ..Default::default() };
            let info = trainer::data::prepare(&tok, inputs, output, &opts).map_err(|e| e.to_string())?;
            let count = |s: &[trainer::data::ShardInfo]| (s.iter().map(|x| x.sequences).sum::<u64>(), s.iter().map(|x| x.tokens).sum::<u64>());
            let ((ts, tt), (es, et)) = (count(&info.train), count(&info.eval));
            println!("{} documents → train {ts} sequences / {tt} tokens, eval {es} sequences / {et} tokens ({} held-out documents) in {}", info.documents, info.eval_documents, output.display());
            Ok(true)
        })(),
        Command::Finetune { task, model, train, eval, output, epochs, lr, weight_decay, batch_size, grad_accum, max_seq_len, warmup_ratio, seed, text_column, label_column, run } => (|| {
            training_dtype(run.dtype)?;
            set_threads(&run.threads)?;
            let dist = job()?;
            let task = match task {
                TaskArg::TokenClassification => trainer::finetune::Task::TokenClassification,
                TaskArg::SequenceClassification => trainer::finetune::Task::SequenceClassification,
            };
            let mut o = trainer::finetune::FinetuneOptions::new(task, model.clone(), train.clone(), eval.clone(), output.clone());
            (o.epochs, o.lr, o.weight_decay, o.batch_size, o.max_seq_len, o.warmup_ratio, o.seed) = (*epochs, *lr, *weight_decay, *batch_size, *max_seq_len, *warmup_ratio, *seed);
            (o.text_column, o.label_column, o.grad_accum) = (text_column.clone(), label_column.clone(), *grad_accum);
            on_device!(run.device, run.dtype, |be| finetune(&be, &dist, &o)).map_err(|e| fail_job(&dist, e))
        })(),
        Command::Bench { config, batch, seq, iters, run } => (|| {
            training_dtype(run.dtype)?;
            set_threads(&run.threads)?;
            on_device!(run.device, run.dtype, |be| bench(&be, config, *batch, *seq, *iters))
        })(),
        Command::Pretrain { config, resume, run } => (|| {
            training_dtype(run.dtype)?;
            set_threads(&run.threads)?;
            let dist = job()?;
            on_device!(run.device, run.dtype, |be| pretrain(&be, &dist, config, *resume)).map_err(|e| fail_job(&dist, e))
        })(),
        Command::Check { model, reference, device, threads } => (|| {
            set_threads(threads)?;
            match device {
                Device::Cpu => check(&CpuBackend::new(), model, reference),
                Device::Gpu => check(&GpuBackend::new(wgpu_device(AdapterChoice::Default).map_err(|e| e.to_string())?), model, reference),
                Device::Cuda => check(&GpuBackend::new(cuda_device(0).map_err(|e| e.to_string())?), model, reference),
            }
        })(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
