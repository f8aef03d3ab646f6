//! The encoders: ModernBERT (`modernbert.rs`) and classic BERT (`bert.rs`), built from shared
//! parts (`parts.rs`), over an unpadded batch (this file), with a tape that keeps what the
//! parity check or the trainer's backward needs (`tape.rs`). [`Encoder`] is what every family
//! offers; [`Model`] is a loaded model of either, for the pipelines, the CLI and the browser.
//!
//! Every activation is [T, ·] over an unpadded batch (T real tokens of B sequences end to end):
//! no pad token is ever computed, from the embedding to the heads.

pub mod bert;
pub mod modernbert;
pub mod op_times;
pub mod warm;
pub mod parts;
pub mod tape;

use std::ops::{Deref, DerefMut};

use kernels::Backend;

pub use bert::Bert;
pub use modernbert::ModernBert;
pub use parts::{LayerNorm, Linear, Residual};
pub use tape::{Ctx, Tape};

use crate::config::{ModelConfig, Pooling};
use crate::weights::WeightSource;
use crate::{Error, Result};

/// An unpadded batch ready for the encoder.
pub struct Batch<B: Backend> {
    pub ids: B::Ids,
    pub seqs: B::Seqs,
    /// [B+1] cumulative offsets: sequence b is rows cu_seqlens[b]..cu_seqlens[b+1].
    pub cu_seqlens: Vec<u32>,
    /// The token type [T] of every token of a sentence-pair batch, on the device and the host
    /// (BERT embeds them; `None`: all 0).
    pub token_types: Option<(B::Ids, Vec<u32>)>,
}

impl<B: Backend> Batch<B> {
    /// Check and upload token ids per sequence: each non-empty, within `context` and `vocab`.
    pub fn upload(be: &B, sequences: &[&[u32]], context: usize, vocab: usize) -> Result<Self> {
        if sequences.is_empty() {
            return Err(Error::Input("an empty batch".into()));
        }
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
        Ok(Batch { ids: be.upload_ids(&ids)?, seqs: be.seqs(&cu)?, cu_seqlens: cu, token_types: None })
    }
    pub fn tokens(&self) -> usize {
        *self.cu_seqlens.last().unwrap() as usize
    }
    pub fn sequences(&self) -> usize {
        self.cu_seqlens.len() - 1
    }
    /// The row of each sequence's first token ([CLS]) [B].
    pub fn first_rows(&self) -> &[u32] {
        &self.cu_seqlens[..self.sequences()]
    }
    /// Each token's position within its sequence [T].
    pub fn positions(&self) -> Vec<u32> {
        self.cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect()
    }
}

