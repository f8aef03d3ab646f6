//! The backward pass, llm.c style: the encoder's forward once more, keeping what the backward
//! needs, then the same calls in reverse. Every op is a `Backend` op, so the trainer runs on the
//! same kernels as the runtime (cubecl on any GPU, or the CPU backend).
//!
//! Shapes: T tokens of an unpadded batch, H hidden, I intermediate, R labelled rows, V vocab,
//! C classes. Gradients are accumulated per parameter name (`Grads`), the checkpoint's names.

#![allow(non_snake_case)] // the checkpoint's names: Wqkv, Wo, Wi

use std::collections::HashMap;

use kernels::Backend;
use runtime::config::{LayerType, Pooling};
use runtime::model::{Batch, Layer, LayerNorm, Linear};
use runtime::ModernBert;

use crate::{Error, Result};

/// A model the optimizer and the checkpoint writer can walk: its parameters by checkpoint name.
pub trait Parameters<B: Backend> {
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)>;
}

impl<B: Backend> Parameters<B> for ModernBert<B> {
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        ModernBert::parameters_mut(self)
    }
}

impl<B: Backend> Parameters<B> for runtime::Bert<B> {
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        runtime::Bert::parameters_mut(self)
    }
}

impl<B: Backend> Parameters<B> for runtime::Model<B> {
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        runtime::Model::parameters_mut(self)
    }
}

/// Forward and backward of one micro-batch through a model of either family
/// ([`forward_backward`] for ModernBERT, [`crate::bert::forward_backward`] for classic BERT).
pub fn forward_backward_model<B: Backend>(
    be: &B,
    model: &runtime::Model<B>,
    batch: &Batch<B>,
    ids: &[u32],
    target: &Target,
    scale: f32,
    grads: &mut Grads<B>,
) -> Result<StepOutput> {
    match model {
        runtime::Model::ModernBert(m) => forward_backward(be, m, batch, ids, target, scale, grads),
        runtime::Model::Bert(m) => crate::bert::forward_backward(be, m, batch, ids, target, scale, grads),
    }
}

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
    /// Sequence classification: one class per sequence.
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

/// Names under which the encoder's parameters are stored in this model's checkpoint.
struct Names {
    p: &'static str,
}

impl Names {
    fn of<B: Backend>(model: &ModernBert<B>) -> Self {
        let task = model.head.is_some() || model.decoder.is_some() || model.classifier.is_some();
        Names { p: if task { "model." } else { "" } }
    }
    fn enc(&self, name: &str) -> String {
        format!("{}{name}", self.p)
    }
}

pub(crate) fn linear_backward<B: Backend>(be: &B, l: &Linear<B>, name: &str, x: &B::Tensor, dy: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    grads.add(be, &format!("{name}.weight"), be.matmul_tn(dy, x)?)?;
    if l.bias.is_some() {
        grads.add(be, &format!("{name}.bias"), be.sum_rows(dy)?)?;
    }
    Ok(be.matmul(dy, &l.weight)?)
}

pub(crate) fn norm_backward<B: Backend>(be: &B, n: &LayerNorm<B>, name: &str, x: &B::Tensor, dy: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let (dx, dw) = be.layer_norm_backward(x, &n.weight, dy, n.eps)?;
    grads.add(be, &format!("{name}.weight"), dw)?;
    if n.bias.is_some() {
        grads.add(be, &format!("{name}.bias"), be.sum_rows(dy)?)?;
    }
    Ok(dx)
}

/// What one layer's backward needs from its forward.
struct LayerCache<B: Backend> {
    x_in: B::Tensor,
    /// Input of Wqkv: LN_attn(x_in), or x_in in layer 0.
    h: B::Tensor,
    /// q, k rotated; v.
    qkv: B::Tensor,
    o: B::Tensor,
    lse: B::Tensor,
    x_mid: B::Tensor,
    /// LN_mlp(x_mid), Wi's output, GeGLU's output.
    hm: B::Tensor,
    u: B::Tensor,
    a: B::Tensor,
}

/// The encoder's saved activations.
pub struct EncoderCache<B: Backend> {
    /// E[ids], before the embedding norm.
    e: B::Tensor,
    layers: Vec<LayerCache<B>>,
    /// The residual stream before the final norm.
    x_last: B::Tensor,
}

