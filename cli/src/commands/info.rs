//! `runtime-cli info`: what a model folder holds and the device that would run it.

use std::path::Path;

use kernels::Backend;
use runtime::pipeline::Settings;
use runtime::Model;

use super::{load, Outcome};

pub fn info<B: Backend>(be: &B, model: &Path) -> Outcome {
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
