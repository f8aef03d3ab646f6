//! `runtime-cli bench`: median tokens/s, useful GFLOP/s and peak memory of the encoder.

use std::path::Path;

use kernels::Backend;
use runtime::init::Rng;
use runtime::{Model, ModernBert};

use super::{load, Outcome};
use crate::Failure;

/// Peak resident memory of this process, in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Best rate, in GFLOP/s, of `x[rows, h] · Wᵀ[h, 3h]` on this backend (the fused QKV projection
/// of a model of width `h`): the matmul peak the encoder's figures are compared with.
pub fn matmul_peak<B: Backend>(be: &B, h: usize, rows: usize) -> Result<f64, Failure> {
    let x = be.upload_vec(Rng::new(1).uniform_vec(rows * h, 1.0), &[rows, h])?;
    let w = be.upload_linear_weight(Rng::new(2).uniform_vec(3 * h * h, 0.05), &[3 * h, h])?;
    let mut best = f64::INFINITY;
    for _ in 0..6 {
        let t0 = std::time::Instant::now();
        let y = be.linear(&x, &w, None)?;
        kernels::block_on(be.read(&y))?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(2.0 * (rows * h * 3 * h) as f64 / best / 1e9)
}

pub fn bench<B: Backend>(be: &B, model: Option<&Path>, config: Option<&Path>, batch: usize, seq: usize, iters: usize, peak: Option<usize>, profile: bool) -> Outcome {
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
    let ids: Vec<Vec<u32>> = (0..batch).map(|b| Rng::new(b as u64 + 1).ids(seq, c.vocab_size().min(50_000))).collect();
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let run = || -> Result<f64, Failure> {
        let t0 = std::time::Instant::now();
        let b = m.batch(be, &seqs)?;
        let h = m.encode(be, &b, None)?;
        kernels::block_on(be.read(&h))?;
        Ok(t0.elapsed().as_secs_f64())
    };
    // warm-up: kernel compilation, allocator, caches
    let (first, compiled) = kernels::profile::profile(false, run);
    let first = first?;
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
    if profile {
        let (t, p) = kernels::profile::profile(true, run);
        println!("first pass {first:.3} s, host time per kernel (a kernel's first launch compiles it):\n{}", compiled.markdown());
        let (warm, h) = kernels::profile::profile(false, run);
        println!("a warm pass {:.3} s, host time per kernel (from its launches to the next launch):\n{}", warm?, h.markdown());
        println!(
            "profiled pass {:.3} s, {} launches, kernels alone {:.3} s{}:\n{}",
            t?,
            p.launches(),
            p.seconds().unwrap_or(0.0),
            if p.device_timestamps { " (device timestamps)" } else { " (host clock around each blocking submit)" },
            p.markdown()
        );
    }
    let device = device_memory.map(|(_, r)| format!(" device_reserved_mib={:.0}", mib(r))).unwrap_or_default();
    println!("tokens_per_s={:.1} peak_rss_mib={:.0}{device}", tokens / median, rss);
    Ok(true)
}
