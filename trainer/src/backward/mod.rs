//! The backward pass, llm.c style: the runtime's own forward (`Encoder::encode` and
//! `Encoder::head`) runs with a tape that keeps what the backward reads, then each family's
//! backward (`modernbert.rs`, `bert.rs`) makes the same `Backend` calls in reverse. The trainer
//! therefore runs on the same kernels and the same forward as the runtime (cubecl on any GPU,
//! or the CPU backend).
//!
//! Shapes: T tokens of an unpadded batch, H hidden, N labelled rows or sequences, V vocab,
//! C classes. Gradients are accumulated per parameter name (`Grads`), the checkpoint's names.

pub mod bert;
pub mod modernbert;

use std::collections::HashMap;

use kernels::Backend;
use runtime::config::Pooling;
use runtime::model::{Batch, Encoder, LayerNorm, Linear, Tape, Task};
use runtime::{Bert, Model, ModernBert};

use crate::{Error, Result};

/// Gradients by parameter name, summed over backward passes until the optimizer takes them.
pub struct Grads<B: Backend> {
    pub tensors: HashMap<String, B::Tensor>,
}

impl<B: Backend> Default for Grads<B> {
    fn default() -> Self {
        Grads { tensors: HashMap::new() }
    }
}

impl<B: Backend> Grads<B> {
    /// Add `g` to the gradient of `name`.
    pub fn add(&mut self, be: &B, name: &str, g: B::Tensor) -> Result<()> {
        let sum = match self.tensors.remove(name) {
            Some(prev) => be.add(&prev, &g)?,
            None => g,
        };
        self.tensors.insert(name.to_string(), sum);
        Ok(())
    }
    /// Add every gradient of `other` (a micro-batch's, summed on its own first: the sum of a
    /// step is then the same in one process and over ranks, whose micro-batches are summed the
    /// same way before the allreduce adds them up).
    pub fn merge(&mut self, be: &B, other: Grads<B>) -> Result<()> {
        for (name, g) in other.tensors {
            self.add(be, &name, g)?;
        }
        Ok(())
    }
    pub fn get(&self, name: &str) -> Option<&B::Tensor> {
        self.tensors.get(name)
    }
    pub fn clear(&mut self) {
        self.tensors.clear();
    }
}

/// What the loss is computed against.
pub enum Target<'a> {
    /// Masked LM: rows of the batch (indices into its T tokens) and their original token ids.
    MaskedLm { rows: &'a [u32], labels: &'a [u32] },
    /// Token classification: labelled rows and their classes.
    Tokens { rows: &'a [u32], labels: &'a [u32] },
    /// Sequence classification: one class per sequence. `pooling` is ModernBERT's; BERT always
    /// classifies its pooler output of the first token.
    Sequences { labels: &'a [u32], pooling: Pooling },
}

impl Target<'_> {
    /// How many labelled items the loss sums over.
    pub fn count(&self) -> usize {
        match self {
            Target::MaskedLm { labels, .. } | Target::Tokens { labels, .. } | Target::Sequences { labels, .. } => labels.len(),
        }
    }
}

/// What one forward + backward pass returns.
pub struct StepOutput {
    /// Σ cross-entropy over the labelled items (divide by their count for the mean).
    pub loss_sum: f64,
    /// Per labelled item, the rank of the label among the logits (0 = top-1), for top-k accuracy.
    pub label_ranks: Vec<u32>,
}

/// A model of either family, as the backward sees it.
pub enum Family<'m, B: Backend> {
    ModernBert(&'m ModernBert<B>),
    Bert(&'m Bert<B>),
}

impl<B: Backend> Clone for Family<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Family<'_, B> {}

impl<'m, B: Backend> From<&'m ModernBert<B>> for Family<'m, B> {
    fn from(m: &'m ModernBert<B>) -> Self {
        Family::ModernBert(m)
    }
}

impl<'m, B: Backend> From<&'m Bert<B>> for Family<'m, B> {
    fn from(m: &'m Bert<B>) -> Self {
        Family::Bert(m)
    }
}

impl<'m, B: Backend> From<&'m Model<B>> for Family<'m, B> {
    fn from(m: &'m Model<B>) -> Self {
        match m {
            Model::ModernBert(m) => Family::ModernBert(m),
            Model::Bert(m) => Family::Bert(m),
        }
    }
}

impl<'m, B: Backend> Family<'m, B> {
    fn encoder(self) -> &'m dyn Encoder<B> {
        match self {
            Family::ModernBert(m) => m,
            Family::Bert(m) => m,
        }
    }
}

/// The gradients of y = x·Wᵀ (+ b) for dy [N, M]: dW = dyᵀ·x under `weight`, db = Σ dy under
/// `bias` (when the layer has one); returns dx = dy·W.
pub(crate) fn project_backward<B: Backend>(
    be: &B,
    w: &B::Tensor,
    weight: &str,
    bias: Option<&str>,
    x: &B::Tensor,
    dy: &B::Tensor,
    grads: &mut Grads<B>,
) -> Result<B::Tensor> {
    grads.add(be, weight, be.matmul_tn(dy, x)?)?;
    if let Some(bias) = bias {
        grads.add(be, bias, be.sum_rows(dy)?)?;
    }
    Ok(be.matmul(dy, w)?)
}

