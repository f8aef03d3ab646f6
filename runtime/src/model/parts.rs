//! The parts both families are built from: `nn.Linear`, `nn.LayerNorm`, the residual stream,
//! row chunking for tensors wider than one device binding, and the loader that reads a part's
//! tensors from a checkpoint by name.

use kernels::Backend;

use super::Ctx;
use crate::config::LayerType;
use crate::weights::WeightSource;
use crate::{Error, Result};

/// `nn.Linear`: y = x·Wᵀ (+ b).
pub struct Linear<B: Backend> {
    pub weight: B::Tensor,
    pub bias: Option<B::Tensor>,
}

/// `nn.LayerNorm` over the last axis, bias optional.
pub struct LayerNorm<B: Backend> {
    pub weight: B::Tensor,
    pub bias: Option<B::Tensor>,
    pub eps: f32,
}

impl<B: Backend> Linear<B> {
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.linear(x, &self.weight, self.bias.as_ref())?)
    }
    /// `{name}.weight` (and `{name}.bias`), for a `parameters_mut` list.
    pub fn push<'a>(&'a mut self, out: &mut Vec<(String, &'a mut B::Tensor)>, name: &str) {
        out.push((format!("{name}.weight"), &mut self.weight));
        if let Some(b) = self.bias.as_mut() {
            out.push((format!("{name}.bias"), b));
        }
    }
}

impl<B: Backend> LayerNorm<B> {
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)?)
    }
    /// (x + y, LN(x + y)): a residual add and this norm in one pass.
    pub fn add_forward(&self, be: &B, x: &B::Tensor, y: &B::Tensor) -> Result<(B::Tensor, B::Tensor)> {
        Ok(be.add_layer_norm(x, y, &self.weight, self.bias.as_ref(), self.eps)?)
    }
    /// `{name}.weight` (and `{name}.bias`), for a `parameters_mut` list.
    pub fn push<'a>(&'a mut self, out: &mut Vec<(String, &'a mut B::Tensor)>, name: &str) {
        out.push((format!("{name}.weight"), &mut self.weight));
        if let Some(b) = self.bias.as_mut() {
            out.push((format!("{name}.bias"), b));
        }
    }
}

/// The residual stream of a pre-LN encoder, x [T, H], with the branch output not yet added.
/// `x += y` is deferred until the next norm reads x, which then adds and normalises in one pass
/// (`add_layer_norm`): the layer code reads `x += attn(LN(x)); x += mlp(LN(x))` while the
/// device makes one pass per norm.
pub struct Residual<B: Backend> {
    x: B::Tensor,
    pending: Option<B::Tensor>,
    /// The trace name x takes once the pending add is done (`layer_{i}`).
    label: Option<String>,
}

impl<B: Backend> Residual<B> {
    pub fn new(x: B::Tensor) -> Self {
        Residual { x, pending: None, label: None }
    }
    /// x += y.
    pub fn add(&mut self, be: &B, y: B::Tensor, ctx: &mut Ctx<B>) -> Result<()> {
        self.settle(be, ctx)?;
        self.pending = Some(y);
        Ok(())
    }
    /// Trace x under `name` once what was added to it is in.
    pub fn record_as(&mut self, ctx: &Ctx<B>, name: impl FnOnce() -> String) {
        if ctx.tape.trace.is_some() {
            self.label = Some(name());
        }
    }
    /// LN(x), x having taken what was added to it; x is kept for the backward as `key` (the
    /// norm's input).
    pub fn norm(&mut self, be: &B, norm: &LayerNorm<B>, ctx: &mut Ctx<B>, key: &'static str) -> Result<B::Tensor> {
        let h = match self.pending.take() {
            Some(y) => {
                let (x, h) = norm.add_forward(be, &self.x, &y)?;
                self.x = x;
                h
            }
            None => norm.forward(be, &self.x)?,
        };
        self.settle(be, ctx)?;
        ctx.save(key, &self.x);
        Ok(h)
    }
    /// x itself, kept for the backward as `key`.
    pub fn value(&mut self, be: &B, ctx: &mut Ctx<B>, key: &'static str) -> Result<&B::Tensor> {
        self.settle(be, ctx)?;
        ctx.save(key, &self.x);
        Ok(&self.x)
    }
    fn settle(&mut self, be: &B, ctx: &mut Ctx<B>) -> Result<()> {
        if let Some(y) = self.pending.take() {
            self.x = be.add(&self.x, &y)?;
        }
        if let Some(name) = self.label.take() {
            ctx.record(|| name, &self.x);
        }
        Ok(())
    }
}

