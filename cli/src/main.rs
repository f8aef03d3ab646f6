//! `runtime-cli`: run ModernBERT-family models from Hugging Face folders. Thin: parse the
//! arguments (`args.rs`), set up the device (`device.rs`), run the command (`commands/`) over
//! the library; the output writers, the progress bar, the HTTP server (`serve/`) and the page's
//! static server are this binary's own.

mod args;
mod commands;
mod device;
mod output;
mod parts;
mod progress;
mod serve;
mod shard;
mod site;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use commands::{bench, check, classify, deid, embed, fill_mask, info, merge, serve_web, Outcome};
use device::{choose, set_threads, Chosen};

/// A failed command's message (exit status 2).
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An interrupted command leaves no temporary file behind (and no output: outputs appear
    // only when complete).
    // (`serve` handles SIGTERM and Ctrl-C itself: it finishes the requests in flight.)
    if !matches!(cli.command, Command::Serve(_)) {
        let _ = ctrlc::set_handler(|| {
            output::remove_temporaries();
            eprintln!("\ninterrupted");
            std::process::exit(130);
        });
    }
    let result: Outcome = (|| match &cli.command {
        Command::Embed { docs, pooling, normalize, output } => {
            on_backend!(docs.model.backend, |be| embed::embed(&be, docs, *pooling, *normalize, output.as_deref()))
        }
        Command::FillMask { text, model, top_k, json } => on_backend!(model.backend, |be| fill_mask::fill_mask(&be, text, model, *top_k, *json)),
        Command::Deid { docs, threshold, surrogate, shift_dates, hash, surrogate_key, output } => {
            let op = if *hash {
                deid::Replace::Hash
            } else if *shift_dates {
                deid::Replace::ShiftDates
            } else if *surrogate || surrogate_key.is_some() {
                deid::Replace::Surrogate
            } else {
                deid::Replace::Placeholder
            };
            on_backend!(docs.model.backend, |be| deid::deid(&be, docs, *threshold, op, surrogate_key.as_deref(), output.as_deref()))
        }
        Command::Classify { docs, pooling, output } => {
            on_backend!(docs.model.backend, |be| classify::classify(&be, docs, *pooling, output.as_deref()))
        }
        Command::Merge { output, shards } => merge::merge(output, shards),
        Command::Check { model, reference, tol } => on_backend!(model.backend, |be| check::run_check(&be, &model.dir(None)?, reference, *tol)),
        Command::Info { model } => on_backend!(model.backend, |be| info::info(&be, &model.dir(Some(runtime::bundled::CLINICAL_SMALL))?)),
        Command::Serve(args) => serve::serve(args),
        Command::ServeWeb { model, no_model, root, port, public } => {
            let model = match (model, no_model) {
                (Some(m), _) => Some(m.clone()),
                (None, true) => None,
                (None, false) => Some(runtime::bundled::locate(runtime::bundled::DEID_SMALL).map_err(|e| Failure(format!("no --model DIR given, and {e}")))?),
            };
            serve_web::serve_web(model.as_deref(), root, *port, *public)
        }
        Command::Bench { model, config, batch, seq, device, dtype, activations, threads, matmul_peak, matmul_rows, iters, gemm, profile } => {
            set_threads(*threads)?;
            let peak = matmul_peak.then_some(*matmul_rows);
            match choose(*device, *dtype, *activations)? {
                Chosen::Cpu(_) if *gemm != kernels::linear::GemmPath::Auto => {
                    Err(Failure("--gemm chooses among the GPU's GEMMs; the CPU backend has its own".into()))
                }
                Chosen::Cpu(be) => bench::bench(&be, model.as_deref(), config.as_deref(), *batch, *seq, *iters, peak, *profile),
                Chosen::Gpu(be) => bench::bench(&be.with_gemm(*gemm), model.as_deref(), config.as_deref(), *batch, *seq, *iters, peak, *profile),
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
