//! `runtime-cli classify`: a label and probabilities per document (or values, or several labels).

use std::path::Path;

use kernels::Backend;
use runtime::config::{Architecture, Pooling};
use runtime::pipeline::softmax;

use super::{device_name, load, named, open_input, plan, run_chunks, split_note, Outcome};
use crate::args::{DocumentArgs, PoolingArg};
use crate::parts::{Kind, Records};
use crate::progress::ProgressBar;

pub fn classify<B: Backend>(be: &B, docs: &DocumentArgs, pooling: Option<PoolingArg>, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch, .. } = docs;
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
    let settings = serde_json::json!({"pooling": pooling.map(|p| format!("{p:?}").to_lowercase())});
    let serde_json::Value::Object(settings) = settings else { unreachable!("an object") };
    let Some(plan) = plan("classify", docs, &dir, settings, Kind::Lines, output)? else { return Ok(true) };
    let mut bar = ProgressBar::new("classified");
    let streamed = run_chunks(&engine, &mut reader, &mut bar, plan, |docs, encs, progress| {
        let logits = kernels::block_on(engine.sequence_logits(encs, pooling, progress)).map_err(named(docs))?;
        let mut lines = Vec::with_capacity(docs.len());
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
            lines.push(line.to_string());
        }
        Ok(Records::Lines(lines))
    })?;
    bar.finish(&device_name(be), &split_note(engine.settings.window, streamed.split));
    Ok(true)
}
