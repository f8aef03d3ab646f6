//! `runtime-cli`: run ModernBERT-family models from Hugging Face folders. Thin: parse arguments,
//! pick the device, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kernels::device::{cuda_device, wgpu_device, AdapterChoice};
use kernels::{Backend, CpuBackend, GpuBackend};
use runtime::check::check;
use runtime::folder::ModelFolder;
use runtime::weights::Checkpoint;
use runtime::ModernBert;

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

#[derive(Subcommand)]
enum Command {
    /// Compare the model with reference tensors made by transformers (parity check).
    Check {
        /// Hugging Face model folder.
        #[arg(long)]
        model: PathBuf,
        /// Reference file in the schema of tests/fixtures/reference.safetensors.
        #[arg(long)]
        reference: PathBuf,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        device: Device,
        /// Largest acceptable absolute error on real tokens.
        #[arg(long, default_value_t = 1e-4)]
        tol: f32,
    },
    /// Describe a model folder and the device that would run it.
    Info {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, value_enum, default_value_t = Device::Auto)]
        device: Device,
    },
}

/// Exit status and message of a failed command.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

/// The backend a command runs on.
enum Chosen {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

fn choose(device: Device) -> Result<Chosen, Failure> {
    match device {
        Device::Cpu => Ok(Chosen::Cpu(CpuBackend::new())),
        Device::Gpu => Ok(Chosen::Gpu(GpuBackend::new(wgpu_device(AdapterChoice::Default)?))),
        Device::Cuda => Ok(Chosen::Gpu(GpuBackend::new(cuda_device(0)?))),
        Device::Auto => match wgpu_device(AdapterChoice::Default) {
            // A software rasteriser (lavapipe) is slower than the CPU backend.
            Ok(d) if d.device_type != "Cpu" => Ok(Chosen::Gpu(GpuBackend::new(d))),
            _ => Ok(Chosen::Cpu(CpuBackend::new())),
        },
    }
}

fn run_check<B: Backend>(be: &B, model: &PathBuf, reference: &PathBuf, tol: f32) -> Result<bool, Failure> {
    let folder = ModelFolder::open(model)?;
    let model = ModernBert::load(be, folder.config, &folder.checkpoint)?;
    let reference = Checkpoint::open_file(reference)?;
    let report = kernels::block_on(check(be, &model, &reference))?;
    let info = be.device_info();
    println!("device: {} ({})", info.backend, info.name);
    print!("{}", report.render());
    Ok(report.max_abs_err() <= tol)
}

fn run_info<B: Backend>(be: &B, model: &PathBuf) -> Result<(), Failure> {
    let folder = ModelFolder::open(model)?;
    let c = &folder.config;
    let params: usize = folder.checkpoint.names().filter_map(|n| folder.checkpoint.get(n)).map(|t| t.shape.iter().product::<usize>()).sum();
    let model = ModernBert::load(be, folder.config.clone(), &folder.checkpoint)?;
    println!("model: {}", folder.dir.display());
    println!("architecture: {}", c.architecture.map_or("(not stated; heads found from the weights)", |a| a.hf_name()));
    println!(
        "encoder: {} layers, hidden {}, {} heads of {}, intermediate {}, vocabulary {}, context {}",
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.head_dim(),
        c.intermediate_size,
        c.vocab_size,
        c.max_position_embeddings
    );
    let global = c.layer_types.iter().filter(|t| **t == runtime::config::LayerType::Full).count();
    println!(
        "attention: {global} global layers (RoPE θ {}), {} sliding-window layers (±{} tokens, RoPE θ {})",
        c.global_rope_theta,
        c.num_hidden_layers - global,
        c.window(),
        c.local_rope_theta
    );
    println!("parameters: {params} stored");
    let mut heads = Vec::new();
    if model.decoder.is_some() {
        heads.push("masked LM".to_string());
    }
    if model.classifier.is_some() {
        heads.push(format!("token / sequence classification ({} labels: {})", model.labels.len(), model.labels.join(", ")));
    }
    println!("heads: {}", if heads.is_empty() { "none (bare encoder)".into() } else { heads.join("; ") });
    match &folder.tokenizer {
        Some(t) => println!("tokenizer: {} ({} tokens)", t.source(), t.vocab_size()),
        None => println!("tokenizer: none (no tokenizer.json)"),
    }
    let info = be.device_info();
    println!("device: {} ({})", info.backend, info.name);
    for (k, v) in &info.details {
        println!("  {k}: {v}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check { model, reference, device, tol } => choose(*device).and_then(|b| match b {
            Chosen::Cpu(be) => run_check(&be, model, reference, *tol),
            Chosen::Gpu(be) => run_check(&be, model, reference, *tol),
        })
        .map(|ok| {
            if !ok {
                eprintln!("error: an error exceeds the tolerance {tol:e}");
            }
            ok
        }),
        Command::Info { model, device } => choose(*device).and_then(|b| match b {
            Chosen::Cpu(be) => run_info(&be, model),
            Chosen::Gpu(be) => run_info(&be, model),
        })
        .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
