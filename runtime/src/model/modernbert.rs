//! ModernBERT, read like the maths of spec/MODERNBERT.md and named like the checkpoint:
//! embeddings → layers (global / sliding window, RoPE, GeGLU; layer 0 has no attention norm)
//! → final norm, then the heads (masked LM, token and sequence classification).

#![allow(non_snake_case)] // field names are the checkpoint's (`Wqkv`, `Wo`, `Wi`)

use kernels::Backend;

use super::parts::{in_row_chunks, LayerNorm, Linear, Loader, Residual, RopeTable, Ropes};
use super::{pool, Batch, Ctx, Encoder, Output, Tape, Task};
use crate::config::{Architecture, LayerType, ModelConfig, ModernBertConfig, Pooling};

use crate::weights::WeightSource;
use crate::{Error, Result};

/// The encoder's prefix in task checkpoints (`ModernBertForMaskedLM` and the classifiers).
pub const PREFIX: &str = "model.";

pub struct Embeddings<B: Backend> {
    pub tok_embeddings: B::Tensor,
    pub norm: LayerNorm<B>,
}

pub struct Attention<B: Backend> {
    pub Wqkv: Linear<B>,
    pub Wo: Linear<B>,
    pub num_heads: usize,
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
    /// Global attention with the global RoPE base, or the sliding window with the local one.
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
    pub ropes: Ropes<B>,
}

impl<B: Backend> Attention<B> {
    /// Wo · Attention(RoPE(Wqkv · h)), within each sequence, `window`: the sliding half-width.
    pub fn forward(&self, be: &B, h: &B::Tensor, rope: &RopeTable<B>, window: Option<usize>, ctx: &mut Ctx<B>) -> Result<B::Tensor> {
        let seqs = &ctx.batch.seqs;
        let qkv = self.Wqkv.forward(be, h)?; // [T, 3H]: q | k | v, each head-major
        let qkv = be.rope(&qkv, seqs, &rope.cos, &rope.sin, self.num_heads)?;
        let (o, lse) = be.attention(&qkv, seqs, self.num_heads, window)?;
        for (name, t) in [("h", h), ("qkv", &qkv), ("o", &o), ("lse", &lse)] {
            ctx.save(name, t);
        }
        self.Wo.forward(be, &o)
    }
}

impl<B: Backend> Mlp<B> {
    /// Wo · (GELU(u[:, :I]) ⊙ u[:, I:]), u = Wi · h: the GELU input is the first half of Wi's
    /// output, the gate the second.
    pub fn forward(&self, be: &B, h: &B::Tensor, ctx: &mut Ctx<B>) -> Result<B::Tensor> {
        let wide = be.shape(&self.Wi.weight)[0];
        if ctx.saving() {
            let u = self.Wi.forward(be, h)?;
            let a = be.geglu(&u)?;
            for (name, t) in [("hm", h), ("u", &u), ("a", &a)] {
                ctx.save(name, t);
            }
            return self.Wo.forward(be, &a);
        }
        in_row_chunks(be, h, wide, |h| self.Wo.forward(be, &be.geglu(&self.Wi.forward(be, h)?)?))
    }
}

