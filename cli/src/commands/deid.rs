//! `runtime-cli deid`: PHI spans and the redacted note (placeholders or keyed surrogates) per document.

use std::path::Path;

use kernels::Backend;
use runtime::config::Architecture;
use runtime::deid::{deidentify, LabelScheme, Operator, Span, SurrogateKey, Surrogates};

use super::{device_name, load, named, open_input, plan, run_chunks, split_note, Outcome};
use crate::args::DocumentArgs;
use crate::parts::{Kind, Records};
use crate::progress::ProgressBar;
use crate::Failure;

/// What `--surrogate`, `--shift-dates` and `--hash` ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replace {
    Placeholder,
    Surrogate,
    ShiftDates,
    Hash,
}

impl Replace {
    fn flag(self) -> &'static str {
        match self {
            Replace::Placeholder => "",
            Replace::Surrogate => "--surrogate",
            Replace::ShiftDates => "--shift-dates",
            Replace::Hash => "--hash",
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn deid<B: Backend>(be: &B, docs: &DocumentArgs, threshold: f32, replace: Replace, surrogate_key: Option<&Path>, output: Option<&Path>) -> Outcome {
    let DocumentArgs { input, model, batch, .. } = docs;
    let dir = model.dir(Some(runtime::bundled::DEID_SMALL))?;
    let mut key_digest = None;
    let keyed = replace != Replace::Placeholder;
    let surrogates = match (keyed, surrogate_key) {
        (_, Some(key)) => {
            let bytes = runtime::files::read_limited(key, 1 << 20, "a surrogate key file")?;
            key_digest = Some(sha256_hex(&bytes));
            Some(Surrogates::new(SurrogateKey::from_file_bytes(&key.display().to_string(), &bytes)?))
        }
        (true, None) => Some(Surrogates::new(SurrogateKey::random()?)),
        (false, None) => None,
    };
    let sharded = crate::shard::choose(docs.shard.shard, docs.shard.shard_count, |k| std::env::var(k).ok())?.is_some();
    if sharded && keyed && surrogate_key.is_none() {
        return Err(Failure(format!(
            "{} in a sharded run needs --surrogate-key FILE: every shard and every rerun must draw the same surrogates, offsets and hashes, which a fresh key per run cannot",
            replace.flag()
        )));
    }
    let mut reader = open_input(input, output)?;
    let loaded = load(be, &dir)?;
    loaded.require_head("deid", Architecture::TokenClassification)?;
    let scheme = LabelScheme::from_labels(loaded.folder.config.source(), loaded.model.labels())?;
    let engine = loaded.engine(be, batch)?;
    // The key itself never goes to disk: the parts and shard files hold a digest of it, so that
    // a rerun or a merge with another key is refused.
    let settings = serde_json::json!({"threshold": threshold.to_string(), "surrogate": surrogates.is_some(), "replace": replace.flag(), "surrogate_key_sha256": key_digest});
    let serde_json::Value::Object(settings) = settings else { unreachable!("an object") };
    let Some(plan) = plan("deid", docs, &dir, settings, Kind::Lines, output)? else { return Ok(true) };
    let mut bar = ProgressBar::new("de-identified");
    let mut n_spans = 0;
    let streamed = run_chunks(&engine, &mut reader, &mut bar, plan, |docs, encs, progress| {
        let probs = kernels::block_on(engine.token_probabilities(encs, progress)).map_err(named(docs))?;
        let mut lines = Vec::with_capacity(docs.len());
        for ((doc, enc), p) in docs.iter().zip(encs).zip(&probs) {
            let op = match (replace, surrogates.as_ref()) {
                (Replace::Surrogate, Some(s)) => Operator::Surrogate(s),
                (Replace::ShiftDates, Some(s)) => Operator::ShiftDates(s, &doc.id),
                (Replace::Hash, Some(s)) => Operator::Hash(s),
                _ => Operator::Placeholder,
            };
            let (spans, redacted) = deidentify(&doc.text, enc, p, &scheme, threshold, op);
            n_spans += spans.len();
            lines.push(serde_json::json!({"id": doc.id, "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(), "redacted": redacted}).to_string());
        }
        Ok(Records::Lines(lines))
    })?;
    bar.finish(&device_name(be), &format!("; {n_spans} PHI spans{}", split_note(engine.settings.window, streamed.split)));
    Ok(true)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