/// The encoder forward (same ops as `ModernBert::encode`), keeping the backward's inputs.
pub fn encode<B: Backend>(be: &B, model: &ModernBert<B>, batch: &Batch<B>) -> Result<(B::Tensor, EncoderCache<B>)> {
    let c = &model.config;
    let nh = c.num_attention_heads;
    let e = be.embedding(&model.embeddings.tok_embeddings, &batch.ids)?;
    let mut x = model.embeddings.norm.forward(be, &e)?;
    let mut layers = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        let h = match &layer.attn_norm {
            Some(n) => n.forward(be, &x)?,
            None => x.clone(),
        };
        let qkv = layer.attn.Wqkv.forward(be, &h)?;
        let (rope, window) = rope_and_window(model, layer);
        let qkv = be.rope(&qkv, &batch.seqs, &rope.cos, &rope.sin, nh)?;
        let (o, lse) = be.attention(&qkv, &batch.seqs, nh, window)?;
        let x_mid = be.add(&x, &layer.attn.Wo.forward(be, &o)?)?;
        let hm = layer.mlp_norm.forward(be, &x_mid)?;
        let u = layer.mlp.Wi.forward(be, &hm)?;
        let a = be.geglu(&u)?;
        let x_out = be.add(&x_mid, &layer.mlp.Wo.forward(be, &a)?)?;
        layers.push(LayerCache { x_in: x, h, qkv, o, lse, x_mid, hm, u, a });
        x = x_out;
    }
    let last = model.final_norm.forward(be, &x)?;
    Ok((last, EncoderCache { e, layers, x_last: x }))
}

fn rope_and_window<'a, B: Backend>(model: &'a ModernBert<B>, layer: &Layer<B>) -> (&'a runtime::model::RopeTable<B>, Option<usize>) {
    let window = match layer.kind {
        LayerType::Full => None,
        LayerType::Sliding => Some(model.config.window()),
    };
    (model.rope_table(layer.kind), window)
}

/// The encoder backward: d last_hidden_state [T, H] → parameter gradients (the token embedding
/// gets the lookup's scatter-add).
pub fn encode_backward<B: Backend>(
    be: &B,
    model: &ModernBert<B>,
    batch: &Batch<B>,
    ids: &[u32],
    cache: &EncoderCache<B>,
    d_last: &B::Tensor,
    grads: &mut Grads<B>,
) -> Result<()> {
    let n = Names::of(model);
    let nh = model.config.num_attention_heads;
    let mut dx = norm_backward(be, &model.final_norm, &n.enc("final_norm"), &cache.x_last, d_last, grads)?;
    for (i, (layer, lc)) in model.layers.iter().zip(&cache.layers).enumerate().rev() {
        let l = n.enc(&format!("layers.{i}"));
        // x_out = x_mid + Wo_mlp · GeGLU(Wi · LN_mlp(x_mid))
        let da = linear_backward(be, &layer.mlp.Wo, &format!("{l}.mlp.Wo"), &lc.a, &dx, grads)?;
        let du = be.geglu_backward(&lc.u, &da)?;
        let dhm = linear_backward(be, &layer.mlp.Wi, &format!("{l}.mlp.Wi"), &lc.hm, &du, grads)?;
        let dx_mid = be.add(&dx, &norm_backward(be, &layer.mlp_norm, &format!("{l}.mlp_norm"), &lc.x_mid, &dhm, grads)?)?;
        // x_mid = x_in + Wo · Attention(RoPE(Wqkv · h))
        let d_o = linear_backward(be, &layer.attn.Wo, &format!("{l}.attn.Wo"), &lc.o, &dx_mid, grads)?;
        let (rope, window) = rope_and_window(model, layer);
        let dqkv = be.attention_backward(&lc.qkv, &lc.o, &lc.lse, &d_o, &batch.seqs, nh, window)?;
        let dqkv = be.rope_backward(&dqkv, &batch.seqs, &rope.cos, &rope.sin, nh)?;
        let dh = linear_backward(be, &layer.attn.Wqkv, &format!("{l}.attn.Wqkv"), &lc.h, &dqkv, grads)?;
        let dx_in = match &layer.attn_norm {
            Some(norm) => norm_backward(be, norm, &format!("{l}.attn_norm"), &lc.x_in, &dh, grads)?,
            None => dh,
        };
        dx = be.add(&dx_mid, &dx_in)?;
    }
    let de = norm_backward(be, &model.embeddings.norm, &n.enc("embeddings.norm"), &cache.e, &dx, grads)?;
    let vocab = model.config.vocab_size;
    grads.add(be, &n.enc("embeddings.tok_embeddings.weight"), be.embedding_backward(ids, &de, vocab)?)?;
    Ok(())
}

/// The prediction head's saved activations: z = LN(GELU(dense(x))).
struct HeadCache<B: Backend> {
    x: B::Tensor,
    d: B::Tensor,
    g: B::Tensor,
}

fn head_forward<B: Backend>(be: &B, model: &ModernBert<B>, x: &B::Tensor) -> Result<(B::Tensor, HeadCache<B>)> {
    let head = model.head.as_ref().ok_or_else(|| Error::Input(format!("{}: the model has no prediction head (head.dense)", model.config.source)))?;
    let d = head.dense.forward(be, x)?;
    let g = be.gelu(&d)?;
    let z = head.norm.forward(be, &g)?;
    Ok((z, HeadCache { x: x.clone(), d, g }))
}

