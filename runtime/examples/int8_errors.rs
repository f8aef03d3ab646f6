//! Where int8 loses accuracy (issue 23): every product of the encoder layers, run in int8
//! (`kernels::cpu::int8`, as `--dtype int8` does) on the activations the f32 model really feeds
//! it for real clinical notes, against the same product in f32. Prints a Markdown table, one row
//! per layer and product: the relative error ‖y₈ − y‖ / ‖y‖, the worst row's, and how
//! outlier-heavy the product's input is (per row: max|x| / rms(x), the mean over rows and the
//! worst; per channel: the largest channel maximum over the median channel maximum).
//!
//!     cargo run --release -p runtime --example int8_errors -- models/clinical-small
//!     cargo run --release -p runtime --example int8_errors -- --config tests/data/modernbert-configs/ModernBERT-base.config.json
//!
//! The notes are tests/data/aci-bench/valid.csv (ACI-BENCH, CC BY 4.0), the first 8 cut to 512
//! tokens. bench/int8-errors.md holds its output for both models.

use std::path::Path;

use kernels::cpu::int8::{self, Int8Weights};
use kernels::prelude::*;
use kernels::CpuBackend;
use runtime::config::Architecture;
use runtime::folder::ModelFolder;
use runtime::model::Tape;
use runtime::{Encoder, ModernBert};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let be = CpuBackend::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (model, tokenizer, name) = match args.as_slice() {
        [flag, config] if flag == "--config" => {
            let mut c = runtime::ModernBertConfig::from_file(Path::new(config))?;
            c.architecture = Some(Architecture::Model);
            let weights = runtime::init::RandomWeights::new(&c, Architecture::Model, 0, 42);
            let tok = runtime::tokenize::Tokenizer::from_dir(&repo.join("tests/data/modernbert-tokenizer"))?;
            (ModernBert::load(&be, c, &weights)?, tok, format!("{config} (seeded random weights)"))
        }
        [dir] => {
            let folder = ModelFolder::open(Path::new(dir))?;
            let tok = folder.tokenizer.ok_or("the folder has no tokenizer")?;
            (ModernBert::load(&be, folder.config.modernbert("int8 errors")?.clone(), &folder.checkpoint)?, tok, dir.clone())
        }
        _ => return Err("usage: int8_errors MODEL_DIR | --config CONFIG.json".into()),
    };
    let opts = runtime::input::InputOptions { text_column: Some("note".into()), ..Default::default() };
    let notes = runtime::input::read_documents(repo.join("tests/data/aci-bench/valid.csv").to_str().unwrap(), &opts)?.documents;
    let seqs: Vec<Vec<u32>> =
        notes.iter().take(8).map(|d| tokenizer.encode(&d.text).map(|e| e.ids.into_iter().take(512).collect())).collect::<Result<_, _>>()?;
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
    let batch = model.batch(&be, &refs)?;
    let mut tape = Tape::backward();
    model.encode(&be, &batch, Some(&mut tape))?;

    println!("{name}: {} notes, {} tokens; int8 path {}\n", seqs.len(), batch.tokens(), int8::Path::get().describe());
    println!("| layer | product | relative error | worst row's | input max/rms per row: mean, worst | input channel max / median |");
    println!("|---|---|---|---|---|---|");
    let mut worst: Vec<(f64, String)> = Vec::new();
    for (l, layer) in model.layers.iter().enumerate() {
        for (product, input, linear) in
            [("attn.Wqkv", "h", &layer.attn.Wqkv), ("attn.Wo", "o", &layer.attn.Wo), ("mlp.Wi", "hm", &layer.mlp.Wi), ("mlp.Wo", "a", &layer.mlp.Wo)]
        {
            let x_t = tape.get(Some(l), input)?;
            let x = kernels::block_on(be.read(x_t))?;
            let k = be.shape(x_t)[1];
            let n = x.len() / k;
            let w = kernels::block_on(be.read(&linear.weight))?;
            let m = w.len() / k;
            let y = kernels::block_on(be.read(&be.linear(x_t, &linear.weight, None)?))?;
            let mut y8 = vec![0f32; n * m];
            int8::matmul(&x, n, &Int8Weights::pack(&w, m, k), None, &mut y8, m);
            let (mut num, mut den, mut row_worst) = (0f64, 0f64, 0f64);
            for (a, b) in y.chunks(m).zip(y8.chunks(m)) {
                let d: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
                let s: f64 = a.iter().map(|p| (*p as f64).powi(2)).sum();
                num += d;
                den += s;
                row_worst = row_worst.max((d / s.max(1e-30)).sqrt());
            }
            let ratios: Vec<f64> = x
                .chunks(k)
                .map(|r| {
                    let max = r.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                    let rms = (r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / k as f64).sqrt();
                    max / rms.max(1e-30)
                })
                .collect();
            let mut channel: Vec<f64> = (0..k).map(|j| x.chunks(k).fold(0f64, |a, r| a.max(r[j].abs() as f64))).collect();
            channel.sort_by(f64::total_cmp);
            let rel = (num / den).sqrt();
            println!(
                "| {l} | {product} | {:.2}% | {:.2}% | {:.1}, {:.1} | {:.1} |",
                100.0 * rel,
                100.0 * row_worst,
                ratios.iter().sum::<f64>() / n as f64,
                ratios.iter().cloned().fold(0f64, f64::max),
                channel[k - 1] / channel[k / 2].max(1e-30)
            );
            worst.push((rel, format!("layer {l} {product}")));
        }
    }
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    let list: Vec<String> = worst.iter().take(4).map(|(e, n)| format!("{n} {:.2}%", 100.0 * e)).collect();
    println!("\nLargest: {}", list.join(", "));
    Ok(())
}