/// cos and sin tables [P, hd/2] for one RoPE base.
pub struct RopeTable<B: Backend> {
    pub cos: B::Tensor,
    pub sin: B::Tensor,
}

/// ModernBERT's rotary tables: one per layer type, and the sliding layers' window.
pub struct Ropes<B: Backend> {
    pub full: RopeTable<B>,
    pub sliding: RopeTable<B>,
    /// Half-width: key j is visible from query i iff |i − j| ≤ window.
    pub window: usize,
}

impl<B: Backend> Ropes<B> {
    /// The tables for `head_dim` over `positions`, with the global and local bases.
    pub fn new(be: &B, head_dim: usize, positions: usize, global_theta: f64, local_theta: f64, window: usize) -> Result<Self> {
        let table = |theta: f64| -> Result<RopeTable<B>> {
            let (cos, sin) = kernels::rope::rope_tables(theta, head_dim, positions);
            let shape = [positions, head_dim / 2];
            Ok(RopeTable { cos: be.upload_vec(cos, &shape)?, sin: be.upload_vec(sin, &shape)? })
        };
        Ok(Ropes { full: table(global_theta)?, sliding: table(local_theta)?, window })
    }
    /// The table of a layer type, and its window (`None`: global attention).
    pub fn of(&self, kind: LayerType) -> (&RopeTable<B>, Option<usize>) {
        match kind {
            LayerType::Full => (&self.full, None),
            LayerType::Sliding => (&self.sliding, Some(self.window)),
        }
    }
}

/// f(x) over rows x [T, K] → [T, N], in row chunks when an intermediate of `widest` values per
/// row would not fit one device binding (ModernBERT-large's MLP at 8,192 tokens). A training
/// forward does not chunk: it keeps the intermediates whole for the backward.
pub fn in_row_chunks<B: Backend>(be: &B, x: &B::Tensor, widest: usize, f: impl Fn(&B::Tensor) -> Result<B::Tensor>) -> Result<B::Tensor> {
    let t = be.shape(x)[0];
    let rows = (be.max_binding_elements(be.activation_dtype()) / widest.max(1)).max(1);
    if t <= rows {
        return f(x);
    }
    let mut parts = Vec::new();
    for start in (0..t).step_by(rows) {
        parts.push(f(&be.slice_rows(x, start, (start + rows).min(t))?)?);
    }
    Ok(be.concat_rows(&parts)?)
}

/// Reads a model's tensors out of a checkpoint onto a backend, checking every shape. Encoder
/// tensors carry the family's prefix in task checkpoints (`model.`, `bert.`) and none in a bare
/// encoder; TF-era conversions spell LayerNorm parameters `gamma`/`beta`.
pub(crate) struct Loader<'a, B: Backend, S: WeightSource> {
    pub be: &'a B,
    pub ckpt: &'a S,
    prefix: &'static str,
    /// Plain f32 tensors that training ops can read and replace (`upload_vec`), instead of the
    /// backend's inference storage (`upload_weight`: packed, f16, bf16).
    trainable: bool,
}

