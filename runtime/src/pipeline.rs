//! From documents to results without waste: tokenize (in parallel), cut documents longer than
//! the context into overlapping windows, sort the windows by length and group them into unpadded
//! batches under a token budget, run the encoder and a head on each batch, and put every result
//! back in input order. Shared by `runtime-cli` and the browser.

use kernels::Backend;

use crate::config::Pooling;
use crate::model::Model;
use crate::tokenize::{Encoded, Tokenizer};
use crate::{Error, Result};

/// Text handed to the tokenizer at once (see `Tokenizer::encode_plain_in_pieces`).
pub const TOKENIZE_PIECE_BYTES: usize = 64 << 10;

/// How documents are cut and batched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Content tokens per window (the context minus `[CLS]` and `[SEP]`).
    pub window: usize,
    /// Tokens shared by consecutive windows of a long document.
    pub overlap: usize,
    /// Tokens per batch (at least one window always fits).
    pub batch_tokens: usize,
}

impl Settings {
    /// Defaults for a model on a device: windows as long as the context allows, overlap of one
    /// eighth of a window, batches of at most 16,384 tokens and never more than the device can
    /// bind for the [T, 3H] attention input.
    pub fn for_model<B: Backend>(be: &B, model: &Model<B>) -> Self {
        let window = model.context().saturating_sub(2).max(1);
        let device_cap = be.max_binding_elements(be.activation_dtype()) / (3 * model.hidden_size());
        let batch_tokens = device_cap.clamp(1, 16_384).max(window + 2);
        Settings { window, overlap: window / 8, batch_tokens }
    }

    /// Override the window (≤ the context) and overlap; checked.
    pub fn with_window(mut self, window: Option<usize>, overlap: Option<usize>) -> Result<Self> {
        if let Some(w) = window {
            if w == 0 || w > self.window {
                return Err(Error::Input(format!("a window of {w} tokens: expected 1 to {} (the model's context minus 2)", self.window)));
            }
            self.window = w;
            self.overlap = w / 8;
        }
        if let Some(o) = overlap {
            self.overlap = o;
        }
        if self.overlap >= self.window {
            return Err(Error::Input(format!("an overlap of {} tokens: it must be smaller than the window of {} tokens", self.overlap, self.window)));
        }
        self.batch_tokens = self.batch_tokens.max(self.window + 2);
        Ok(self)
    }
}

/// One window: content tokens start..end of document `doc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub doc: usize,
    pub start: usize,
    pub end: usize,
}

impl Window {
    /// Tokens in the window, `[CLS]` and `[SEP]` included.
    pub fn tokens(&self) -> usize {
        self.end - self.start + 2
    }
}

/// Windows of every document and the batches that run them.
#[derive(Clone, Debug)]
pub struct Plan {
    pub windows: Vec<Window>,
    /// Indices into `windows`, longest windows first.
    pub batches: Vec<Vec<usize>>,
}

/// Cut documents of `lengths` content tokens into windows and group them into batches.
pub fn plan(lengths: &[usize], s: &Settings) -> Plan {
    let step = s.window - s.overlap;
    let mut windows = Vec::new();
    for (doc, &n) in lengths.iter().enumerate() {
        let mut start = 0;
        loop {
            let end = (start + s.window).min(n);
            windows.push(Window { doc, start, end });
            if end >= n {
                break;
            }
            start += step;
        }
    }
    let mut order: Vec<usize> = (0..windows.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(windows[i].tokens()), i));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for i in order {
        let t = windows[i].tokens();
        match batches.last_mut() {
            Some(b) if used + t <= s.batch_tokens => {
                b.push(i);
                used += t;
            }
            _ => {
                batches.push(vec![i]);
                used = t;
            }
        }
    }
    Plan { windows, batches }
}

/// Progress through a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub docs_done: usize,
    pub docs_total: usize,
    pub tokens_done: usize,
    pub tokens_total: usize,
}

