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

use crate::config::{Architecture, BertConfig};
use crate::model::{push_linear, push_norm, Batch, LayerNorm, Linear, Trace};
use crate::weights::WeightSource;
use crate::{Error, Result};

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

/// The checkpoint's tensor names: `bert.` before the encoder in task checkpoints, nothing in a
/// bare `BertModel`; TF-era conversions call LayerNorm parameters `gamma`/`beta`.
pub struct BertNames<'a, S: WeightSource> {
    ckpt: &'a S,
    prefix: &'static str,
}

impl<'a, S: WeightSource> BertNames<'a, S> {
    pub fn new(ckpt: &'a S) -> Result<Self> {
        let prefix = if ckpt.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else if ckpt.contains("embeddings.word_embeddings.weight") {
            ""
        } else {
            return Err(ckpt.missing("bert.embeddings.word_embeddings.weight"));
        };
        Ok(BertNames { ckpt, prefix })
    }
    /// The stored name of an encoder tensor (`embeddings.…`, `encoder.…`, `pooler.…`).
    pub fn encoder(&self, name: &str) -> String {
        self.resolve(&format!("{}{name}", self.prefix))
    }
    /// The stored name of a head tensor (`cls.…`, `classifier.…`): never prefixed.
    pub fn resolve(&self, name: &str) -> String {
        if !self.ckpt.contains(name) {
            for (new, old) in [(".LayerNorm.weight", ".LayerNorm.gamma"), (".LayerNorm.bias", ".LayerNorm.beta")] {
                if let Some(stem) = name.strip_suffix(new) {
                    let alt = format!("{stem}{old}");
                    if self.ckpt.contains(&alt) {
                        return alt;
                    }
                }
            }
        }
        name.to_string()
    }
}

struct Loader<'a, B: Backend, S: WeightSource> {
    be: &'a B,
    names: BertNames<'a, S>,
    trainable: bool,
}