impl<'a, B: Backend, S: WeightSource> Loader<'a, B, S> {
    /// The prefix is `task_prefix` when the checkpoint stores `{task_prefix}{probe}`, none when
    /// it stores `probe` bare.
    pub fn new(be: &'a B, ckpt: &'a S, task_prefix: &'static str, probe: &str, trainable: bool) -> Result<Self> {
        let prefix = if ckpt.contains(&format!("{task_prefix}{probe}")) {
            task_prefix
        } else if ckpt.contains(probe) {
            ""
        } else {
            return Err(ckpt.missing(&format!("{task_prefix}{probe}")));
        };
        Ok(Loader { be, ckpt, prefix, trainable })
    }
    /// The stored name of an encoder tensor.
    pub fn enc(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
    /// `name` as stored: the `gamma`/`beta` spelling when only that is present.
    pub fn resolve(&self, name: &str) -> String {
        if !self.ckpt.contains(name) {
            for (new, old) in [(".LayerNorm.weight", ".LayerNorm.gamma"), (".LayerNorm.bias", ".LayerNorm.beta")] {
                if let Some(alt) = name.strip_suffix(new).map(|stem| format!("{stem}{old}")) {
                    if self.ckpt.contains(&alt) {
                        return alt;
                    }
                }
            }
        }
        name.to_string()
    }
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.ckpt.f32(&self.resolve(name), shape)
    }
    pub fn upload(&self, values: Vec<f32>, shape: &[usize]) -> Result<B::Tensor> {
        Ok(if self.trainable { self.be.upload_vec(values, shape)? } else { self.be.upload_weight(values, shape)? })
    }
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        self.upload(self.values(name, shape)?, shape)
    }
    /// An encoder layer's weight matrix: like `upload`, in int8 on a backend in int8 mode.
    pub fn upload_layer_matrix(&self, values: Vec<f32>, shape: &[usize]) -> Result<B::Tensor> {
        Ok(if self.trainable { self.be.upload_vec(values, shape)? } else { self.be.upload_linear_weight(values, shape)? })
    }
    /// `{name}.weight` [out, inp] and, with `bias`, `{name}.bias` [out].
    pub fn linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        let weight = self.tensor(&format!("{name}.weight"), &[out, inp])?;
        self.with_bias(weight, name, out, bias)
    }
    /// As `linear`, for the products inside the encoder layers (attention's projections, the MLP):
    /// the ones an int8 backend runs in int8. Embeddings and heads use `linear`.
    pub fn layer_linear(&self, name: &str, out: usize, inp: usize, bias: bool) -> Result<Linear<B>> {
        let shape = [out, inp];
        let weight = self.upload_layer_matrix(self.values(&format!("{name}.weight"), &shape)?, &shape)?;
        self.with_bias(weight, name, out, bias)
    }
    fn with_bias(&self, weight: B::Tensor, name: &str, out: usize, bias: bool) -> Result<Linear<B>> {
        Ok(Linear { weight, bias: if bias { Some(self.tensor(&format!("{name}.bias"), &[out])?) } else { None } })
    }
    /// `{name}.weight` [h] and, with `bias`, `{name}.bias` [h].
    pub fn norm(&self, name: &str, h: usize, bias: bool, eps: f32) -> Result<LayerNorm<B>> {
        Ok(LayerNorm {
            weight: self.tensor(&format!("{name}.weight"), &[h])?,
            bias: if bias { Some(self.tensor(&format!("{name}.bias"), &[h])?) } else { None },
            eps,
        })
    }
    /// The `classifier` (a plain nn.Linear [C, H] with its bias) and its labels, when the
    /// checkpoint has one or the architecture needs one; `id2label` must match its rows.
    pub fn classifier(&self, h: usize, wanted: bool, labels: &[String], source: &str) -> Result<(Option<Linear<B>>, Vec<String>)> {
        let ckpt = self.ckpt;
        if !ckpt.contains("classifier.weight") && !wanted {
            return Ok((None, Vec::new()));
        }
        let shape = ckpt.shape_of("classifier.weight").ok_or_else(|| ckpt.missing("classifier.weight"))?;
        let n = shape.first().copied().unwrap_or(0);
        if !labels.is_empty() && n != labels.len() {
            return Err(Error::weights(
                &ckpt.location("classifier.weight"),
                format!("tensor \"classifier.weight\" has {n} rows, but {source} lists {} labels in \"id2label\"", labels.len()),
            ));
        }
        let labels = if labels.is_empty() { (0..n).map(|k| format!("LABEL_{k}")).collect() } else { labels.to_vec() };
        Ok((Some(self.linear("classifier", n, h, true)?), labels))
    }
}
