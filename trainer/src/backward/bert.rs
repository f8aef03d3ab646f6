//! Classic BERT's backward: `Bert::encode` and its heads in reverse, reading what their
//! forward kept on the tape. Gradients carry the checkpoint's names (`Bert::parameters_mut`);
//! the fused q|k|v projection's gradient is `….attention.self.qkv.*`, split back into `query`,
//! `key` and `value` when a checkpoint is written (`checkpoint::unfuse`).
//!
//! Dropout is not applied (training runs the encoder as transformers' `model.eval()` would:
//! deterministic gradients).

use kernels::Backend;
use runtime::model::{Batch, Encoder, Tape, Task};
use runtime::Bert;

use super::{linear_backward, norm_backward, Grads};
use crate::{Error, Result};

/// The head backward: d of the output projection's input z [N, H] → d of the head's input rows.
pub fn head_backward<B: Backend>(be: &B, m: &Bert<B>, task: Task, tape: &Tape<B>, dz: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let saved = |name| tape.get(None, name);
    let source = &m.config.source;
    let x = saved("head.x")?;
    match task {
        // z = LN(GELU(transform(x)))
        Task::MaskedLm => {
            let head = m.mlm.as_ref().ok_or_else(|| Error::Input(format!("{source}: the model has no masked-LM head (cls.predictions)")))?;
            let dg = norm_backward(be, &head.norm, "cls.predictions.transform.LayerNorm", saved("head.g")?, dz, grads)?;
            let dd = be.gelu_backward(saved("head.d")?, &dg)?;
            linear_backward(be, &head.transform, "cls.predictions.transform.dense", x, &dd, grads)
        }
        // z = x
        Task::Tokens => Ok(dz.clone()),
        // z = tanh(pooler(x))
        Task::Sequences => {
            let dpre = be.tanh_backward(saved("head.z")?, dz)?;
            linear_backward(be, m.pooler()?, &format!("{}pooler.dense", m.prefix()), x, &dpre, grads)
        }
    }
}

/// The encoder backward: d last_hidden_state [T, H] → parameter gradients, the three embedding
/// tables getting their lookups' scatter-adds.
pub fn encoder_backward<B: Backend>(
    be: &B,
    m: &Bert<B>,
    batch: &Batch<B>,
    ids: &[u32],
    tape: &Tape<B>,
    d_last: &B::Tensor,
    grads: &mut Grads<B>,
) -> Result<()> {
    let p = m.prefix();
    let c = &m.config;
    let mut dx = d_last.clone();
    for (i, layer) in m.layers.iter().enumerate().rev() {
        let saved = |name| tape.get(Some(i), name);
        let l = format!("{p}encoder.layer.{i}");
        // x_out = LN2(a + W2·GELU(W1·a + b1) + b2)
        let ds2 = norm_backward(be, &layer.out_norm, &format!("{l}.output.LayerNorm"), saved("s2")?, &dx, grads)?;
        let dg = linear_backward(be, &layer.output, &format!("{l}.output.dense"), saved("g")?, &ds2, grads)?;
        let du = be.gelu_backward(saved("u")?, &dg)?;
        let da = be.add(&ds2, &linear_backward(be, &layer.intermediate, &format!("{l}.intermediate.dense"), saved("a")?, &du, grads)?)?;
        // a = LN1(x_in + Wo·Attention(Wqkv·x_in + bqkv) + bo)
        let ds1 = norm_backward(be, &layer.attn_norm, &format!("{l}.attention.output.LayerNorm"), saved("s1")?, &da, grads)?;
        let d_o = linear_backward(be, &layer.attn_out, &format!("{l}.attention.output.dense"), saved("o")?, &ds1, grads)?;
        let dqkv = be.attention_backward(saved("qkv")?, saved("o")?, saved("lse")?, &d_o, &batch.seqs, layer.num_heads, None)?;
        let dx_attn = linear_backward(be, &layer.qkv, &format!("{l}.attention.self.qkv"), saved("x_in")?, &dqkv, grads)?;
        dx = be.add(&ds1, &dx_attn)?;
    }
    let de = norm_backward(be, &m.embeddings.norm, &format!("{p}embeddings.LayerNorm"), tape.get(None, "e")?, &dx, grads)?;
    let table = |name: &str| format!("{p}embeddings.{name}_embeddings.weight");
    grads.add(be, &table("word"), be.embedding_backward(ids, &de, c.vocab_size)?)?;
    grads.add(be, &table("token_type"), be.embedding_backward(&Bert::types(batch), &de, c.type_vocab_size)?)?;
    grads.add(be, &table("position"), be.embedding_backward(&batch.positions(), &de, c.max_position_embeddings)?)?;
    Ok(())
}
