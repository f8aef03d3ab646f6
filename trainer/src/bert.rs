//! Classic BERT's backward pass, the same way as ModernBERT's (`backward.rs`): the forward once
//! more, keeping what the backward needs, then the same `Backend` calls in reverse. Gradients
//! carry the checkpoint's names (`Bert::parameters_mut`); the fused q|k|v projection's gradient
//! is `….attention.self.qkv.*`, split back into `query`, `key` and `value` by [`unfuse`].
//!
//! Shapes: T tokens of an unpadded batch, H hidden, I intermediate, N labelled rows or pooled
//! sequences, V vocabulary, C classes, P positions, K token types. Dropout is not applied
//! (training runs the encoder as transformers' `model.eval()` would: deterministic gradients).

use kernels::Backend;
use runtime::bert::BertMlmHead;
use runtime::model::{Batch, Linear};
use runtime::Bert;

use crate::backward::{linear_backward, loss_and_ranks, norm_backward, Grads, StepOutput, Target};
use crate::{Error, Result};

/// One block's saved activations.
struct LayerCache<B: Backend> {
    /// The block's input [T, H] (Wqkv's input and the first residual).
    x_in: B::Tensor,
    qkv: B::Tensor,
    o: B::Tensor,
    lse: B::Tensor,
    /// x_in + attn_out(o), before its LayerNorm, and the normed result a.
    s1: B::Tensor,
    a: B::Tensor,
    /// intermediate.dense(a) [T, I] and GELU of it.
    u: B::Tensor,
    g: B::Tensor,
    /// a + output.dense(g), before its LayerNorm.
    s2: B::Tensor,
}

/// The encoder's saved activations.
pub struct EncoderCache<B: Backend> {
    /// word + type + position embeddings, before the embedding LayerNorm [T, H].
    e: B::Tensor,
    layers: Vec<LayerCache<B>>,
}

/// The encoder forward (the same ops as `Bert::encode`), keeping the backward's inputs.
pub fn encode<B: Backend>(be: &B, model: &Bert<B>, batch: &Batch<B>) -> Result<(B::Tensor, EncoderCache<B>)> {
    let missing = || Error::Input("a BERT batch needs token types and positions (make it with Bert::batch)".into());
    let emb = &model.embeddings;
    let mut e = be.embedding(&emb.word_embeddings, &batch.ids)?;
    e = be.embedding_add(&e, &emb.token_type_embeddings, batch.type_ids.as_ref().ok_or_else(missing)?)?;
    e = be.embedding_add(&e, &emb.position_embeddings, batch.position_ids.as_ref().ok_or_else(missing)?)?;
    let mut x = emb.norm.forward(be, &e)?;
    let nh = model.config.num_attention_heads;
    let mut layers = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        let qkv = layer.qkv.forward(be, &x)?;
        let (o, lse) = be.attention(&qkv, &batch.seqs, nh, None)?;
        let (s1, a) = layer.attn_norm.add_forward(be, &x, &layer.attn_out.forward(be, &o)?)?;
        let u = layer.intermediate.forward(be, &a)?;
        let g = be.gelu(&u)?;
        let (s2, x_out) = layer.out_norm.add_forward(be, &a, &layer.output.forward(be, &g)?)?;
        layers.push(LayerCache { x_in: x, qkv, o, lse, s1, a, u, g, s2 });
        x = x_out;
    }
    Ok((x, EncoderCache { e, layers }))
}