impl<B: Backend> Layer<B> {
    /// x += attn(LN_attn(x)); x += mlp(LN_mlp(x)). Layer 0 has no attention norm: the
    /// embedding norm has just run.
    pub fn forward(&self, be: &B, x: &mut Residual<B>, ctx: &mut Ctx<B>) -> Result<()> {
        let h = match &self.attn_norm {
            Some(norm) => x.norm(be, norm, ctx, "x_in")?,
            None => x.value(be, ctx, "x_in")?.clone(),
        };
        let ropes = ctx.ropes.ok_or_else(|| Error::Input("a ModernBERT layer runs with its RoPE tables in the context".into()))?;
        let (rope, window) = ropes.of(self.kind);
        let attn_out = self.attn.forward(be, &h, rope, window, ctx)?;
        let n = ctx.layer.unwrap_or_default();
        ctx.record(|| format!("attn_out_{n}"), &attn_out);
        x.add(be, attn_out, ctx)?;
        let h = x.norm(be, &self.mlp_norm, ctx, "x_mid")?;
        x.add(be, self.mlp.forward(be, &h, ctx)?, ctx)?;
        x.record_as(ctx, || format!("layer_{n}"));
        Ok(())
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

    pub(crate) fn load_as<S: WeightSource>(be: &B, config: ModernBertConfig, ckpt: &S, trainable: bool) -> Result<Self> {
        ModelConfig::ModernBert(config.clone()).ensure_fits()?;
        let c = &config;
        let ld = Loader::new(be, ckpt, PREFIX, "embeddings.tok_embeddings.weight", trainable)?;
        let (h, i, v, eps) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.norm_eps);
        let norm = |name: &str| ld.norm(name, h, c.norm_bias, eps);

        let embeddings =
            Embeddings { tok_embeddings: ld.tensor(&ld.enc("embeddings.tok_embeddings.weight"), &[v, h])?, norm: norm(&ld.enc("embeddings.norm"))? };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for (n, &kind) in c.layer_types.iter().enumerate() {
            let l = ld.enc(&format!("layers.{n}"));
            layers.push(Layer {
                attn_norm: if n == 0 { None } else { Some(norm(&format!("{l}.attn_norm"))?) },
                attn: Attention {
                    Wqkv: ld.layer_linear(&format!("{l}.attn.Wqkv"), 3 * h, h, c.attention_bias)?,
                    Wo: ld.layer_linear(&format!("{l}.attn.Wo"), h, h, c.attention_bias)?,
                    num_heads: c.num_attention_heads,
                },
                mlp_norm: norm(&format!("{l}.mlp_norm"))?,
                mlp: Mlp { Wi: ld.layer_linear(&format!("{l}.mlp.Wi"), 2 * i, h, c.mlp_bias)?, Wo: ld.layer_linear(&format!("{l}.mlp.Wo"), h, i, c.mlp_bias)? },
                kind,
            });
        }
        let final_norm = norm(&ld.enc("final_norm"))?;

        let arch = c.architecture;
        let classifies = matches!(arch, Some(Architecture::TokenClassification | Architecture::SequenceClassification));
        let head = if ckpt.contains("head.dense.weight") || classifies || arch == Some(Architecture::MaskedLm) {
            Some(Head { dense: ld.linear("head.dense", h, h, c.classifier_bias)?, norm: norm("head.norm")? })
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
        let (classifier, labels) = ld.classifier(h, classifies, &c.labels, &c.source)?;

        let ropes = Ropes::new(be, c.head_dim(), c.max_position_embeddings, c.global_rope_theta, c.local_rope_theta, c.window())?;
        Ok(ModernBert { ropes, embeddings, layers, final_norm, head, decoder, classifier, labels, config })
    }
}

impl<B: Backend> Encoder<B> for ModernBert<B> {
    fn config(&self) -> ModelConfig {
        ModelConfig::ModernBert(self.config.clone())
    }
    fn source(&self) -> &str {
        &self.config.source
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn context(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn labels(&self) -> &[String] {
        &self.labels
    }
    fn problem_type(&self) -> Option<&str> {
        self.config.problem_type.as_deref()
    }
    fn has_mlm(&self) -> bool {
        self.decoder.is_some()
    }
    fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }
    fn description(&self) -> String {
        match self.config.architecture {
            Some(a) => format!("{} (ModernBERT: RoPE, alternating global and sliding-window attention, GeGLU, pre-LayerNorm)", a.hf_name()),
            None => "ModernBERT (no \"architectures\" in config.json; heads found from the weights)".to_string(),
        }
    }
    fn prefix(&self) -> &'static str {
        if self.head.is_some() || self.decoder.is_some() || self.classifier.is_some() {
            PREFIX
        } else {
            ""
        }
    }

    /// In transformers' `named_parameters()` order: the encoder, then `head.*`, the untied
    /// `decoder.weight` if any, `decoder.bias`, `classifier.*`. The tied decoder is the token
    /// embedding and is not listed twice.
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        let p = self.prefix();
        let mut out: Vec<(String, &mut B::Tensor)> = Vec::new();
        out.push((format!("{p}embeddings.tok_embeddings.weight"), &mut self.embeddings.tok_embeddings));
        self.embeddings.norm.push(&mut out, &format!("{p}embeddings.norm"));
        for (n, layer) in self.layers.iter_mut().enumerate() {
            let l = format!("{p}layers.{n}");
            if let Some(an) = layer.attn_norm.as_mut() {
                an.push(&mut out, &format!("{l}.attn_norm"));
            }
            layer.attn.Wqkv.push(&mut out, &format!("{l}.attn.Wqkv"));
            layer.attn.Wo.push(&mut out, &format!("{l}.attn.Wo"));
            layer.mlp_norm.push(&mut out, &format!("{l}.mlp_norm"));
            layer.mlp.Wi.push(&mut out, &format!("{l}.mlp.Wi"));
            layer.mlp.Wo.push(&mut out, &format!("{l}.mlp.Wo"));
        }
        self.final_norm.push(&mut out, &format!("{p}final_norm"));
        if let Some(head) = self.head.as_mut() {
            head.dense.push(&mut out, "head.dense");
            head.norm.push(&mut out, "head.norm");
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
            c.push(&mut out, "classifier");
        }
        out
    }