fn head_backward<B: Backend>(be: &B, model: &ModernBert<B>, hc: &HeadCache<B>, dz: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let head = model.head.as_ref().expect("head_forward checked it");
    let dg = norm_backward(be, &head.norm, "head.norm", &hc.g, dz, grads)?;
    let dd = be.gelu_backward(&hc.d, &dg)?;
    linear_backward(be, &head.dense, "head.dense", &hc.x, &dd, grads)
}

/// Σ cross-entropy over logits [N, C] against `labels` [N], and each label's rank among its
/// logits (how many classes score strictly higher), computed on the device: 2·N numbers come
/// back, never the N × C logits.
pub fn loss_and_ranks<B: Backend>(be: &B, logits: &B::Tensor, labels: &B::Ids) -> Result<(f64, Vec<u32>)> {
    let per_row = kernels::block_on(be.read(&be.cross_entropy(logits, labels)?))?;
    let ranks = kernels::block_on(be.read(&be.label_rank(logits, labels)?))?;
    Ok((per_row.iter().map(|&v| v as f64).sum(), ranks.into_iter().map(|r| r as u32).collect()))
}

/// Forward and backward of one micro-batch. The loss is Σ CE over the target's labelled items,
/// and the gradients added to `grads` are those of `scale` · that sum (scale = 1 / the labelled
/// items of the whole optimizer step, so micro-batches add up to the mean over all of them).
pub fn forward_backward<B: Backend>(
    be: &B,
    model: &ModernBert<B>,
    batch: &Batch<B>,
    ids: &[u32],
    target: &Target,
    scale: f32,
    grads: &mut Grads<B>,
) -> Result<StepOutput> {
    if target.count() == 0 {
        return Err(Error::Input("a micro-batch without labelled items: the loss is undefined".into()));
    }
    let t = batch.tokens();
    let (last, cache) = encode(be, model, batch)?;
    // The head's input rows: the labelled tokens (sparse prediction) or the pooled sequences.
    let (x, labels) = match target {
        Target::MaskedLm { rows, labels } | Target::Tokens { rows, labels } => (be.gather_rows(&last, &be.upload_ids(rows)?)?, *labels),
        Target::Sequences { labels, pooling } => (model.pool(be, &last, batch, *pooling)?, *labels),
    };
    let (z, hc) = head_forward(be, model, &x)?;
    // The output projection: the (tied) decoder for MLM, the classifier otherwise.
    let (logits, out_weight, out_bias, weight_name, bias_name) = match target {
        Target::MaskedLm { .. } => {
            let decoder = model.decoder.as_ref().ok_or_else(|| Error::Input(format!("{}: the model has no masked-LM decoder", model.config.source)))?;
            let (w, wname) = match &decoder.weight {
                Some(w) => (w, "decoder.weight".to_string()),
                None => (&model.embeddings.tok_embeddings, Names::of(model).enc("embeddings.tok_embeddings.weight")),
            };
            (be.linear(&z, w, decoder.bias.as_ref())?, w, decoder.bias.as_ref(), wname, "decoder.bias".to_string())
        }
        _ => {
            let cl = model.classifier.as_ref().ok_or_else(|| Error::Input(format!("{}: the model has no classifier", model.config.source)))?;
            (cl.forward(be, &z)?, &cl.weight, cl.bias.as_ref(), "classifier.weight".to_string(), "classifier.bias".to_string())
        }
    };
    let classes = be.shape(&logits)[1];
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Input(format!("label {bad} outside the model's {classes} classes")));
    }
    let label_ids = be.upload_ids(labels)?;
    let (loss_sum, label_ranks) = loss_and_ranks(be, &logits, &label_ids)?;

    // Backward, the forward in reverse.
    let dlogits = be.cross_entropy_backward(&logits, &label_ids, scale)?;
    grads.add(be, &weight_name, be.matmul_tn(&dlogits, &z)?)?;
    if out_bias.is_some() {
        grads.add(be, &bias_name, be.sum_rows(&dlogits)?)?;
    }
    let dz = be.matmul(&dlogits, out_weight)?;
    let dx = head_backward(be, model, &hc, &dz, grads)?;
    let d_last = match target {
        Target::MaskedLm { rows, .. } | Target::Tokens { rows, .. } => be.scatter_rows(&dx, &be.upload_ids(rows)?, t)?,
        Target::Sequences { pooling: Pooling::Mean, .. } => be.mean_pool_backward(&dx, &batch.seqs)?,
        Target::Sequences { pooling: Pooling::Cls, .. } => be.scatter_rows(&dx, &be.upload_ids(&batch.cu_seqlens[..batch.sequences()])?, t)?,
    };
    encode_backward(be, model, batch, ids, &cache, &d_last, grads)?;
    Ok(StepOutput { loss_sum, label_ranks })
}