/// What to compute for each window.
#[derive(Clone, Copy, Debug)]
enum Task {
    /// A pooled vector [H].
    Pool(Pooling),
    /// Per content token, the classifier's probabilities [n, C].
    TokenProbs,
    /// Sequence-classification logits [C].
    SequenceLogits(Option<Pooling>),
}

/// A model with its tokenizer on a backend, ready to process documents.
pub struct Engine<'a, B: Backend> {
    pub be: &'a B,
    pub model: &'a Model<B>,
    pub tokenizer: &'a Tokenizer,
    pub settings: Settings,
}

/// Softmax of one row, in f64.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

impl<'a, B: Backend> Engine<'a, B> {
    pub fn new(be: &'a B, model: &'a Model<B>, tokenizer: &'a Tokenizer) -> Self {
        Engine { be, model, tokenizer, settings: Settings::for_model(be, model) }
    }

    /// Tokenize every text without special tokens (windows add them); in parallel natively; a
    /// long text in pieces of `TOKENIZE_PIECE_BYTES`, so memory stays bounded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        let one = |t: &&str| self.tokenizer.encode_plain_in_pieces(t, TOKENIZE_PIECE_BYTES);
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            texts.par_iter().map(one).collect()
        }
        #[cfg(target_arch = "wasm32")]
        {
            texts.iter().map(one).collect()
        }
    }

    fn window_ids(&self, enc: &Encoded, w: &Window) -> Vec<u32> {
        let s = &self.tokenizer.specials;
        let mut ids = Vec::with_capacity(w.tokens());
        ids.push(s.cls);
        ids.extend_from_slice(&enc.ids[w.start..w.end]);
        ids.push(s.sep);
        ids
    }

    /// Run `task` on every window and hand each window's result to `sink(window index, values)`:
    /// the pooled vector [H] or the logits [C], or per content token the probabilities [n, C].
    /// Results are checked finite first: a NaN is an error naming the document, never a result.
    async fn run(&self, encs: &[Encoded], plan: &Plan, task: Task, progress: &mut dyn FnMut(Progress), sink: &mut dyn FnMut(usize, &[f32])) -> Result<()> {
        let (be, model) = (self.be, self.model);
        let mut remaining = vec![0usize; encs.len()];
        for w in &plan.windows {
            remaining[w.doc] += 1;
        }
        let mut p = Progress { docs_total: encs.len(), tokens_total: plan.windows.iter().map(Window::tokens).sum(), ..Progress::default() };
        p.docs_done = remaining.iter().filter(|&&r| r == 0).count();
        progress(p);
        let what = match task {
            Task::Pool(_) => "embeddings",
            Task::TokenProbs => "token-classification logits",
            Task::SequenceLogits(_) => "sequence-classification logits",
        };
        for batch in &plan.batches {
            let ids: Vec<Vec<u32>> = batch.iter().map(|&i| self.window_ids(&encs[plan.windows[i].doc], &plan.windows[i])).collect();
            let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            let b = model.batch(be, &refs)?;
            let hidden = model.encode(be, &b, None)?;
            let (rows, width) = match task {
                Task::Pool(pooling) => (be.read(&model.pool(be, &hidden, &b, pooling)?).await?, model.hidden_size()),
                Task::SequenceLogits(pooling) => (be.read(&model.sequence_logits(be, &hidden, &b, pooling)?).await?, model.labels().len()),
                Task::TokenProbs => (be.read(&model.token_logits(be, &hidden)?).await?, model.labels().len()),
            };
            for (k, &i) in batch.iter().enumerate() {
                let w = &plan.windows[i];
                let values = match task {
                    Task::Pool(_) | Task::SequenceLogits(_) => &rows[k * width..(k + 1) * width],
                    // Without [CLS] and [SEP].
                    Task::TokenProbs => &rows[(b.cu_seqlens[k] as usize + 1) * width..(b.cu_seqlens[k + 1] as usize - 1) * width],
                };
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(Error::NonFinite { doc: format!("document {}", w.doc), index: Some(w.doc), what: what.to_string() });
                }
                match task {
                    Task::TokenProbs => sink(i, &values.chunks(width).flat_map(softmax).collect::<Vec<f32>>()),
                    _ => sink(i, values),
                }
                remaining[w.doc] -= 1;
                if remaining[w.doc] == 0 {
                    p.docs_done += 1;
                }
                p.tokens_done += w.tokens();
            }
            progress(p);
        }
        Ok(())
    }

    /// Per document, the window results averaged weighted by the windows' tokens, in f64.
    async fn weighted_mean(&self, encs: &[Encoded], task: Task, width: usize, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Vec<f64>>> {
        let plan = plan(&lengths(encs), &self.settings);
        let mut sums = vec![vec![0f64; width]; encs.len()];
        let mut weights = vec![0f64; encs.len()];
        self.run(encs, &plan, task, progress, &mut |i, values| {
            let w = &plan.windows[i];
            let n = w.tokens() as f64;
            weights[w.doc] += n;
            sums[w.doc].iter_mut().zip(values).for_each(|(s, v)| *s += n * *v as f64);
        })
        .await?;
        Ok(sums.into_iter().zip(weights).map(|(s, n)| s.into_iter().map(|x| x / n).collect()).collect())
    }

    /// One embedding per document: the window embeddings combined, weighted by their tokens,
    /// then L2-normalised if asked.
    pub async fn embed(&self, encs: &[Encoded], pooling: Pooling, normalize: bool, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Vec<f32>>> {
        let means = self.weighted_mean(encs, Task::Pool(pooling), self.model.hidden_size(), progress).await?;
        Ok(means
            .into_iter()
            .map(|s| {
                let mut v: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                if normalize {
                    let norm = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
                }
                v
            })
            .collect())
    }

    /// Per document, per content token, the classifier's probabilities [n, C]. A token covered by
    /// several windows takes the prediction of the window where it sits farthest from an edge
    /// (the most context on both sides).
    pub async fn token_probabilities(&self, encs: &[Encoded], progress: &mut dyn FnMut(Progress)) -> Result<Vec<Vec<f32>>> {
        let plan = plan(&lengths(encs), &self.settings);
        let c = self.model.labels().len();
        let mut out: Vec<Vec<f32>> = encs.iter().map(|e| vec![0f32; e.len() * c]).collect();
        let mut best: Vec<Vec<i64>> = encs.iter().map(|e| vec![-1; e.len()]).collect();
        self.run(encs, &plan, Task::TokenProbs, progress, &mut |i, probs| {
            let w = &plan.windows[i];
            for p in w.start..w.end {
                let margin = (p - w.start).min(w.end - 1 - p) as i64;
                if margin > best[w.doc][p] {
                    best[w.doc][p] = margin;
                    let k = p - w.start;
                    out[w.doc][p * c..(p + 1) * c].copy_from_slice(&probs[k * c..(k + 1) * c]);
                }
            }
        })
        .await?;
        Ok(out)
    }

    /// Per document, the sequence classifier's logits averaged over its windows (weighted by
    /// their tokens).
    pub async fn sequence_logits(&self, encs: &[Encoded], pooling: Option<Pooling>, progress: &mut dyn FnMut(Progress)) -> Result<Vec<Vec<f32>>> {
        let means = self.weighted_mean(encs, Task::SequenceLogits(pooling), self.model.labels().len(), progress).await?;
        Ok(means.into_iter().map(|s| s.into_iter().map(|x| x as f32).collect()).collect())
    }

    /// Predictions for every mask token of `text`: the `top_k` most likely tokens with their
    /// probabilities.
    pub async fn fill_mask(&self, text: &str, top_k: usize) -> Result<Vec<MaskPrediction>> {
        let mask = self.tokenizer.specials.mask.ok_or_else(|| {
            Error::Input(format!("{}: the tokenizer has no mask token \"{}\"", self.tokenizer.source(), self.tokenizer.names.mask))
        })?;
        let enc = self.tokenizer.encode(text)?;
        let positions: Vec<usize> = enc.ids.iter().enumerate().filter(|(_, &id)| id == mask).map(|(i, _)| i).collect();
        if positions.is_empty() {
            return Err(Error::Input(format!("the text holds no {} token to fill", self.tokenizer.names.mask)));
        }
        let context = self.model.context();
        if enc.len() > context {
            return Err(Error::Input(format!("the text is {} tokens long, more than the model's context of {context}; shorten it around the mask", enc.len())));
        }
        let (be, model) = (self.be, self.model);
        let b = model.batch(be, &[&enc.ids])?;
        let hidden = model.encode(be, &b, None)?;
        let rows: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
        let logits = be.read(&model.mlm_logits(be, &be.gather_rows(&hidden, &be.upload_ids(&rows)?)?)?).await?;
        if logits.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { doc: "the text".into(), index: None, what: "masked-LM logits".into() });
        }
        let v = model.vocab_size();
        let mut out = Vec::new();
        for (k, &pos) in positions.iter().enumerate() {
            let probs = softmax(&logits[k * v..(k + 1) * v]);
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            let candidates = order
                .into_iter()
                .take(top_k)
                .map(|id| {
                    let token = self.tokenizer.decode(&[id as u32]).unwrap_or_default();
                    Candidate { token_id: id as u32, token, score: probs[id] }
                })
                .collect();
            // Character offset of the mask in the text. The mask token may absorb the space before
            // it (`lstrip`): point at the mask itself.
            let (b0, b1) = enc.offsets[pos];
            let piece = text.get(b0..b1).unwrap_or("");
            let byte = b0 + piece.len() - piece.trim_start().len();
            out.push(MaskPrediction { char_offset: text[..byte].chars().count(), candidates });
        }
        Ok(out)
    }
}

