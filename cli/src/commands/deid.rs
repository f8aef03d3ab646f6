//! `runtime-cli deid`: PHI spans and the redacted note (placeholders or keyed surrogates) per document.

use std::path::Path;

use kernels::Backend;
use runtime::config::Architecture;
use runtime::deid::{deidentify, LabelScheme, Span, SurrogateKey, Surrogates};

use super::{device_name, for_each_chunk, load, named, open_input, split_note, Outcome};
use crate::args::DocumentArgs;
use crate::output::Sink;
use crate::progress::ProgressBar;

#[allow(clippy::too_many_arguments)]
pub fn deid<B: Backend>(be: &B, docs: &DocumentArgs, threshold: f32, surrogate: bool, surrogate_key: Option<&Path>, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch } = docs;
    let dir = model.dir(Some(runtime::bundled::DEID_SMALL))?;
    let surrogates = match (surrogate, surrogate_key) {
        (_, Some(key)) => {
            let bytes = runtime::files::read_limited(key, 1 << 20, "a surrogate key file")?;
            Some(Surrogates::new(SurrogateKey::from_file_bytes(&key.display().to_string(), &bytes)?))
        }
        (true, None) => Some(Surrogates::new(SurrogateKey::random()?)),
        (false, None) => None,
    };
    let mut reader = open_input(input, output)?;
    let loaded = load(be, &dir)?;
    loaded.require_head("deid", Architecture::TokenClassification)?;
    let scheme = LabelScheme::from_labels(loaded.folder.config.source(), loaded.model.labels())?;
    let engine = loaded.engine(be, batch)?;
    let mut sink = Sink::open(output)?;
    let mut bar = ProgressBar::new("de-identified");
    let mut n_spans = 0;
    let streamed = for_each_chunk(&engine, &mut reader, &mut bar, |docs, encs, progress| {
        let probs = kernels::block_on(engine.token_probabilities(encs, progress)).map_err(named(docs))?;
        for ((doc, enc), p) in docs.iter().zip(encs).zip(&probs) {
            let (spans, redacted) = deidentify(&doc.text, enc, p, &scheme, threshold, surrogates.as_ref());
            n_spans += spans.len();
            sink.line(serde_json::json!({"id": doc.id, "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(), "redacted": redacted}))?;
        }
        Ok(())
    })?;
    sink.finish()?;
    bar.finish(&device_name(be), &format!("; {n_spans} PHI spans{}", split_note(engine.settings.window, streamed.split)));
    Ok(true)
}
