//! Classic BERT (BioClinicalBERT, BioBERT, PubMedBERT and other BERT-layout clinical models),
//! read like the maths of `tests/fixtures-bert/README.md` and named like the checkpoint:
//! word + token-type + learned absolute position embeddings → LayerNorm, then post-LayerNorm
//! blocks (attention and GELU MLP with biases), then the heads: masked LM (transform → tied
//! decoder), token classification, and sequence classification through the tanh pooler.
//!
//! The batch is unpadded like ModernBERT's: attention stays within each sequence (the same as
//! transformers' additive key mask under right padding), and positions restart at 0 in every
//! sequence (transformers' position ids 0..S−1 under right padding).

use kernels::Backend;

use super::parts::{in_row_chunks, LayerNorm, Linear, Loader};
use super::{Batch, Ctx, Encoder, Output, Tape, Task};
use crate::config::{Architecture, BertConfig, ModelConfig, Pooling};
use crate::weights::WeightSource;
use crate::{Error, Result};

/// The encoder's prefix in task checkpoints (`BertForMaskedLM` and the classifiers).
pub const PREFIX: &str = "bert.";

pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: B::Tensor,
    pub position_embeddings: B::Tensor,
    pub token_type_embeddings: B::Tensor,
    pub norm: LayerNorm<B>,
}

/// One post-LN block. `qkv` is `attention.self.{query,key,value}` stacked at load ([3H, H] and
/// [3H]: q | k | v, each head-major), the layout the attention kernel reads.
pub struct BertLayer<B: Backend> {
    pub qkv: Linear<B>,
    /// `attention.output.dense`.
    pub attn_out: Linear<B>,
    /// `attention.output.LayerNorm`.
    pub attn_norm: LayerNorm<B>,
    /// `intermediate.dense`.
    pub intermediate: Linear<B>,
    /// `output.dense`.
    pub output: Linear<B>,
    /// `output.LayerNorm`.
    pub out_norm: LayerNorm<B>,
    pub num_heads: usize,
}

/// `cls.predictions`: LN(GELU(transform(z))) · decoderᵀ + bias; the decoder is the word
/// embeddings unless the checkpoint stores a different `cls.predictions.decoder.weight`.
pub struct BertMlmHead<B: Backend> {
    pub transform: Linear<B>,
    pub norm: LayerNorm<B>,
    pub decoder_weight: Option<B::Tensor>,
    pub bias: B::Tensor,
}

pub struct Bert<B: Backend> {
    pub config: BertConfig,
    pub embeddings: BertEmbeddings<B>,
    pub layers: Vec<BertLayer<B>>,
    /// `bert.pooler.dense` (tanh), when the checkpoint has it.
    pub pooler: Option<Linear<B>>,
    pub mlm: Option<BertMlmHead<B>>,
    pub classifier: Option<Linear<B>>,
    /// Labels of the classifier (from `id2label`, or LABEL_i).
    pub labels: Vec<String>,
    /// Where the pooler came from when it is not the checkpoint's (the parity check's note).
    pub pooler_source: Option<String>,
}

impl<B: Backend> BertLayer<B> {
    /// a = LN(x + Wo·Attention(Wqkv·x)); x' = LN(a + W2·GELU(W1·a)): post-LN, each residual add
    /// fused with the norm that follows it. Traced: `attention_{i}` (a) and `layer_{i}` (x').
    pub fn forward(&self, be: &B, x: &B::Tensor, ctx: &mut Ctx<B>) -> Result<B::Tensor> {
        let qkv = self.qkv.forward(be, x)?;
        let (o, lse) = be.attention(&qkv, &ctx.batch.seqs, self.num_heads, None)?;
        let (s1, a) = self.attn_norm.add_forward(be, x, &self.attn_out.forward(be, &o)?)?;
        let n = ctx.layer.unwrap_or_default();
        ctx.record(|| format!("attention_{n}"), &a);
        let m = self.mlp(be, &a, ctx)?;
        let (s2, out) = self.out_norm.add_forward(be, &a, &m)?;
        ctx.record(|| format!("layer_{n}"), &out);
        for (name, t) in [("x_in", x), ("qkv", &qkv), ("o", &o), ("lse", &lse), ("s1", &s1), ("a", &a), ("s2", &s2)] {
            ctx.save(name, t);
        }
        Ok(out)
    }

