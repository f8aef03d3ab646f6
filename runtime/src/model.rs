//! ModernBERT, read like the maths of spec/MODERNBERT.md and named like the checkpoint:
//! embeddings → layers (global / sliding window, RoPE, GeGLU; layer 0 has no attention norm)
//! → final norm, then the heads (masked LM, token and sequence classification).
//!
//! Every activation is [T, ·] over an unpadded batch (T real tokens of B sequences end to end):
//! no pad token is ever computed, from the embedding to the heads.

#![allow(non_snake_case)] // field names are the checkpoint's (`Wqkv`, `Wo`, `Wi`)

use kernels::rope::rope_tables;
use kernels::Backend;

use crate::bert::Bert;
use crate::config::{Architecture, LayerType, ModelConfig, ModernBertConfig, Pooling};
use crate::weights::WeightSource;
use crate::{Error, Result};

/// Named intermediate tensors, collected when a caller asks for them (the parity check).
pub type Trace<B> = Vec<(String, <B as Backend>::Tensor)>;

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
}

impl<B: Backend> LayerNorm<B> {
    pub fn forward(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(be.layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)?)
    }
    /// (x + y, LN(x + y)): a residual add and this norm in one pass.
    pub fn add_forward(&self, be: &B, x: &B::Tensor, y: &B::Tensor) -> Result<(B::Tensor, B::Tensor)> {
        Ok(be.add_layer_norm(x, y, &self.weight, self.bias.as_ref(), self.eps)?)
    }
}

/// `{name}.weight` (and `{name}.bias`) of a norm, for a `parameters_mut` list.
pub(crate) fn push_norm<'a, B: Backend>(out: &mut Vec<(String, &'a mut B::Tensor)>, name: String, n: &'a mut LayerNorm<B>) {
    out.push((format!("{name}.weight"), &mut n.weight));
    if let Some(b) = n.bias.as_mut() {
        out.push((format!("{name}.bias"), b));
    }
}

/// `{name}.weight` (and `{name}.bias`) of a linear layer, for a `parameters_mut` list.
pub(crate) fn push_linear<'a, B: Backend>(out: &mut Vec<(String, &'a mut B::Tensor)>, name: String, l: &'a mut Linear<B>) {
    out.push((format!("{name}.weight"), &mut l.weight));
    if let Some(b) = l.bias.as_mut() {
        out.push((format!("{name}.bias"), b));
    }
}

pub struct Embeddings<B: Backend> {
    pub tok_embeddings: B::Tensor,
    pub norm: LayerNorm<B>,
}

pub struct Attention<B: Backend> {
    pub Wqkv: Linear<B>,
    pub Wo: Linear<B>,
}

pub struct Mlp<B: Backend> {
    pub Wi: Linear<B>,
    pub Wo: Linear<B>,
}

pub struct Layer<B: Backend> {
    /// `None` in layer 0: the embedding norm plays that role.
    pub attn_norm: Option<LayerNorm<B>>,
    pub attn: Attention<B>,
    pub mlp_norm: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub kind: LayerType,
}

/// The prediction head shared by every task model: LN(GELU(dense(z))).
pub struct Head<B: Backend> {
    pub dense: Linear<B>,
    pub norm: LayerNorm<B>,
}

/// The MLM decoder: tied to the token embeddings unless the checkpoint stores `decoder.weight`.
pub struct Decoder<B: Backend> {
    pub weight: Option<B::Tensor>,
    pub bias: Option<B::Tensor>,
}

/// cos and sin tables [P, hd/2] for one RoPE base.
pub struct RopeTable<B: Backend> {
    pub cos: B::Tensor,
    pub sin: B::Tensor,
}

/// An unpadded batch ready for the encoder.
pub struct Batch<B: Backend> {
    pub ids: B::Ids,
    pub seqs: B::Seqs,
    /// [B+1] cumulative offsets: sequence b is rows cu_seqlens[b]..cu_seqlens[b+1].
    pub cu_seqlens: Vec<u32>,
    /// BERT only: token type [T] and position within its sequence [T] of every token.
    pub type_ids: Option<B::Ids>,
    pub position_ids: Option<B::Ids>,
    /// BERT only: the token types on the host (for the embedding backward).
    pub types: Vec<u32>,
}