/// `project_backward` of a `Linear` saved as `{name}.weight` and `{name}.bias`.
pub(crate) fn linear_backward<B: Backend>(be: &B, l: &Linear<B>, name: &str, x: &B::Tensor, dy: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let bias = l.bias.as_ref().map(|_| format!("{name}.bias"));
    project_backward(be, &l.weight, &format!("{name}.weight"), bias.as_deref(), x, dy, grads)
}

/// The gradients of LN(x) for dy: under `{name}.weight` and `{name}.bias`; returns dx.
pub(crate) fn norm_backward<B: Backend>(be: &B, n: &LayerNorm<B>, name: &str, x: &B::Tensor, dy: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let (dx, dw) = be.layer_norm_backward(x, &n.weight, dy, n.eps)?;
    grads.add(be, &format!("{name}.weight"), dw)?;
    if n.bias.is_some() {
        grads.add(be, &format!("{name}.bias"), be.sum_rows(dy)?)?;
    }
    Ok(dx)
}

/// Σ cross-entropy over logits [N, C] against `labels` [N], and each label's rank among its
/// logits (how many classes score strictly higher), computed on the device: 2·N numbers come
/// back, never the N × C logits.
pub fn loss_and_ranks<B: Backend>(be: &B, logits: &B::Tensor, labels: &B::Ids) -> Result<(f64, Vec<u32>)> {
    let per_row = kernels::block_on(be.read(&be.cross_entropy(logits, labels)?))?;
    let ranks = kernels::block_on(be.read(&be.label_rank(logits, labels)?))?;
    Ok((per_row.iter().map(|&v| v as f64).sum(), ranks.into_iter().map(|r| r as u32).collect()))
}

/// Forward and backward of one micro-batch through a model of either family. The loss is Σ CE
/// over the target's labelled items, and the gradients added to `grads` are those of `scale` ·
/// that sum (scale = 1 / the labelled items of the whole optimizer step, so micro-batches add up
/// to the mean over all of them).
pub fn forward_backward<'m, B: Backend>(
    be: &B,
    model: impl Into<Family<'m, B>>,
    batch: &Batch<B>,
    ids: &[u32],
    target: &Target,
    scale: f32,
    grads: &mut Grads<B>,
) -> Result<StepOutput> {
    if target.count() == 0 {
        return Err(Error::Input("a micro-batch without labelled items: the loss is undefined".into()));
    }
    let family = model.into();
    let model = family.encoder();
    let t = batch.tokens();
    let mut tape = Tape::backward();
    let last = model.encode(be, batch, Some(&mut tape))?;
    // The head's input rows: the labelled tokens (sparse prediction) or one row per sequence.
    let (task, labels, rows) = match *target {
        Target::MaskedLm { rows, labels } => (Task::MaskedLm, labels, Some(rows)),
        Target::Tokens { rows, labels } => (Task::Tokens, labels, Some(rows)),
        Target::Sequences { labels, .. } => (Task::Sequences, labels, None),
    };
    let pooling = match (family, target) {
        (Family::ModernBert(_), Target::Sequences { pooling, .. }) => Some(*pooling),
        _ => None,
    };
    let x = match rows {
        Some(rows) => be.gather_rows(&last, &be.upload_ids(rows)?)?,
        None => model.sequence_rows(be, &last, batch, pooling)?,
    };
    let logits = model.head(be, &x, task, &mut tape)?;
    let classes = be.shape(&logits)[1];
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Input(format!("label {bad} outside the model's {classes} classes")));
    }
    let label_ids = be.upload_ids(labels)?;
    let (loss_sum, label_ranks) = loss_and_ranks(be, &logits, &label_ids)?;

    // Backward, the forward in reverse.
    let dlogits = be.cross_entropy_backward(&logits, &label_ids, scale)?;
    let out = model.output(task)?;
    let dz = project_backward(be, out.weight, &out.weight_name, out.bias.map(|_| out.bias_name), tape.get(None, "head.z")?, &dlogits, grads)?;
    let dx = match family {
        Family::ModernBert(m) => modernbert::head_backward(be, m, &tape, &dz, grads)?,
        Family::Bert(m) => bert::head_backward(be, m, task, &tape, &dz, grads)?,
    };
    let d_last = match (rows, pooling) {
        (Some(rows), _) => be.scatter_rows(&dx, &be.upload_ids(rows)?, t)?,
        (None, Some(Pooling::Mean)) => be.mean_pool_backward(&dx, &batch.seqs)?,
        (None, _) => be.scatter_rows(&dx, &be.upload_ids(batch.first_rows())?, t)?,
    };
    match family {
        Family::ModernBert(m) => modernbert::encoder_backward(be, m, batch, ids, &tape, &d_last, grads)?,
        Family::Bert(m) => bert::encoder_backward(be, m, batch, ids, &tape, &d_last, grads)?,
    }
    Ok(StepOutput { loss_sum, label_ranks })
}
