//! ModernBERT's backward: `ModernBert::encode` and its head in reverse, reading what their
//! forward kept on the tape (`h`, `qkv`, `o`, `lse`, … per layer: see `runtime::model::modernbert`).

use kernels::Backend;
use runtime::model::{Encoder, Tape};
use runtime::ModernBert;

use super::{linear_backward, norm_backward, Grads};
use crate::{Error, Result};

/// The head backward: d of the output projection's input z [N, H] → d of the head's input rows.
pub fn head_backward<B: Backend>(be: &B, m: &ModernBert<B>, tape: &Tape<B>, dz: &B::Tensor, grads: &mut Grads<B>) -> Result<B::Tensor> {
    let saved = |name| tape.get(None, name);
    // z = LN(GELU(dense(x)))
    let head = m.head.as_ref().ok_or_else(|| Error::Input(format!("{}: the model has no prediction head (head.dense)", m.config.source)))?;
    let dg = norm_backward(be, &head.norm, "head.norm", saved("head.g")?, dz, grads)?;
    let dd = be.gelu_backward(saved("head.d")?, &dg)?;
    linear_backward(be, &head.dense, "head.dense", saved("head.x")?, &dd, grads)
}

/// The encoder backward: d last_hidden_state [T, H] → parameter gradients (the token embedding
/// gets the lookup's scatter-add).
pub fn encoder_backward<B: Backend>(
    be: &B,
    m: &ModernBert<B>,
    batch: &runtime::model::Batch<B>,
    ids: &[u32],
    tape: &Tape<B>,
    d_last: &B::Tensor,
    grads: &mut Grads<B>,
) -> Result<()> {
    let p = m.prefix();
    let mut dx = norm_backward(be, &m.final_norm, &format!("{p}final_norm"), tape.get(None, "x_last")?, d_last, grads)?;
    for (i, layer) in m.layers.iter().enumerate().rev() {
        let saved = |name| tape.get(Some(i), name);
        let l = format!("{p}layers.{i}");
        // x_out = x_mid + Wo_mlp · GeGLU(Wi · LN_mlp(x_mid))
        let da = linear_backward(be, &layer.mlp.Wo, &format!("{l}.mlp.Wo"), saved("a")?, &dx, grads)?;
        let du = be.geglu_backward(saved("u")?, &da)?;
        let dhm = linear_backward(be, &layer.mlp.Wi, &format!("{l}.mlp.Wi"), saved("hm")?, &du, grads)?;
        let dx_mid = be.add(&dx, &norm_backward(be, &layer.mlp_norm, &format!("{l}.mlp_norm"), saved("x_mid")?, &dhm, grads)?)?;
        // x_mid = x_in + Wo · Attention(RoPE(Wqkv · h)), h = LN_attn(x_in) (x_in in layer 0)
        let d_o = linear_backward(be, &layer.attn.Wo, &format!("{l}.attn.Wo"), saved("o")?, &dx_mid, grads)?;
        let (rope, window) = m.ropes.of(layer.kind);
        let nh = layer.attn.num_heads;
        let dqkv = be.attention_backward(saved("qkv")?, saved("o")?, saved("lse")?, &d_o, &batch.seqs, nh, window)?;
        let dqkv = be.rope_backward(&dqkv, &batch.seqs, &rope.cos, &rope.sin, nh)?;
        let dh = linear_backward(be, &layer.attn.Wqkv, &format!("{l}.attn.Wqkv"), saved("h")?, &dqkv, grads)?;
        let dx_in = match &layer.attn_norm {
            Some(norm) => norm_backward(be, norm, &format!("{l}.attn_norm"), saved("x_in")?, &dh, grads)?,
            None => dh,
        };
        dx = be.add(&dx_mid, &dx_in)?;
    }
    let de = norm_backward(be, &m.embeddings.norm, &format!("{p}embeddings.norm"), tape.get(None, "e")?, &dx, grads)?;
    grads.add(be, &format!("{p}embeddings.tok_embeddings.weight"), be.embedding_backward(ids, &de, m.config.vocab_size)?)?;
    Ok(())
}
