//! `runtime-cli classify`: a label and probabilities per document (or values, or several labels).

use std::path::Path;

use kernels::Backend;
use runtime::config::{Architecture, Pooling};
use runtime::pipeline::softmax;

use super::{device_name, for_each_chunk, load, named, open_input, split_note, Outcome};
use crate::args::{DocumentArgs, PoolingArg};
use crate::output::Sink;
use crate::progress::ProgressBar;

pub fn classify<B: Backend>(be: &B, docs: &DocumentArgs, pooling: Option<PoolingArg>, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch } = docs;
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