/// Check and upload token ids per sequence: each non-empty, within `context` and `vocab`.
pub(crate) fn upload_batch<B: Backend>(be: &B, sequences: &[&[u32]], context: usize, vocab: usize) -> Result<Batch<B>> {
    let mut cu = vec![0u32];
    let mut ids = Vec::with_capacity(sequences.iter().map(|s| s.len()).sum());
    for (n, s) in sequences.iter().enumerate() {
        if s.is_empty() {
            return Err(Error::Input(format!("sequence {n} is empty")));
        }
        if s.len() > context {
            return Err(Error::Input(format!("sequence {n} has {} tokens, more than the model's context of {context} (split it into windows)", s.len())));
        }
        if let Some(&bad) = s.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Input(format!("sequence {n} holds token id {bad}, outside the vocabulary of {vocab}")));
        }
        ids.extend_from_slice(s);
        cu.push(ids.len() as u32);
    }
    if sequences.is_empty() {
        return Err(Error::Input("an empty batch".into()));
    }
    Ok(Batch { ids: be.upload_ids(&ids)?, seqs: be.seqs(&cu)?, cu_seqlens: cu, type_ids: None, position_ids: None, types: Vec::new() })
}

impl<B: Backend> Batch<B> {
    pub fn tokens(&self) -> usize {
        *self.cu_seqlens.last().unwrap() as usize
    }
    pub fn sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }
}

pub struct ModernBert<B: Backend> {
    pub config: ModernBertConfig,
    pub embeddings: Embeddings<B>,
    pub layers: Vec<Layer<B>>,
    pub final_norm: LayerNorm<B>,
    pub head: Option<Head<B>>,
    pub decoder: Option<Decoder<B>>,
    pub classifier: Option<Linear<B>>,
    /// Labels of the classifier (from `id2label`, or LABEL_i).
    pub labels: Vec<String>,
    rope_full: RopeTable<B>,
    rope_sliding: RopeTable<B>,
}

/// Reads tensors out of a checkpoint onto a backend, checking every shape against the config.
struct Loader<'a, B: Backend, S: WeightSource> {
    be: &'a B,
    ckpt: &'a S,
    /// `model.` inside task checkpoints, empty for a bare `ModernBertModel`.
    prefix: &'static str,
    /// Plain f32 tensors that training ops can read and replace (`upload_vec`), instead of the
    /// backend's inference storage (`upload_weight`: packed, f16, bf16).
    trainable: bool,
}

impl<B: Backend, S: WeightSource> Loader<'_, B, S> {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        let values = self.ckpt.f32(name, shape)?;
        Ok(if self.trainable { self.be.upload_vec(values, shape)? } else { self.be.upload_weight(values, shape)? })
    }
    fn encoder(&self, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        self.tensor(&format!("{}{name}", self.prefix), shape)
    }
    fn linear(&self, name: &str, out: usize, inp: usize, bias: bool, encoder: bool) -> Result<Linear<B>> {
        let p = if encoder { self.prefix } else { "" };
        Ok(Linear {
            weight: self.tensor(&format!("{p}{name}.weight"), &[out, inp])?,
            bias: if bias { Some(self.tensor(&format!("{p}{name}.bias"), &[out])?) } else { None },
        })
    }
    fn norm(&self, name: &str, h: usize, bias: bool, eps: f32, encoder: bool) -> Result<LayerNorm<B>> {
        let p = if encoder { self.prefix } else { "" };
        Ok(LayerNorm {
            weight: self.tensor(&format!("{p}{name}.weight"), &[h])?,
            bias: if bias { Some(self.tensor(&format!("{p}{name}.bias"), &[h])?) } else { None },
            eps,
        })
    }
}