/// One vector per sequence [B, H] from the hidden states [T, H]: each sequence's first token
/// (`cls`) or the mean over its tokens.
pub fn pool<B: Backend>(be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
    Ok(match pooling {
        Pooling::Cls => be.gather_rows(hidden, &be.upload_ids(batch.first_rows())?)?,
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

/// Which head a forward pass ends in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Vocabulary logits of the given rows.
    MaskedLm,
    /// Class logits of every given token row.
    Tokens,
    /// Class logits of each sequence, from its row of `Encoder::sequence_rows`.
    Sequences,
}

/// A head's output projection (the decoder or the classifier), with its parameters' checkpoint
/// names.
pub struct Output<'m, B: Backend> {
    pub weight: &'m B::Tensor,
    pub bias: Option<&'m B::Tensor>,
    /// The tied decoder's weight is the token embedding: its name is the embedding's.
    pub weight_name: String,
    pub bias_name: &'static str,
}

/// What a model of either family offers.
pub trait Encoder<B: Backend> {
    /// A copy of the config it was loaded with.
    fn config(&self) -> ModelConfig;
    /// Where the config was read from (for messages).
    fn source(&self) -> &str;
    fn hidden_size(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The longest sequence the model takes, special tokens included.
    fn context(&self) -> usize;
    /// Labels of the classifier (from `id2label`, or LABEL_i); empty without one.
    fn labels(&self) -> &[String];
    fn problem_type(&self) -> Option<&str>;
    fn has_mlm(&self) -> bool;
    fn has_classifier(&self) -> bool;
    /// The architecture, in words (for `info` and the browser page).
    fn description(&self) -> String;
    /// The encoder's tensors' prefix when saved: the family's (`model.`, `bert.`) under a head,
    /// none in a bare encoder (transformers' layout).
    fn prefix(&self) -> &'static str;
    /// Every parameter tensor with its checkpoint name, in checkpoint order.
    fn parameters_mut(&mut self) -> Vec<(String, &mut B::Tensor)>;
    /// Upload an unpadded batch of single-segment sequences (token types all 0).
    fn batch(&self, be: &B, sequences: &[&[u32]]) -> Result<Batch<B>>;
    /// Upload an unpadded batch with a token type per token (sentence pairs).
    fn batch_typed(&self, be: &B, sequences: &[&[u32]], types: &[&[u32]]) -> Result<Batch<B>>;
    /// The encoder: last_hidden_state [T, H]; with a tape, what it keeps.
    fn encode(&self, be: &B, batch: &Batch<B>, tape: Option<&mut Tape<B>>) -> Result<B::Tensor>;
    /// The row each sequence is classified from [B, H]: pooled (ModernBERT; `pooling` overrides
    /// the config's) or its first token (BERT, whose pooler is part of its head).
    fn sequence_rows(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Option<Pooling>) -> Result<B::Tensor>;
    /// The output projection of a head: the (tied) decoder for masked LM, the classifier otherwise.
    fn output(&self, task: Task) -> Result<Output<'_, B>>;
    /// A head over its input rows x [N, H] → logits [N, V or C].
    fn head(&self, be: &B, x: &B::Tensor, task: Task, tape: &mut Tape<B>) -> Result<B::Tensor>;

    /// Masked-LM logits [N, V] of hidden rows [N, H] (pass only the rows you need).
    fn mlm_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.head(be, hidden, Task::MaskedLm, &mut Tape::none())
    }
    /// Token-classification logits [T, C].
    fn token_logits(&self, be: &B, hidden: &B::Tensor) -> Result<B::Tensor> {
        self.head(be, hidden, Task::Tokens, &mut Tape::none())
    }
    /// Sequence-classification logits [B, C].
    fn sequence_logits(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Option<Pooling>) -> Result<B::Tensor> {
        self.head(be, &self.sequence_rows(be, hidden, batch, pooling)?, Task::Sequences, &mut Tape::none())
    }
    /// One vector per sequence [B, H] of the last hidden state (embeddings).
    fn pool(&self, be: &B, hidden: &B::Tensor, batch: &Batch<B>, pooling: Pooling) -> Result<B::Tensor> {
        pool(be, hidden, batch, pooling)
    }
}

/// A loaded model of either family; it is an [`Encoder`] (through `Deref`), and the family's
/// own type stays at hand for what only one family has.
pub enum Model<B: Backend> {
    ModernBert(ModernBert<B>),
    Bert(Bert<B>),
}

impl<B: Backend> Model<B> {
    /// Load whichever family the config names, every head whose tensors are present.
    pub fn load<S: WeightSource>(be: &B, config: ModelConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, false)
    }
    /// Load for training: every parameter a plain f32 tensor.
    pub fn load_trainable<S: WeightSource>(be: &B, config: ModelConfig, ckpt: &S) -> Result<Self> {
        Self::load_as(be, config, ckpt, true)
    }
    fn load_as<S: WeightSource>(be: &B, config: ModelConfig, ckpt: &S, trainable: bool) -> Result<Self> {
        Ok(match config {
            ModelConfig::ModernBert(c) => Model::ModernBert(ModernBert::load_as(be, c, ckpt, trainable)?),
            ModelConfig::Bert(c) => Model::Bert(Bert::load_as(be, c, ckpt, trainable)?),
        })
    }
}

impl<B: Backend> Deref for Model<B> {
    type Target = dyn Encoder<B>;
    fn deref(&self) -> &Self::Target {
        match self {
            Model::ModernBert(m) => m,
            Model::Bert(m) => m,
        }
    }
}

impl<B: Backend> DerefMut for Model<B> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Model::ModernBert(m) => m,
            Model::Bert(m) => m,
        }
    }
}