/// The encoder backward: d last_hidden_state [T, H] → parameter gradients, the three embedding
/// tables getting their lookups' scatter-adds.
pub fn encode_backward<B: Backend>(
    be: &B,
    model: &Bert<B>,
    batch: &Batch<B>,
    ids: &[u32],
    cache: &EncoderCache<B>,
    d_last: &B::Tensor,
    grads: &mut Grads<B>,
) -> Result<()> {
    let p = model.prefix();
    let c = &model.config;
    let nh = c.num_attention_heads;
    let mut dx = d_last.clone();
    for (i, (layer, lc)) in model.layers.iter().zip(&cache.layers).enumerate().rev() {
        let l = format!("{p}encoder.layer.{i}");
        // x_out = LN2(a + W2·GELU(W1·a + b1) + b2)
        let ds2 = norm_backward(be, &layer.out_norm, &format!("{l}.output.LayerNorm"), &lc.s2, &dx, grads)?;
        let dg = linear_backward(be, &layer.output, &format!("{l}.output.dense"), &lc.g, &ds2, grads)?;
        let du = be.gelu_backward(&lc.u, &dg)?;
        let da = be.add(&ds2, &linear_backward(be, &layer.intermediate, &format!("{l}.intermediate.dense"), &lc.a, &du, grads)?)?;
        // a = LN1(x_in + Wo·Attention(Wqkv·x_in + bqkv) + bo)
        let ds1 = norm_backward(be, &layer.attn_norm, &format!("{l}.attention.output.LayerNorm"), &lc.s1, &da, grads)?;
        let d_o = linear_backward(be, &layer.attn_out, &format!("{l}.attention.output.dense"), &lc.o, &ds1, grads)?;
        let dqkv = be.attention_backward(&lc.qkv, &lc.o, &lc.lse, &d_o, &batch.seqs, nh, None)?;
        let dx_attn = linear_backward(be, &layer.qkv, &format!("{l}.attention.self.qkv"), &lc.x_in, &dqkv, grads)?;
        dx = be.add(&ds1, &dx_attn)?;
    }
    let de = norm_backward(be, &model.embeddings.norm, &format!("{p}embeddings.LayerNorm"), &cache.e, &dx, grads)?;
    let positions: Vec<u32> = batch.cu_seqlens.windows(2).flat_map(|w| 0..w[1] - w[0]).collect();
    grads.add(be, &format!("{p}embeddings.word_embeddings.weight"), be.embedding_backward(ids, &de, c.vocab_size)?)?;
    grads.add(be, &format!("{p}embeddings.token_type_embeddings.weight"), be.embedding_backward(&batch.types, &de, c.type_vocab_size)?)?;
    grads.add(be, &format!("{p}embeddings.position_embeddings.weight"), be.embedding_backward(&positions, &de, c.max_position_embeddings)?)?;
    Ok(())
}

/// Forward and backward of one micro-batch: Σ CE over the target's labelled items, gradients of
/// `scale` · that sum added to `grads` (as `backward::forward_backward`). Masked LM goes through
/// the transform and the (tied) decoder, token classification through the classifier on the
/// hidden states, sequence classification through the tanh pooler of each sequence's first
/// token (BERT's only pooling: `Target::Sequences`' pooling is not used).
pub fn forward_backward<B: Backend>(
    be: &B,
    model: &Bert<B>,
    batch: &Batch<B>,
    ids: &[u32],
    target: &Target,
    scale: f32,
    grads: &mut Grads<B>,
) -> Result<StepOutput> {
    if target.count() == 0 {
        return Err(Error::Input("a micro-batch without labelled items: the loss is undefined".into()));
    }
    let source = &model.config.source;
    let p = model.prefix();
    let t = batch.tokens();
    let (last, cache) = encode(be, model, batch)?;
    // The head's input rows: the labelled tokens, or each sequence's first token ([CLS]).
    let (rows, labels) = match target {
        Target::MaskedLm { rows, labels } | Target::Tokens { rows, labels } => (be.upload_ids(rows)?, *labels),
        Target::Sequences { labels, .. } => (be.upload_ids(&batch.cu_seqlens[..batch.sequences()])?, *labels),
    };
    let x = be.gather_rows(&last, &rows)?;
    // What feeds the output projection, and how to take its gradient back to x.
    enum Before<'m, B: Backend> {
        /// z = LN(GELU(transform(x))): d = transform(x), g = GELU(d).
        Transform { head: &'m BertMlmHead<B>, d: B::Tensor, g: B::Tensor },
        /// z = x.
        Nothing,
        /// z = tanh(pooler(x)).
        Pooler(&'m Linear<B>),
    }
    let (z, before, out, decoder_name) = match target {
        Target::MaskedLm { .. } => {
            let head = model.mlm.as_ref().ok_or_else(|| Error::Input(format!("{source}: the model has no masked-LM head (cls.predictions)")))?;
            let d = head.transform.forward(be, &x)?;
            let g = be.gelu(&d)?;
            let z = head.norm.forward(be, &g)?;
            let (w, name) = match &head.decoder_weight {
                Some(w) => (w, "cls.predictions.decoder.weight".to_string()),
                None => (&model.embeddings.word_embeddings, format!("{p}embeddings.word_embeddings.weight")),
            };
            (z, Before::Transform { head, d, g }, (w, Some(&head.bias)), (name, "cls.predictions.bias".to_string()))
        }
        _ => {
            let cl = model.classifier.as_ref().ok_or_else(|| Error::Input(format!("{source}: the model has no classifier")))?;
            let (z, before) = match target {
                Target::Sequences { .. } => {
                    let pooler = model.pooler.as_ref().ok_or_else(|| Error::Input(format!("{source}: the model has no pooler (bert.pooler.dense), which sequence classification needs")))?;
                    (be.tanh(&pooler.forward(be, &x)?)?, Before::Pooler(pooler))
                }
                _ => (x.clone(), Before::Nothing),
            };
            (z, before, (&cl.weight, cl.bias.as_ref()), ("classifier.weight".to_string(), "classifier.bias".to_string()))
        }
    };
    let logits = be.linear(&z, out.0, out.1)?;
    let classes = be.shape(&logits)[1];
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::Input(format!("label {bad} outside the model's {classes} classes")));
    }
    let label_ids = be.upload_ids(labels)?;
    let (loss_sum, label_ranks) = loss_and_ranks(be, &logits, &label_ids)?;

    // Backward, the forward in reverse.
    let dlogits = be.cross_entropy_backward(&logits, &label_ids, scale)?;
    grads.add(be, &decoder_name.0, be.matmul_tn(&dlogits, &z)?)?;
    if out.1.is_some() {
        grads.add(be, &decoder_name.1, be.sum_rows(&dlogits)?)?;
    }
    let dz = be.matmul(&dlogits, out.0)?;
    let dx = match before {
        Before::Transform { head, d, g } => {
            let dg = norm_backward(be, &head.norm, "cls.predictions.transform.LayerNorm", &g, &dz, grads)?;
            let dd = be.gelu_backward(&d, &dg)?;
            linear_backward(be, &head.transform, "cls.predictions.transform.dense", &x, &dd, grads)?
        }
        Before::Nothing => dz,
        Before::Pooler(pooler) => {
            let dpre = be.tanh_backward(&z, &dz)?;
            linear_backward(be, pooler, &format!("{p}pooler.dense"), &x, &dpre, grads)?
        }
    };
    let d_last = be.scatter_rows(&dx, &rows, t)?;
    encode_backward(be, model, batch, ids, &cache, &d_last, grads)?;
    Ok(StepOutput { loss_sum, label_ranks })
}