impl<B: Backend> ModernBert<B> {
    /// Load from a checkpoint, with or without the `model.` prefix; every head whose tensors are
    /// present is loaded (an MLM, token or sequence classifier checkpoint, unchanged).
    pub fn load<S: WeightSource>(be: &B, config: ModernBertConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, false)
    }

    /// Load for training: every parameter a plain f32 tensor (see `parameters_mut`).
    pub fn load_trainable<S: WeightSource>(be: &B, config: ModernBertConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, true)
    }

    fn load_as<S: WeightSource>(be: &B, config: ModernBertConfig, ckpt: &S, trainable: bool) -> Result<Self> {
        ModelConfig::ModernBert(config.clone()).ensure_fits()?;
        let c = &config;
        let prefix = if ckpt.contains("model.embeddings.tok_embeddings.weight") {
            "model."
        } else if ckpt.contains("embeddings.tok_embeddings.weight") {
            ""
        } else {
            return Err(ckpt.missing("model.embeddings.tok_embeddings.weight"));
        };
        let ld = Loader { be, ckpt, prefix, trainable };
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let eps = c.norm_eps;

        let embeddings = Embeddings {
            tok_embeddings: ld.encoder("embeddings.tok_embeddings.weight", &[v, h])?,
            norm: ld.norm("embeddings.norm", h, c.norm_bias, eps, true)?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (n, &kind) in c.layer_types.iter().enumerate() {
            let l = format!("layers.{n}");
            layers.push(Layer {
                attn_norm: if n == 0 { None } else { Some(ld.norm(&format!("{l}.attn_norm"), h, c.norm_bias, eps, true)?) },
                attn: Attention {
                    Wqkv: ld.linear(&format!("{l}.attn.Wqkv"), 3 * h, h, c.attention_bias, true)?,
                    Wo: ld.linear(&format!("{l}.attn.Wo"), h, h, c.attention_bias, true)?,
                },
                mlp_norm: ld.norm(&format!("{l}.mlp_norm"), h, c.norm_bias, eps, true)?,
                mlp: Mlp {
                    Wi: ld.linear(&format!("{l}.mlp.Wi"), 2 * i, h, c.mlp_bias, true)?,
                    Wo: ld.linear(&format!("{l}.mlp.Wo"), h, i, c.mlp_bias, true)?,
                },
                kind,
            });
        }
        let final_norm = ld.norm("final_norm", h, c.norm_bias, eps, true)?;

        let arch = c.architecture;
        let wants_head = matches!(arch, Some(Architecture::MaskedLm | Architecture::TokenClassification | Architecture::SequenceClassification));
        let head = if ckpt.contains("head.dense.weight") || wants_head {
            Some(Head { dense: ld.linear("head.dense", h, h, c.classifier_bias, false)?, norm: ld.norm("head.norm", h, c.norm_bias, eps, false)? })
        } else {
            None
        };
        let decoder = if arch == Some(Architecture::MaskedLm) || ckpt.contains("decoder.bias") || ckpt.contains("decoder.weight") {
            // Tied (the released models): the token embeddings are the decoder, whether or not a
            // copy is stored (transformers re-ties after loading). Untied: `decoder.weight`.
            let weight = if c.tie_word_embeddings { None } else { Some(ld.tensor("decoder.weight", &[v, h])?) };
            let bias = if c.decoder_bias { Some(ld.tensor("decoder.bias", &[v])?) } else { None };
            Some(Decoder { weight, bias })
        } else {
            None
        };
        let wants_classifier = matches!(arch, Some(Architecture::TokenClassification | Architecture::SequenceClassification));
        let (classifier, labels) = if ckpt.contains("classifier.weight") || wants_classifier {
            let shape = ckpt.shape_of("classifier.weight").ok_or_else(|| ckpt.missing("classifier.weight"))?;
            let n = shape.first().copied().unwrap_or(0);
            if !c.labels.is_empty() && n != c.labels.len() {
                return Err(Error::weights(
                    &ckpt.location("classifier.weight"),
                    format!("tensor \"classifier.weight\" has {n} rows, but {} lists {} labels in \"id2label\"", c.source, c.labels.len()),
                ));
            }
            let labels = if c.labels.is_empty() { (0..n).map(|k| format!("LABEL_{k}")).collect() } else { c.labels.clone() };
            // `classifier` is a plain nn.Linear: its bias is always stored.
            (Some(ld.linear("classifier", n, h, true, false)?), labels)
        } else {
            (None, Vec::new())
        };

        let hd = c.head_dim();
        let positions = c.max_position_embeddings;
        let table = |theta: f64| -> Result<RopeTable<B>> {
            let (cos, sin) = rope_tables(theta, hd, positions);
            Ok(RopeTable { cos: be.upload_vec(cos, &[positions, hd / 2])?, sin: be.upload_vec(sin, &[positions, hd / 2])? })
        };
        Ok(ModernBert {
            rope_full: table(c.global_rope_theta)?,
            rope_sliding: table(c.local_rope_theta)?,
            embeddings,
            layers,
            final_norm,
            head,
            decoder,
            classifier,
            labels,
            config,
        })
    }

    /// Every parameter tensor with its checkpoint name, in transformers' `named_parameters()`
    /// order: `model.`-prefixed encoder (no prefix for a bare encoder), then `head.*`, the
    /// untied `decoder.weight` if any, `decoder.bias`, `classifier.*`. The tied decoder is the
    /// token embedding and is not listed twice.
    pub fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        let p = if self.head.is_some() || self.decoder.is_some() || self.classifier.is_some() { "model." } else { "" };
        let mut out: Vec<(String, &mut B::Tensor)> = Vec::new();
        let (norm, linear) = (push_norm::<B>, push_linear::<B>);
        out.push((format!("{p}embeddings.tok_embeddings.weight"), &mut self.embeddings.tok_embeddings));
        norm(&mut out, format!("{p}embeddings.norm"), &mut self.embeddings.norm);
        for (n, layer) in self.layers.iter_mut().enumerate() {
            if let Some(an) = layer.attn_norm.as_mut() {
                norm(&mut out, format!("{p}layers.{n}.attn_norm"), an);
            }
            linear(&mut out, format!("{p}layers.{n}.attn.Wqkv"), &mut layer.attn.Wqkv);
            linear(&mut out, format!("{p}layers.{n}.attn.Wo"), &mut layer.attn.Wo);
            norm(&mut out, format!("{p}layers.{n}.mlp_norm"), &mut layer.mlp_norm);
            linear(&mut out, format!("{p}layers.{n}.mlp.Wi"), &mut layer.mlp.Wi);
            linear(&mut out, format!("{p}layers.{n}.mlp.Wo"), &mut layer.mlp.Wo);
        }
        norm(&mut out, format!("{p}final_norm"), &mut self.final_norm);
        if let Some(head) = self.head.as_mut() {
            linear(&mut out, "head.dense".into(), &mut head.dense);
            norm(&mut out, "head.norm".into(), &mut head.norm);
        }
        if let Some(d) = self.decoder.as_mut() {
            if let Some(w) = d.weight.as_mut() {
                out.push(("decoder.weight".into(), w));
            }
            if let Some(b) = d.bias.as_mut() {
                out.push(("decoder.bias".into(), b));
            }
        }
        if let Some(c) = self.classifier.as_mut() {
            linear(&mut out, "classifier".into(), c);
        }
        out
    }

    /// The RoPE cos/sin tables [P, hd/2] of a layer type.
    pub fn rope_table(&self, kind: LayerType) -> &RopeTable<B> {
        match kind {
            LayerType::Full => &self.rope_full,
            LayerType::Sliding => &self.rope_sliding,
        }
    }

    /// Upload an unpadded batch: token ids per sequence, each non-empty, within the context and
    /// the vocabulary.
    pub fn batch(&self, be: &B, sequences: &[&[u32]]) -> Result<Batch<B>> {
        upload_batch(be, sequences, self.config.max_position_embeddings, self.config.vocab_size)
    }

    /// The encoder: last_hidden_state [T, H]. With `trace`, also every intermediate tensor
    /// (`embeddings`, `attn_out_{i}`, `layer_{i}`, `last_hidden_state`).
    pub fn encode(&self, be: &B, batch: &Batch<B>, mut trace: Option<&mut Trace<B>>) -> Result<B::Tensor> {
        let mut record = |name: String, t: &B::Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        // x₀ = LN(E[ids]); nothing else is added (positions enter through RoPE only).
        let mut x = be.embedding(&self.embeddings.tok_embeddings, &batch.ids)?;
        x = self.embeddings.norm.forward(be, &x)?;
        record("embeddings".into(), &x);
        // Every residual add is fused with the LayerNorm that reads its result: the layer's
        // mlp_norm, the next layer's attn_norm, or the final norm (`add_layer_norm`).
        let mut h = x.clone(); // layer 0 has no attn_norm: its attention reads x itself
        for (n, layer) in self.layers.iter().enumerate() {
            let attn_out = self.attention(be, layer, &h, batch)?;
            record(format!("attn_out_{n}"), &attn_out);
            let (x1, h1) = layer.mlp_norm.add_forward(be, &x, &attn_out)?;
            let mlp_out = self.mlp(be, layer, &h1)?;
            let next_norm = match self.layers.get(n + 1) {
                Some(next) => next.attn_norm.as_ref().ok_or_else(|| Error::Input(format!("{}: layer {} has no attn_norm", self.config.source, n + 1)))?,
                None => &self.final_norm,
            };
            (x, h) = next_norm.add_forward(be, &x1, &mlp_out)?;
            record(format!("layer_{n}"), &x);
        }
        record("last_hidden_state".into(), &h);
        Ok(h)
    }

    /// attn_out = Wo · Attention(RoPE(Wqkv · h)); h is LN_attn(x), or x itself in layer 0.
    fn attention(&self, be: &B, layer: &Layer<B>, h: &B::Tensor, batch: &Batch<B>) -> Result<B::Tensor> {
        let qkv = layer.attn.Wqkv.forward(be, h)?; // [T, 3H]: q | k | v, each head-major
        let (rope, window) = match layer.kind {
            LayerType::Full => (&self.rope_full, None),
            LayerType::Sliding => (&self.rope_sliding, Some(self.config.window())),
        };
        let nh = self.config.num_attention_heads;
        let qkv = be.rope(&qkv, &batch.seqs, &rope.cos, &rope.sin, nh)?;
        let (o, _lse) = be.attention(&qkv, &batch.seqs, nh, window)?;
        layer.attn.Wo.forward(be, &o)
    }

    /// mlp_out = Wo · (GELU(u[:, :I]) ⊙ u[:, I:]), u = Wi · h, h = LN_mlp(x). The GELU input is
    /// the first half of Wi's output, the gate the second. Rows are processed in chunks when the
    /// [T, 2I] intermediate would not fit one device binding (ModernBERT-large at 8,192 tokens).
    fn mlp(&self, be: &B, layer: &Layer<B>, h: &B::Tensor) -> Result<B::Tensor> {
        let t = be.shape(h)[0];
        let row_bytes = 2 * self.config.intermediate_size * 4;
        let rows_per_chunk = (be.device_info().max_binding_bytes / row_bytes).max(1);
        let run = |h: &B::Tensor| -> Result<B::Tensor> {
            let u = layer.mlp.Wi.forward(be, h)?;
            let a = be.geglu(&u)?;
            layer.mlp.Wo.forward(be, &a)
        };
        if t <= rows_per_chunk {
            return run(h);
        }
        let mut parts = Vec::new();
        for start in (0..t).step_by(rows_per_chunk) {
            let end = (start + rows_per_chunk).min(t);
            parts.push(run(&be.slice_rows(h, start, end)?)?);
        }
        Ok(be.concat_rows(&parts)?)
    }

    fn prediction_head(&self, be: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let head = self.head.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no prediction head (head.dense)", self.config.source)))?;
        let d = head.dense.forward(be, z)?;
        let g = be.gelu(&d)?;
        head.norm.forward(be, &g)
    }

    /// Masked-LM logits [N, V] of the given hidden rows [N, H] (pass only the rows you need:
    /// sparse prediction).
    pub fn mlm_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        let decoder = self.decoder.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no masked-LM head (decoder)", self.config.source)))?;
        let z = self.prediction_head(be, hidden)?;
        let weight = decoder.weight.as_ref().unwrap_or(&self.embeddings.tok_embeddings); // tied decoder
        Ok(be.linear(&z, weight, decoder.bias.as_ref())?)
    }

    fn classify(&self, be: &B, z: &B::Tensor) -> Result<B::Tensor> {
        let classifier = self.classifier.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no classifier", self.config.source)))?;
        let z = self.prediction_head(be, z)?;
        classifier.forward(be, &z)
    }

    /// Token-classification logits [T, C].
    pub fn token_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.classify(be, hidden)
    }

    /// Sequence-classification logits [B, C] with the given pooling (`cls`: each sequence's first
    /// token; `mean`: the mean over its tokens).
    pub fn sequence_logits(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
        let pooled = self.pool(be, hidden, batch, pooling)?;
        self.classify(be, &pooled)
    }

    /// One vector per sequence [B, H].
    pub fn pool(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
        pool(be, hidden, batch, pooling)
    }

    /// Mean cross-entropy of logits [N, C] against labels [N] (all valid), on the device.
    pub async fn mean_cross_entropy(&self, be: &B, logits: &B::Tensor, labels: &[u32]) -> Result<f32> {
        mean_cross_entropy(be, logits, labels).await
    }
}

