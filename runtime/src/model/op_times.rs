//! Where a ModernBERT forward spends its device time, op by op, timed from the host: each op of
//! the first layer of each kind (global, sliding) and of the heads runs on its own and its
//! output is read back, so the time is submission + device + read-back. The read-back of a
//! one-value tensor is timed the same way and subtracted. This works wherever `read` can be
//! awaited, the browser included, where a launch cannot be waited on from the launch path.

use kernels::Backend;

use super::modernbert::ModernBert;
use super::Encoder;
use crate::config::LayerType;
use crate::Result;

/// One op at one sequence length.
#[derive(Clone, Debug)]
pub struct OpTime {
    /// e.g. `layer 0 (global) Wqkv`.
    pub name: String,
    /// Median over the repetitions, the empty read-back's median subtracted (≥ 0).
    pub seconds: f64,
}

/// Time every op of one forward over one sequence of `tokens` ids, `reps` times each (median),
/// with `now` the caller's clock in seconds. Returns the ops and the empty read-back's median.
pub async fn op_times<B: Backend>(be: &B, model: &ModernBert<B>, tokens: usize, reps: usize, now: &dyn Fn() -> f64) -> Result<(Vec<OpTime>, f64)> {
    let ids: Vec<u32> = (0..tokens as u32).map(|i| (i * 7919 + 11) % model.config.vocab_size.min(50_000) as u32).collect();
    let batch = model.batch(be, &[&ids])?;
    let reps = reps.max(1);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };

    // The read-back alone: a one-value tensor computed by a trivial op.
    let one = be.upload(&[1.0], &[1, 1])?;
    let mut empty = Vec::new();
    for _ in 0..reps {
        let t0 = now();
        be.read(&be.add(&one, &one)?).await?;
        empty.push(now() - t0);
    }
    let empty = median(empty);

    let mut out = Vec::new();
    macro_rules! time {
        ($name:expr, $op:expr) => {{
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..reps {
                let t0 = now();
                let y = $op;
                be.read(&y).await?;
                times.push(now() - t0);
                last = Some(y);
            }
            out.push(OpTime { name: $name, seconds: (median(times) - empty).max(0.0) });
            last.expect("reps ≥ 1")
        }};
    }

    let e = time!("embedding".into(), be.embedding(&model.embeddings.tok_embeddings, &batch.ids)?);
    let x = time!("embedding norm".into(), model.embeddings.norm.forward(be, &e)?);
    let mut seen = Vec::new();
    for (n, layer) in model.layers.iter().enumerate() {
        if seen.contains(&layer.kind) {
            continue;
        }
        seen.push(layer.kind);
        let kind = if layer.kind == LayerType::Full { "global" } else { "sliding" };
        let name = |op: &str| format!("layer {n} ({kind}) {op}");
        let (rope, window) = model.ropes.of(layer.kind);
        let h = match &layer.attn_norm {
            Some(norm) => time!(name("attention norm"), norm.forward(be, &x)?),
            None => x.clone(),
        };
        let qkv = time!(name("Wqkv"), layer.attn.Wqkv.forward(be, &h)?);
        let qkv = time!(name("RoPE"), be.rope(&qkv, &batch.seqs, &rope.cos, &rope.sin, layer.attn.num_heads)?);
        let o = time!(name("attention"), be.attention(&qkv, &batch.seqs, layer.attn.num_heads, window)?.0);
        let a = time!(name("attention Wo"), layer.attn.Wo.forward(be, &o)?);
        let hm = time!(name("residual add + MLP norm"), layer.mlp_norm.add_forward(be, &x, &a)?.1);
        let u = time!(name("Wi"), layer.mlp.Wi.forward(be, &hm)?);
        let g = time!(name("GeGLU"), be.geglu(&u)?);
        time!(name("MLP Wo"), layer.mlp.Wo.forward(be, &g)?);
        // The same ops back to back, one read: what the layer costs inside a forward.
        time!(name("whole layer, one read"), {
            let h = match &layer.attn_norm {
                Some(norm) => norm.forward(be, &x)?,
                None => x.clone(),
            };
            let qkv = be.rope(&layer.attn.Wqkv.forward(be, &h)?, &batch.seqs, &rope.cos, &rope.sin, layer.attn.num_heads)?;
            let a = layer.attn.Wo.forward(be, &be.attention(&qkv, &batch.seqs, layer.attn.num_heads, window)?.0)?;
            let (x1, hm) = layer.mlp_norm.add_forward(be, &x, &a)?;
            be.add(&x1, &layer.mlp.Wo.forward(be, &be.geglu(&layer.mlp.Wi.forward(be, &hm)?)?)?)?
        });
    }
    let last = time!("final norm".into(), model.final_norm.forward(be, &x)?);
    if let Some(head) = &model.head {
        let d = time!("head dense".into(), head.dense.forward(be, &last)?);
        let g = time!("head GELU".into(), be.gelu(&d)?);
        let z = time!("head norm".into(), head.norm.forward(be, &g)?);
        if let Some(c) = &model.classifier {
            time!("classifier".into(), c.forward(be, &z)?);
        }
    }
    Ok((out, empty))
}