/// Named tensors (parameters, gradients, optimizer moments) with the fused
/// `….attention.self.qkv.{weight,bias}` split into transformers' `query`, `key` and `value`
/// (row blocks of H); everything else unchanged and in order.
pub fn unfuse(tensors: Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::with_capacity(tensors.len() + tensors.len() / 4);
    for (name, shape, values) in tensors {
        let Some((stem, kind)) = name.rsplit_once('.').and_then(|(s, k)| Some((s.strip_suffix(".attention.self.qkv")?, k))) else {
            out.push((name, shape, values));
            continue;
        };
        let rows = shape[0] / 3;
        let per = values.len() / 3;
        let mut part_shape = shape.clone();
        part_shape[0] = rows;
        for (j, part) in ["query", "key", "value"].into_iter().enumerate() {
            out.push((format!("{stem}.attention.self.{part}.{kind}"), part_shape.clone(), values[j * per..(j + 1) * per].to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unfuse;

    #[test]
    fn unfuse_splits_qkv_rows_and_keeps_the_rest() {
        let w: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let out = unfuse(vec![
            ("bert.encoder.layer.0.attention.self.qkv.weight".into(), vec![6, 2], w),
            ("bert.encoder.layer.0.attention.self.qkv.bias".into(), vec![6], vec![0., 1., 2., 3., 4., 5.]),
            ("classifier.bias".into(), vec![2], vec![7., 8.]),
        ]);
        let names: Vec<&str> = out.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bert.encoder.layer.0.attention.self.query.weight",
                "bert.encoder.layer.0.attention.self.key.weight",
                "bert.encoder.layer.0.attention.self.value.weight",
                "bert.encoder.layer.0.attention.self.query.bias",
                "bert.encoder.layer.0.attention.self.key.bias",
                "bert.encoder.layer.0.attention.self.value.bias",
                "classifier.bias"
            ]
        );
        assert_eq!(out[1].1, vec![2, 2]);
        assert_eq!(out[1].2, vec![4., 5., 6., 7.]);
        assert_eq!(out[5].2, vec![4., 5.]);
        assert_eq!(out[6].2, vec![7., 8.]);
    }
}
