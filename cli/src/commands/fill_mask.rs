//! `runtime-cli fill-mask`: the tokens behind every mask, as a table or JSON.

use kernels::Backend;
use runtime::pipeline::Engine;
use runtime::tokenize::Tokenizer;

use super::{load, Outcome};
use crate::args::ModelArgs;
use crate::output::Sink;
use crate::Failure;

pub fn fill_mask<B: Backend>(be: &B, text: &str, model: &ModelArgs, top_k: usize, json: bool) -> Outcome {
    crate::output::check_stdout_open()?;
    let dir = model.dir(Some(runtime::bundled::CLINICAL_SMALL))?;
    let loaded = load(be, &dir)?;
    if !loaded.model.has_mlm() {
        return Err(Failure(format!(
            "{}: fill-mask needs a masked-LM head (ModernBertForMaskedLM or BertForMaskedLM); this checkpoint has none",
            dir.display()
        )));
    }
    let engine = Engine::new(be, &loaded.model, loaded.tokenizer()?);
    let predictions = kernels::block_on(engine.fill_mask(text, top_k))?;
    let mask = &loaded.tokenizer()?.names.mask;
    let mut out = Sink::open(None)?;
    for (k, p) in predictions.iter().enumerate() {
        if json {
            let candidates: Vec<serde_json::Value> = p
                .candidates
                .iter()
                .map(|c| serde_json::json!({"token": c.token_id, "token_str": c.token.trim(), "piece": loaded.tokenizer().ok().and_then(|t| t.token(c.token_id)), "score": c.score}))
                .collect();
            out.line(serde_json::json!({"mask": k, "offset": p.char_offset, "predictions": candidates}))?;
        } else {
            out.line(format!("{mask} #{} at character {}:", k + 1, p.char_offset))?;
            for c in &p.candidates {
                out.line(format!("  {:>8.4}  {:?}", c.score, shown_token(loaded.tokenizer()?, c)))?;
            }
        }
    }
    out.finish()?;
    Ok(true)
}

/// A candidate as text; a byte-level piece that is not whole UTF-8 on its own is shown as the
/// vocabulary entry instead.
pub fn shown_token(tokenizer: &Tokenizer, c: &runtime::pipeline::Candidate) -> String {
    if c.token.contains('\u{FFFD}') {
        tokenizer.token(c.token_id).unwrap_or_else(|| c.token.clone())
    } else {
        c.token.trim().to_string()
    }
}