impl<B: Backend, S: WeightSource> Loader<'_, B, S> {
    fn values(&self, stored: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.names.ckpt.f32(stored, shape)
    }
    fn upload(&self, values: Vec<f32>, shape: &[usize]) -> Result<B::Tensor> {
        Ok(if self.trainable { self.be.upload_vec(values, shape)? } else { self.be.upload_weight(values, shape)? })
    }
    fn tensor(&self, stored: &str, shape: &[usize]) -> Result<B::Tensor> {
        self.upload(self.values(stored, shape)?, shape)
    }
    fn linear(&self, stored: impl Fn(&str) -> String, out: usize, inp: usize) -> Result<Linear<B>> {
        Ok(Linear { weight: self.tensor(&stored("weight"), &[out, inp])?, bias: Some(self.tensor(&stored("bias"), &[out])?) })
    }
    fn norm(&self, stored: impl Fn(&str) -> String, h: usize, eps: f32) -> Result<LayerNorm<B>> {
        Ok(LayerNorm { weight: self.tensor(&stored("weight"), &[h])?, bias: Some(self.tensor(&stored("bias"), &[h])?), eps })
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

    fn load_as<S: WeightSource>(be: &B, config: BertConfig, ckpt: &S, trainable: bool) -> Result<Self> {
        crate::config::ModelConfig::Bert(config.clone()).ensure_fits()?;
        let c = &config;
        let ld = Loader { be, names: BertNames::new(ckpt)?, trainable };
        let n = &ld.names;
        let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let eps = c.layer_norm_eps;
        let enc = |name: String| move |p: &str| n.encoder(&format!("{name}.{p}"));

        let word = ld.values(&n.encoder("embeddings.word_embeddings.weight"), &[v, h])?;
        let embeddings = BertEmbeddings {
            word_embeddings: ld.upload(word.clone(), &[v, h])?,
            position_embeddings: ld.tensor(&n.encoder("embeddings.position_embeddings.weight"), &[c.max_position_embeddings, h])?,
            token_type_embeddings: ld.tensor(&n.encoder("embeddings.token_type_embeddings.weight"), &[c.type_vocab_size, h])?,
            norm: ld.norm(enc("embeddings.LayerNorm".into()), h, eps)?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            // q | k | v stacked row-wise: one GEMM, and the layout the attention kernel reads.
            let (mut w, mut b) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
            for part in ["query", "key", "value"] {
                w.extend(ld.values(&n.encoder(&format!("{p}.attention.self.{part}.weight")), &[h, h])?);
                b.extend(ld.values(&n.encoder(&format!("{p}.attention.self.{part}.bias")), &[h])?);
            }
            layers.push(BertLayer {
                qkv: Linear { weight: ld.upload(w, &[3 * h, h])?, bias: Some(ld.upload(b, &[3 * h])?) },
                attn_out: ld.linear(enc(format!("{p}.attention.output.dense")), h, h)?,
                attn_norm: ld.norm(enc(format!("{p}.attention.output.LayerNorm")), h, eps)?,
                intermediate: ld.linear(enc(format!("{p}.intermediate.dense")), i, h)?,
                output: ld.linear(enc(format!("{p}.output.dense")), h, i)?,
                out_norm: ld.norm(enc(format!("{p}.output.LayerNorm")), h, eps)?,
            });
        }
        let arch = c.architecture;
        let pooler = if ckpt.contains(&n.encoder("pooler.dense.weight")) || arch == Some(Architecture::SequenceClassification) {
            Some(ld.linear(enc("pooler.dense".into()), h, h)?)
        } else {
            None
        };
        let mlm = if ckpt.contains("cls.predictions.transform.dense.weight") || arch == Some(Architecture::MaskedLm) {
            let at = |name: &'static str| move |p: &str| n.resolve(&format!("{name}.{p}"));
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
                    if d != word { Some(ld.upload(d, &[v, h])?) } else { None }
                }
                false => None,
            };
            Some(BertMlmHead {
                transform: ld.linear(at("cls.predictions.transform.dense"), h, h)?,
                norm: ld.norm(at("cls.predictions.transform.LayerNorm"), h, eps)?,
                decoder_weight,
                bias: ld.tensor(bias_name, &[v])?,
            })
        } else {
            None
        };
        let wants_classifier = matches!(arch, Some(Architecture::TokenClassification | Architecture::SequenceClassification));
        let (classifier, labels) = if ckpt.contains("classifier.weight") || wants_classifier {
            let shape = ckpt.shape_of("classifier.weight").ok_or_else(|| ckpt.missing("classifier.weight"))?;
            let k = shape.first().copied().unwrap_or(0);
            if !c.labels.is_empty() && k != c.labels.len() {
                return Err(Error::weights(
                    &ckpt.location("classifier.weight"),
                    format!("tensor \"classifier.weight\" has {k} rows, but {} lists {} labels in \"id2label\"", c.source, c.labels.len()),
                ));
            }
            let labels = if c.labels.is_empty() { (0..k).map(|j| format!("LABEL_{j}")).collect() } else { c.labels.clone() };
            (Some(ld.linear(|p| format!("classifier.{p}"), k, h)?), labels)
        } else {
            (None, Vec::new())
        };
        Ok(Bert { embeddings, layers, pooler, mlm, classifier, labels, pooler_source: None, config })
    }

    /// Upload an unpadded batch: token ids per sequence (each non-empty, within the position
    /// table and the vocabulary) with their token types (`None`: all 0, a single segment).
    pub fn batch(&self, be: &B, sequences: &[&[u32]], types: Option<&[&[u32]]>) -> Result<Batch<B>> {
        let c = &self.config;
        if let Some(t) = types {
            if t.len() != sequences.len() {
                return Err(Error::Input(format!("{} token-type sequences for {} sequences", t.len(), sequences.len())));
            }
        }
        let mut batch = crate::model::upload_batch(be, sequences, c.max_position_embeddings, c.vocab_size)?;
        let mut type_ids = Vec::with_capacity(batch.tokens());
        let mut positions = Vec::with_capacity(batch.tokens());
        for (n, s) in sequences.iter().enumerate() {
            positions.extend(0..s.len() as u32);
            match types {
                None => type_ids.extend(std::iter::repeat_n(0, s.len())),
                Some(t) => {
                    if t[n].len() != s.len() {
                        return Err(Error::Input(format!("sequence {n} has {} tokens but {} token types", s.len(), t[n].len())));
                    }
                    if let Some(&bad) = t[n].iter().find(|&&k| k as usize >= c.type_vocab_size) {
                        return Err(Error::Input(format!("sequence {n} has token type {bad}, but the model has {} types", c.type_vocab_size)));
                    }
                    type_ids.extend_from_slice(t[n]);
                }
            }
        }
        batch.type_ids = Some(be.upload_ids(&type_ids)?);
        batch.position_ids = Some(be.upload_ids(&positions)?);
        batch.types = type_ids;
        Ok(batch)
    }

    /// The encoder: last_hidden_state [T, H]. With `trace`, also `embeddings`, `attention_{i}`
    /// (the block's attention output after its LayerNorm), `layer_{i}` and `last_hidden_state`.
    pub fn encode(&self, be: &B, batch: &Batch<B>, mut trace: Option<&mut Trace<B>>) -> Result<B::Tensor> {
        let mut record = |name: String, t: &B::Tensor| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, t.clone()));
            }
        };
        let missing = || Error::Input("a BERT batch needs token types and positions (make it with Bert::batch)".into());
        let e = &self.embeddings;
        // e = (E_word[ids] + E_type[types]) + E_pos[positions], in transformers' order.
        let mut x = be.embedding(&e.word_embeddings, &batch.ids)?;
        x = be.embedding_add(&x, &e.token_type_embeddings, batch.type_ids.as_ref().ok_or_else(missing)?)?;
        x = be.embedding_add(&x, &e.position_embeddings, batch.position_ids.as_ref().ok_or_else(missing)?)?;
        x = e.norm.forward(be, &x)?;
        record("embeddings".into(), &x);
        let nh = self.config.num_attention_heads;
        for (n, layer) in self.layers.iter().enumerate() {
            // a = LN(x + Wo·Attention(Wqkv·x)); x' = LN(a + W2·GELU(W1·a)): post-LN, each residual
            // add fused with the norm that follows it.
            let qkv = layer.qkv.forward(be, &x)?;
            let (o, _lse) = be.attention(&qkv, &batch.seqs, nh, None)?;
            let (_, a) = layer.attn_norm.add_forward(be, &x, &layer.attn_out.forward(be, &o)?)?;
            record(format!("attention_{n}"), &a);
            let m = self.mlp(be, layer, &a)?;
            (_, x) = layer.out_norm.add_forward(be, &a, &m)?;
            record(format!("layer_{n}"), &x);
        }
        record("last_hidden_state".into(), &x);
        Ok(x)
    }

    /// output.dense(GELU(intermediate.dense(a))), in row chunks when the [T, I] intermediate
    /// would not fit one device binding.
    fn mlp(&self, be: &B, layer: &BertLayer<B>, a: &B::Tensor) -> Result<B::Tensor> {
        let t = be.shape(a)[0];
        let rows_per_chunk = (be.device_info().max_binding_bytes / (self.config.intermediate_size * 4)).max(1);
        let run = |a: &B::Tensor| -> Result<B::Tensor> {
            let u = layer.intermediate.forward(be, a)?;
            layer.output.forward(be, &be.gelu(&u)?)
        };
        if t <= rows_per_chunk {
            return run(a);
        }
        let mut parts = Vec::new();
        for start in (0..t).step_by(rows_per_chunk) {
            parts.push(run(&be.slice_rows(a, start, (start + rows_per_chunk).min(t))?)?);
        }
        Ok(be.concat_rows(&parts)?)
    }

    /// Masked-LM logits [N, V] of the given hidden rows [N, H].
    pub fn mlm_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        let head = self.mlm.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no masked-LM head (cls.predictions)", self.config.source)))?;
        let t = head.norm.forward(be, &be.gelu(&head.transform.forward(be, hidden)?)?)?;
        let w = head.decoder_weight.as_ref().unwrap_or(&self.embeddings.word_embeddings);
        Ok(be.linear(&t, w, Some(&head.bias))?)
    }

    fn classifier(&self) -> Result<&Linear<B>> {
        self.classifier.as_ref().ok_or_else(|| Error::Input(format!("{}: this checkpoint has no classifier", self.config.source)))
    }

    /// Token-classification logits [T, C] = classifier(last_hidden_state).
    pub fn token_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.classifier()?.forward(be, hidden)
    }

    /// The pooler output [B, H] = tanh(pooler.dense(hidden of each sequence's first token)).
    pub fn pooler_output(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>) -> Result<B::Tensor> {
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::Input(format!("{}: this checkpoint has no pooler (bert.pooler.dense), which sequence classification needs", self.config.source))
        })?;
        let first = be.gather_rows(hidden, &be.upload_ids(&batch.cu_seqlens[..batch.sequences()])?)?;
        Ok(be.tanh(&pooler.forward(be, &first)?)?)
    }

    /// Sequence-classification logits [B, C] = classifier(pooler_output).
    pub fn sequence_logits(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>) -> Result<B::Tensor> {
        let classifier = self.classifier()?;
        classifier.forward(be, &self.pooler_output(be, hidden, batch)?)
    }

    /// The checkpoint prefix of the encoder's tensors when saved: `bert.` under a head, none in
    /// a bare `BertModel` (transformers' layout).
    pub fn prefix(&self) -> &'static str {
        if self.mlm.is_some() || self.classifier.is_some() {
            "bert."
        } else {
            ""
        }
    }

    /// Every parameter with its checkpoint name, in checkpoint order; LayerNorms use the modern
    /// `weight`/`bias` spelling. The fused projection is `….attention.self.qkv.{weight,bias}`
    /// ([3H, H] and [3H]: query, key and value rows stacked), which the trainer splits back into
    /// `query`, `key` and `value` when it writes a checkpoint.
    pub fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)> {
        let p = self.prefix();
        let mut out: Vec<(String, &mut B::Tensor)> = Vec::new();
        let (norm, linear) = (push_norm::<B>, push_linear::<B>);
        let e = &mut self.embeddings;
        out.push((format!("{p}embeddings.word_embeddings.weight"), &mut e.word_embeddings));
        out.push((format!("{p}embeddings.position_embeddings.weight"), &mut e.position_embeddings));
        out.push((format!("{p}embeddings.token_type_embeddings.weight"), &mut e.token_type_embeddings));
        norm(&mut out, format!("{p}embeddings.LayerNorm"), &mut e.norm);
        for (n, layer) in self.layers.iter_mut().enumerate() {
            let l = format!("{p}encoder.layer.{n}");
            linear(&mut out, format!("{l}.attention.self.qkv"), &mut layer.qkv);
            linear(&mut out, format!("{l}.attention.output.dense"), &mut layer.attn_out);
            norm(&mut out, format!("{l}.attention.output.LayerNorm"), &mut layer.attn_norm);
            linear(&mut out, format!("{l}.intermediate.dense"), &mut layer.intermediate);
            linear(&mut out, format!("{l}.output.dense"), &mut layer.output);
            norm(&mut out, format!("{l}.output.LayerNorm"), &mut layer.out_norm);
        }
        if let Some(pooler) = self.pooler.as_mut() {
            linear(&mut out, format!("{p}pooler.dense"), pooler);
        }
        if let Some(head) = self.mlm.as_mut() {
            linear(&mut out, "cls.predictions.transform.dense".into(), &mut head.transform);
            norm(&mut out, "cls.predictions.transform.LayerNorm".into(), &mut head.norm);
            if let Some(w) = head.decoder_weight.as_mut() {
                out.push(("cls.predictions.decoder.weight".into(), w));
            }
            out.push(("cls.predictions.bias".into(), &mut head.bias));
        }
        if let Some(c) = self.classifier.as_mut() {
            linear(&mut out, "classifier".into(), c);
        }
        out
    }

    /// The name of what was loaded, for `info`.
    pub fn description(&self) -> String {
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
}