/// Content tokens per document.
pub fn lengths(encs: &[Encoded]) -> Vec<usize> {
    encs.iter().map(Encoded::len).collect()
}

/// One filled mask.
#[derive(Clone, Debug)]
pub struct MaskPrediction {
    /// Where the mask token starts in the text, in characters.
    pub char_offset: usize,
    pub candidates: Vec<Candidate>,
}

#[derive(Clone, Debug)]
pub struct Candidate {
    pub token_id: u32,
    /// The token decoded as text (a leading space marks a word start).
    pub token: String,
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(window: usize, overlap: usize, batch_tokens: usize) -> Settings {
        Settings { window, overlap, batch_tokens }
    }

    #[test]
    fn short_documents_are_one_window() {
        let p = plan(&[5, 0, 10], &s(10, 2, 100));
        assert_eq!(p.windows, vec![Window { doc: 0, start: 0, end: 5 }, Window { doc: 1, start: 0, end: 0 }, Window { doc: 2, start: 0, end: 10 }]);
        assert_eq!(p.batches, vec![vec![2, 0, 1]]);
    }

    #[test]
    fn long_documents_overlap_and_cover_every_token() {
        let p = plan(&[25], &s(10, 3, 100));
        let spans: Vec<(usize, usize)> = p.windows.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(spans, vec![(0, 10), (7, 17), (14, 24), (21, 25)]);
        for t in 0..25 {
            assert!(p.windows.iter().any(|w| w.start <= t && t < w.end));
        }
    }

    #[test]
    fn batches_respect_the_budget_longest_first() {
        let p = plan(&[8, 3, 8, 1, 5], &s(8, 1, 12));
        // tokens with [CLS]/[SEP]: 10, 5, 10, 3, 7
        assert_eq!(p.batches, vec![vec![0], vec![2], vec![4, 1], vec![3]]);
        for b in &p.batches {
            assert!(b.iter().map(|&i| p.windows[i].tokens()).sum::<usize>() <= 12);
        }
    }

    #[test]
    fn softmax_is_stable() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && p[2] == 0.0);
    }
}