    /// output.dense(GELU(intermediate.dense(a))).
    fn mlp(&self, be: &B, a: &B::Tensor, ctx: &mut Ctx<B>) -> Result<B::Tensor> {
        if ctx.saving() {
            let u = self.intermediate.forward(be, a)?;
            let g = be.gelu(&u)?;
            ctx.save("u", &u);
            ctx.save("g", &g);
            return self.output.forward(be, &g);
        }
        let wide = be.shape(&self.intermediate.weight)[0];
        in_row_chunks(be, a, wide, |a| self.output.forward(be, &be.gelu(&self.intermediate.forward(be, a)?)?))
    }
}

impl<B: Backend> Bert<B> {
    /// Load from a checkpoint, with or without the `bert.` prefix; every head whose tensors are
    /// present is loaded (`BertForMaskedLM`, `BertForPreTraining`, `BertForTokenClassification`,
    /// `BertForSequenceClassification` or a bare `BertModel`, unchanged).
    pub fn load<S: WeightSource>(be: &B, config: BertConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, false)
    }

    /// Load for training: every parameter a plain f32 tensor.
    pub fn load_trainable<S: WeightSource>(be: &B, config: BertConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, true)
    }

    pub(crate) fn load_as<S: WeightSource>(be: &B, config: BertConfig, ckpt: &S, trainable: bool) -> Result<Self> {
        ModelConfig::Bert(config.clone()).ensure_fits()?;
        let c = &config;
        let ld = Loader::new(be, ckpt, PREFIX, "embeddings.word_embeddings.weight", trainable)?;
        let (h, i, v, eps) = (c.hidden_size, c.intermediate_size, c.vocab_size, c.layer_norm_eps);

        let word = ld.values(&ld.enc("embeddings.word_embeddings.weight"), &[v, h])?;
        let embeddings = BertEmbeddings {
            word_embeddings: ld.upload(word.clone(), &[v, h])?,
            position_embeddings: ld.tensor(&ld.enc("embeddings.position_embeddings.weight"), &[c.max_position_embeddings, h])?,
            token_type_embeddings: ld.tensor(&ld.enc("embeddings.token_type_embeddings.weight"), &[c.type_vocab_size, h])?,
            norm: ld.norm(&ld.enc("embeddings.LayerNorm"), h, true, eps)?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = ld.enc(&format!("encoder.layer.{l}"));
            // q | k | v stacked row-wise: one GEMM, and the layout the attention kernel reads.
            let (mut w, mut b) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
            for part in ["query", "key", "value"] {
                w.extend(ld.values(&format!("{p}.attention.self.{part}.weight"), &[h, h])?);
                b.extend(ld.values(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            layers.push(BertLayer {
                qkv: Linear { weight: ld.upload_layer_matrix(w, &[3 * h, h])?, bias: Some(ld.upload(b, &[3 * h])?) },
                attn_out: ld.layer_linear(&format!("{p}.attention.output.dense"), h, h, true)?,
                attn_norm: ld.norm(&format!("{p}.attention.output.LayerNorm"), h, true, eps)?,
                intermediate: ld.layer_linear(&format!("{p}.intermediate.dense"), i, h, true)?,
                output: ld.layer_linear(&format!("{p}.output.dense"), h, i, true)?,
                out_norm: ld.norm(&format!("{p}.output.LayerNorm"), h, true, eps)?,
                num_heads: c.num_attention_heads,
            });
        }
        let arch = c.architecture;
        let pooler = if ckpt.contains(&ld.enc("pooler.dense.weight")) || arch == Some(Architecture::SequenceClassification) {
            Some(ld.linear(&ld.enc("pooler.dense"), h, h, true)?)
        } else {
            None
        };
        let mlm = if ckpt.contains("cls.predictions.transform.dense.weight") || arch == Some(Architecture::MaskedLm) {
            // The decoder bias is `cls.predictions.bias`; older files also (or only) store it as
            // `cls.predictions.decoder.bias`, the same tensor.
            let bias_name = if ckpt.contains("cls.predictions.bias") { "cls.predictions.bias" } else { "cls.predictions.decoder.bias" };
            if !ckpt.contains(bias_name) {
                return Err(ckpt.missing("cls.predictions.bias"));
            }
            // The decoder is the word embeddings (tied), unless the file stores a different matrix
            // (transformers then loads it untied).
            let decoder_weight = match ckpt.contains("cls.predictions.decoder.weight") {
                true => {
                    let d = ld.values("cls.predictions.decoder.weight", &[v, h])?;
                    if d != word {
                        Some(ld.upload(d, &[v, h])?)
                    } else {
                        None
                    }
                }
                false => None,
            };
            Some(BertMlmHead {
                transform: ld.linear("cls.predictions.transform.dense", h, h, true)?,
                norm: ld.norm("cls.predictions.transform.LayerNorm", h, true, eps)?,
                decoder_weight,
                bias: ld.tensor(bias_name, &[v])?,
            })
        } else {
            None
        };
        let classifies = matches!(arch, Some(Architecture::TokenClassification | Architecture::SequenceClassification));
        let (classifier, labels) = ld.classifier(h, classifies, &c.labels, &c.source)?;
        Ok(Bert { embeddings, layers, pooler, mlm, classifier, labels, pooler_source: None, config })
    }

    /// Upload an unpadded batch: token ids per sequence (each non-empty, within the position
    /// table and the vocabulary) with their token types (`None`: all 0, a single segment).
    pub fn batch(&self, be: &B, sequences: &[&[u32]], types: Option<&[&[u32]]>) -> Result<Batch<B>> {
        let c = &self.config;
        let mut batch = Batch::upload(be, sequences, c.max_position_embeddings, c.vocab_size)?;
        let Some(types) = types else { return Ok(batch) };
        if types.len() != sequences.len() {
            return Err(Error::Input(format!("{} token-type sequences for {} sequences", types.len(), sequences.len())));
        }
        let mut type_ids = Vec::with_capacity(batch.tokens());
        for (n, (s, t)) in sequences.iter().zip(types).enumerate() {
            if t.len() != s.len() {
                return Err(Error::Input(format!("sequence {n} has {} tokens but {} token types", s.len(), t.len())));
            }
            if let Some(&bad) = t.iter().find(|&&k| k as usize >= c.type_vocab_size) {
                return Err(Error::Input(format!("sequence {n} has token type {bad}, but the model has {} types", c.type_vocab_size)));
            }
            type_ids.extend_from_slice(t);
        }
        batch.token_types = Some((be.upload_ids(&type_ids)?, type_ids));
        Ok(batch)
    }

    /// The token type of every token [T] on the host (all 0 without a second segment).
    pub fn types(batch: &Batch<B>) -> Vec<u32> {
        match &batch.token_types {
            Some((_, host)) => host.clone(),
            None => vec![0; batch.tokens()],
        }
    }

    /// The pooler output [B, H] = tanh(pooler.dense(hidden of each sequence's first token)).
    pub fn pooler_output(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>) -> Result<B::Tensor> {
        let first = be.gather_rows(hidden, &be.upload_ids(batch.first_rows())?)?;
        Ok(be.tanh(&self.pooler()?.forward(be, &first)?)?)
    }

    pub fn pooler(&self) -> Result<&Linear<B>> {
        let source = &self.config.source;
        self.pooler
            .as_ref()
            .ok_or_else(|| Error::Input(format!("{source}: this checkpoint has no pooler (bert.pooler.dense), which sequence classification needs")))
    }
}

impl<B: Backend> Encoder<B> for Bert<B> {
    fn config(&self) -> ModelConfig {
        ModelConfig::Bert(self.config.clone())
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
        self.mlm.is_some()
    }
    fn has_classifier(&self) -> bool {
        self.classifier.is_some()
    }
    fn description(&self) -> String {
        let name = match (&self.config.architecture_name, self.config.architecture) {
            (Some(n), _) => n.clone(),
            (None, Some(a)) => a.bert_name().to_string(),
            (None, None) => "BERT (no \"architectures\" in config.json; heads found from the weights)".to_string(),
        };
        format!(
            "{name} (classic BERT: learned absolute positions up to {}, {} token types, post-LayerNorm{})",
            self.config.max_position_embeddings,
            self.config.type_vocab_size,
            if self.config.declares_model_type { "" } else { "; config.json has no model_type and was read as BERT" }
        )
    }
    fn prefix(&self) -> &'static str {
        if self.mlm.is_some() || self.classifier.is_some() {
            PREFIX
        } else {
            ""
        }
    }

    /// In checkpoint order; LayerNorms use the modern `weight`/`bias` spelling. The fused
    /// projection is `….attention.self.qkv.{weight,bias}` ([3H, H] and [3H]: query, key and value
    /// rows stacked), which the trainer splits back into `query`, `key` and `value` when it
    /// writes a checkpoint.
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        let p = self.prefix();
        let mut out: Vec<(String, &mut B::Tensor)> = Vec::new();
        let e = &mut self.embeddings;
        out.push((format!("{p}embeddings.word_embeddings.weight"), &mut e.word_embeddings));
        out.push((format!("{p}embeddings.position_embeddings.weight"), &mut e.position_embeddings));
        out.push((format!("{p}embeddings.token_type_embeddings.weight"), &mut e.token_type_embeddings));
        e.norm.push(&mut out, &format!("{p}embeddings.LayerNorm"));
        for (n, layer) in self.layers.iter_mut().enumerate() {
            let l = format!("{p}encoder.layer.{n}");
            layer.qkv.push(&mut out, &format!("{l}.attention.self.qkv"));
            layer.attn_out.push(&mut out, &format!("{l}.attention.output.dense"));
            layer.attn_norm.push(&mut out, &format!("{l}.attention.output.LayerNorm"));
            layer.intermediate.push(&mut out, &format!("{l}.intermediate.dense"));
            layer.output.push(&mut out, &format!("{l}.output.dense"));
            layer.out_norm.push(&mut out, &format!("{l}.output.LayerNorm"));
        }
        if let Some(pooler) = self.pooler.as_mut() {
            pooler.push(&mut out, &format!("{p}pooler.dense"));
        }
        if let Some(head) = self.mlm.as_mut() {
            head.transform.push(&mut out, "cls.predictions.transform.dense");
            head.norm.push(&mut out, "cls.predictions.transform.LayerNorm");
            if let Some(w) = head.decoder_weight.as_mut() {
                out.push(("cls.predictions.decoder.weight".into(), w));
            }
            out.push(("cls.predictions.bias".into(), &mut head.bias));
        }
        if let Some(c) = self.classifier.as_mut() {
            c.push(&mut out, "classifier");
        }
        out
    }

    fn batch(&self, be: &B, sequences: &[&[u32]]) -> Result<Batch<B>> {
        Bert::batch(self, be, sequences, None)
    }
    fn batch_typed(&self, be: &B, sequences: &[&[u32]], types: &[&[u32]]) -> Result<Batch<B>> {
        Bert::batch(self, be, sequences, Some(types))
    }

    /// e = (E_word[ids] + E_type[types]) + E_pos[positions], in transformers' order; x = LN(e);
    /// then the blocks. Traced: `embeddings`, `attention_{i}`, `layer_{i}`, `last_hidden_state`.
    fn encode(&self, be: &B, batch: &Batch<B>, tape: Option<&mut Tape<B>>) -> Result<B::Tensor> {
        let mut none = Tape::none();
        let mut ctx = Ctx { batch, ropes: None, layer: None, tape: tape.unwrap_or(&mut none) };
        let emb = &self.embeddings;
        let types = match &batch.token_types {
            Some((ids, _)) => ids.clone(),
            None => be.upload_ids(&vec![0; batch.tokens()])?,
        };
        let mut e = be.embedding(&emb.word_embeddings, &batch.ids)?;
        e = be.embedding_add(&e, &emb.token_type_embeddings, &types)?;
        e = be.embedding_add(&e, &emb.position_embeddings, &be.upload_ids(&batch.positions())?)?;
        ctx.save("e", &e);
        let mut x = emb.norm.forward(be, &e)?;
        ctx.record(|| "embeddings".into(), &x);
        for (n, layer) in self.layers.iter().enumerate() {
            ctx.layer = Some(n);
            x = layer.forward(be, &x, &mut ctx)?;
        }
        ctx.record(|| "last_hidden_state".into(), &x);
        Ok(x)
    }

    fn output(&self, task: Task) -> Result<Output<'_, B>> {
        let source = &self.config.source;
        Ok(match task {
            Task::MaskedLm => {
                let head = self.mlm.as_ref().ok_or_else(|| Error::Input(format!("{source}: this checkpoint has no masked-LM head (cls.predictions)")))?;
                let (weight, weight_name) = match &head.decoder_weight {
                    Some(w) => (w, "cls.predictions.decoder.weight".to_string()),
                    None => (&self.embeddings.word_embeddings, format!("{}embeddings.word_embeddings.weight", self.prefix())),
                };
                Output { weight, bias: Some(&head.bias), weight_name, bias_name: "cls.predictions.bias" }
            }
            _ => {
                let c = self.classifier.as_ref().ok_or_else(|| Error::Input(format!("{source}: this checkpoint has no classifier")))?;
                Output { weight: &c.weight, bias: c.bias.as_ref(), weight_name: "classifier.weight".into(), bias_name: "classifier.bias" }
            }
        })
    }

    /// Each sequence's first token ([CLS]); BERT always classifies its pooler output, so a
    /// pooling choice is refused.
    fn sequence_rows(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Option<Pooling>) -> Result<B::Tensor> {
        if pooling.is_some() {
            return Err(Error::Input(format!(
                "{}: a BERT sequence classifier reads its pooler output (the [CLS] token through bert.pooler.dense and tanh); a pooling choice does not apply",
                self.config.source
            )));
        }
        Ok(be.gather_rows(hidden, &be.upload_ids(batch.first_rows())?)?)
    }

    /// Masked LM: LN(GELU(transform(x))) · decoderᵀ + bias; tokens: classifier(x); sequences:
    /// classifier(tanh(pooler(x))) of each sequence's first token.
    fn head(&self, be: &B, x: &B::Tensor, task: Task, tape: &mut Tape<B>) -> Result<B::Tensor> {
        let out = self.output(task)?;
        tape.save(None, "head.x", x);
        let z = match task {
            Task::MaskedLm => {
                let head = self
                    .mlm
                    .as_ref()
                    .ok_or_else(|| Error::Input(format!("{}: this checkpoint has no masked-LM head (cls.predictions)", self.config.source)))?;
                let d = head.transform.forward(be, x)?;
                let g = be.gelu(&d)?;
                tape.save(None, "head.d", &d);
                tape.save(None, "head.g", &g);
                head.norm.forward(be, &g)?
            }
            Task::Tokens => x.clone(),
            Task::Sequences => be.tanh(&self.pooler()?.forward(be, x)?)?,
        };
        tape.save(None, "head.z", &z);
        Ok(be.linear(&z, out.weight, out.bias)?)
    }
}
