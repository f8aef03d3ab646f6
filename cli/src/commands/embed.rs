//! `runtime-cli embed`: one embedding per document, written as it comes (JSONL, .npy, .safetensors).

use std::path::Path;

use kernels::Backend;
use runtime::config::Pooling;
use runtime::folder::sentence_transformers_pooling;

use super::{device_name, load, named, open_input, plan, run_chunks, split_note, Outcome};
use crate::args::{DocumentArgs, PoolingArg};
use crate::parts::{Kind, Records};
use crate::progress::ProgressBar;

pub fn embed<B: Backend>(be: &B, docs: &DocumentArgs, pooling: Option<PoolingArg>, normalize: bool, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch, .. } = docs;
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
    let pooling_name = format!("{pooling:?}").to_lowercase();
    let metadata = vec![("model".into(), dir.display().to_string()), ("pooling".into(), pooling_name.clone()), ("normalized".into(), normalize.to_string())];
    let settings = serde_json::json!({"pooling": pooling_name, "normalize": normalize});
    let serde_json::Value::Object(settings) = settings else { unreachable!("an object") };
    let Some(plan) = plan("embed", docs, &dir, settings, Kind::Embeddings { metadata }, output)? else { return Ok(true) };
    let mut bar = ProgressBar::new("embedded");
    let streamed = run_chunks(&engine, &mut reader, &mut bar, plan, |docs, encs, progress| {
        let embeddings = kernels::block_on(engine.embed(encs, pooling, normalize, progress)).map_err(named(docs))?;
        let cols = embeddings.first().map_or(0, Vec::len);
        if let Some(e) = embeddings.iter().find(|e| e.len() != cols) {
            return Err(crate::Failure(format!("embeddings of {} and {cols} values cannot share one matrix", e.len())));
        }
        Ok(Records::Rows { cols, values: embeddings.concat() })
    })?;
    bar.finish(&device_name(be), &split_note(engine.settings.window, streamed.split));
    Ok(true)
}