/// One vector per sequence [B, H] from the hidden states [T, H]: each sequence's first token
/// (`cls`) or the mean over its tokens.
pub fn pool<B: Backend>(be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
    Ok(match pooling {
        Pooling::Cls => {
            let first = &batch.cu_seqlens[..batch.sequences()];
            be.gather_rows(hidden, &be.upload_ids(first)?)?
        }
        Pooling::Mean => be.mean_pool(hidden, &batch.seqs)?,
    })
}

/// Mean cross-entropy of logits [N, C] against labels [N] (all valid), on the device.
pub async fn mean_cross_entropy<B: Backend>(be: &B, logits: &B::Tensor, labels: &[u32]) -> Result<f32> {
    if labels.is_empty() {
        return Err(Error::Input("no labelled positions: the loss is undefined".into()));
    }
    let per_row = be.cross_entropy(logits, &be.upload_ids(labels)?)?;
    let values = be.read(&per_row).await?;
    Ok((values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64) as f32)
}

/// A loaded model of either family, with the operations the pipelines, the CLI and the browser
/// page need. The family-specific types stay available for what only one family has.
pub enum Model<B: Backend> {
    ModernBert(ModernBert<B>),
    Bert(Bert<B>),
}

impl<B: Backend> Model<B> {
    /// Load whichever family the config names, every head whose tensors are present.
    pub fn load<S: WeightSource>(be: &B, config: ModelConfig, ckpt: &S) -> Result<Self> {
        Ok(match config {
            ModelConfig::ModernBert(c) => Model::ModernBert(ModernBert::load(be, c, ckpt)?),
            ModelConfig::Bert(c) => Model::Bert(Bert::load(be, c, ckpt)?),
        })
    }
    /// Load for training: every parameter a plain f32 tensor.
    pub fn load_trainable<S: WeightSource>(be: &B, config: ModelConfig, ckpt: &S) -> Result<Self> {
        Ok(match config {
            ModelConfig::ModernBert(c) => Model::ModernBert(ModernBert::load_trainable(be, c, ckpt)?),
            ModelConfig::Bert(c) => Model::Bert(Bert::load_trainable(be, c, ckpt)?),
        })
    }
    /// Every parameter with its checkpoint name (the family's `parameters_mut`).
    pub fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        match self {
            Model::ModernBert(m) => m.parameters_mut(),
            Model::Bert(m) => m.parameters_mut(),
        }
    }
    /// A copy of the config it was loaded with.
    pub fn config(&self) -> ModelConfig {
        match self {
            Model::ModernBert(m) => ModelConfig::ModernBert(m.config.clone()),
            Model::Bert(m) => ModelConfig::Bert(m.config.clone()),
        }
    }
    pub fn source(&self) -> &str {
        match self {
            Model::ModernBert(m) => &m.config.source,
            Model::Bert(m) => &m.config.source,
        }
    }
    pub fn hidden_size(&self) -> usize {
        match self {
            Model::ModernBert(m) => m.config.hidden_size,
            Model::Bert(m) => m.config.hidden_size,
        }
    }
    pub fn vocab_size(&self) -> usize {
        match self {
            Model::ModernBert(m) => m.config.vocab_size,
            Model::Bert(m) => m.config.vocab_size,
        }
    }
    /// The longest sequence the model takes, special tokens included.
    pub fn context(&self) -> usize {
        match self {
            Model::ModernBert(m) => m.config.max_position_embeddings,
            Model::Bert(m) => m.config.max_position_embeddings,
        }
    }
    pub fn labels(&self) -> &[String] {
        match self {
            Model::ModernBert(m) => &m.labels,
            Model::Bert(m) => &m.labels,
        }
    }
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            Model::ModernBert(m) => m.config.problem_type.as_deref(),
            Model::Bert(m) => m.config.problem_type.as_deref(),
        }
    }
    pub fn has_mlm(&self) -> bool {
        match self {
            Model::ModernBert(m) => m.decoder.is_some(),
            Model::Bert(m) => m.mlm.is_some(),
        }
    }
    pub fn has_classifier(&self) -> bool {
        match self {
            Model::ModernBert(m) => m.classifier.is_some(),
            Model::Bert(m) => m.classifier.is_some(),
        }
    }
    /// The architecture, in words (for `info` and the browser page).
    pub fn description(&self) -> String {
        match self {
            Model::ModernBert(m) => match m.config.architecture {
                Some(a) => format!("{} (ModernBERT: RoPE, alternating global and sliding-window attention, GeGLU, pre-LayerNorm)", a.hf_name()),
                None => "ModernBERT (no \"architectures\" in config.json; heads found from the weights)".to_string(),
            },
            Model::Bert(m) => m.description(),
        }
    }
    /// Upload an unpadded batch of single-segment sequences (token types all 0).
    pub fn batch(&self, be: &B, sequences: &[&[u32]]) -> Result<Batch<B>> {
        match self {
            Model::ModernBert(m) => m.batch(be, sequences),
            Model::Bert(m) => m.batch(be, sequences, None),
        }
    }
    /// Upload an unpadded batch with token types per token (sentence pairs). ModernBERT has no
    /// token types: anything but 0 is refused.
    pub fn batch_typed(&self, be: &B, sequences: &[&[u32]], types: &[&[u32]]) -> Result<Batch<B>> {
        match self {
            Model::ModernBert(m) => {
                if types.iter().any(|t| t.iter().any(|&k| k != 0)) {
                    return Err(Error::Input(format!("{}: ModernBERT has no token types; a second segment cannot be marked", m.config.source)));
                }
                m.batch(be, sequences)
            }
            Model::Bert(m) => m.batch(be, sequences, Some(types)),
        }
    }
    /// The encoder: last_hidden_state [T, H]; with `trace`, the intermediate tensors under the
    /// reference file's names.
    pub fn encode(&self, be: &B, batch: &Batch<B>, trace: Option<&mut Trace<B>>) -> Result<B::Tensor> {
        match self {
            Model::ModernBert(m) => m.encode(be, batch, trace),
            Model::Bert(m) => m.encode(be, batch, trace),
        }
    }
    /// Masked-LM logits [N, V] of hidden rows [N, H].
    pub fn mlm_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        match self {
            Model::ModernBert(m) => m.mlm_logits(be, hidden),
            Model::Bert(m) => m.mlm_logits(be, hidden),
        }
    }
    /// Token-classification logits [T, C].
    pub fn token_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        match self {
            Model::ModernBert(m) => m.token_logits(be, hidden),
            Model::Bert(m) => m.token_logits(be, hidden),
        }
    }
    /// Sequence-classification logits [B, C]. `pooling`: ModernBERT's override of the config's
    /// `classifier_pooling`; BERT always classifies its pooler output (the tanh-projected first
    /// token), so an override is refused.
    pub fn sequence_logits(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Option<Pooling>) -> Result<B::Tensor> {
        match self {
            Model::ModernBert(m) => m.sequence_logits(be, hidden, batch, pooling.unwrap_or(m.config.classifier_pooling)),
            Model::Bert(m) => match pooling {
                None => m.sequence_logits(be, hidden, batch),
                Some(_) => Err(Error::Input(format!(
                    "{}: a BERT sequence classifier reads its pooler output (the [CLS] token through bert.pooler.dense and tanh); a pooling choice does not apply",
                    m.config.source
                ))),
            },
        }
    }
    /// One vector per sequence [B, H] of the last hidden state (embeddings).
    pub fn pool(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
        pool(be, hidden, batch, pooling)
    }
    /// Mean cross-entropy of logits [N, C] against labels [N] (all valid), on the device.
    pub async fn mean_cross_entropy(&self, be: &B, logits: &B::Tensor, labels: &[u32]) -> Result<f32> {
        mean_cross_entropy(be, logits, labels).await
    }
}
