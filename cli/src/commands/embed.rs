//! `runtime-cli embed`: one embedding per document, written as it comes (JSONL, .npy, .safetensors).

use std::path::Path;

use kernels::Backend;
use runtime::config::Pooling;
use runtime::folder::sentence_transformers_pooling;

use super::{device_name, for_each_chunk, load, named, open_input, split_note, Outcome};
use crate::args::{DocumentArgs, PoolingArg};
use crate::output::EmbeddingWriter;
use crate::progress::ProgressBar;

pub fn embed<B: Backend>(be: &B, docs: &DocumentArgs, pooling: Option<PoolingArg>, normalize: bool, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch } = docs;
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
    let meta = [("model", dir.display().to_string()), ("pooling", format!("{pooling:?}").to_lowercase()), ("normalized", normalize.to_string())];
    let mut writer = EmbeddingWriter::create(output, &meta)?;
    let mut bar = ProgressBar::new("embedded");
    let streamed = for_each_chunk(&engine, &mut reader, &mut bar, |docs, encs, progress| {
        let embeddings = kernels::block_on(engine.embed(encs, pooling, normalize, progress)).map_err(named(docs))?;
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        writer.write(&ids, &embeddings)?;
        Ok(())
    })?;
    writer.finish()?;
    bar.finish(&device_name(be), &split_note(engine.settings.window, streamed.split));
    Ok(true)
}