    fn batch(&self, be: &B, sequences: &[&[u32]]) -> Result<Batch<B>> {
        Batch::upload(be, sequences, self.config.max_position_embeddings, self.config.vocab_size)
    }

    /// ModernBERT has no token types: anything but 0 is refused.
    fn batch_typed(&self, be: &B, sequences: &[&[u32]], types: &[&[u32]]) -> Result<Batch<B>> {
        if types.iter().any(|t| t.iter().any(|&k| k != 0)) {
            return Err(Error::Input(format!("{}: ModernBERT has no token types; a second segment cannot be marked", self.config.source)));
        }
        self.batch(be, sequences)
    }

    /// x₀ = LN(E[ids]) (positions enter through RoPE only); x += attn(LN(x)); x += mlp(LN(x)) per
    /// layer; last_hidden_state = LN_final(x). Traced: `embeddings`, `attn_out_{i}`, `layer_{i}`,
    /// `last_hidden_state`.
    fn encode(&self, be: &B, batch: &Batch<B>, tape: Option<&mut Tape<B>>) -> Result<B::Tensor> {
        let mut none = Tape::none();
        let mut ctx = Ctx { batch, ropes: Some(&self.ropes), layer: None, tape: tape.unwrap_or(&mut none) };
        let e = be.embedding(&self.embeddings.tok_embeddings, &batch.ids)?;
        ctx.save("e", &e);
        let x0 = self.embeddings.norm.forward(be, &e)?;
        ctx.record(|| "embeddings".into(), &x0);
        let mut x = Residual::new(x0);
        for (n, layer) in self.layers.iter().enumerate() {
            ctx.layer = Some(n);
            layer.forward(be, &mut x, &mut ctx)?;
        }
        ctx.layer = None;
        let last = x.norm(be, &self.final_norm, &mut ctx, "x_last")?;
        ctx.record(|| "last_hidden_state".into(), &last);
        Ok(last)
    }

    fn output(&self, task: Task) -> Result<Output<'_, B>> {
        let source = &self.config.source;
        Ok(match task {
            Task::MaskedLm => {
                let d = self.decoder.as_ref().ok_or_else(|| Error::Input(format!("{source}: this checkpoint has no masked-LM head (decoder)")))?;
                let (weight, weight_name) = match &d.weight {
                    Some(w) => (w, "decoder.weight".to_string()),
                    None => (&self.embeddings.tok_embeddings, format!("{}embeddings.tok_embeddings.weight", self.prefix())),
                };
                Output { weight, bias: d.bias.as_ref(), weight_name, bias_name: "decoder.bias" }
            }
            _ => {
                let c = self.classifier.as_ref().ok_or_else(|| Error::Input(format!("{source}: this checkpoint has no classifier")))?;
                Output { weight: &c.weight, bias: c.bias.as_ref(), weight_name: "classifier.weight".into(), bias_name: "classifier.bias" }
            }
        })
    }

    fn sequence_rows(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Option<Pooling>) -> Result<B::Tensor> {
        pool(be, hidden, batch, pooling.unwrap_or(self.config.classifier_pooling))
    }

    /// z = LN(GELU(dense(x))), then the (tied) decoder or the classifier.
    fn head(&self, be: &B, x: &B::Tensor, task: Task, tape: &mut Tape<B>) -> Result<B::Tensor> {
        let out = self.output(task)?;
        let head = self.head.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no prediction head (head.dense)", self.config.source)))?;
        let d = head.dense.forward(be, x)?;
        let g = be.gelu(&d)?;
        let z = head.norm.forward(be, &g)?;
        for (name, t) in [("head.x", x), ("head.d", &d), ("head.g", &g), ("head.z", &z)] {
            tape.save(None, name, t);
        }
        Ok(be.linear(&z, out.weight, out.bias)?)
    }
}
