//! Where a ModernBERT forward spends its device time, op by op, timed from the host: each op of
//! the first layer of each kind (global, sliding) and of the heads runs on its own and its
//! output is read back, so the time is submission + device + read-back. The read-back of a
//! one-value tensor is timed the same way and subtracted. This works wherever `read` can be
//! awaited, the browser included, where a launch cannot be waited on from the launch path.

use kernels::Backend;

use super::modernbert::ModernBert;
use super::{Ctx, Encoder, Residual, Tape};
use crate::config::LayerType;
use crate::{Error, Result};

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
    let context = model.config.max_position_embeddings;
    if tokens == 0 || tokens > context {
        return Err(Error::Input(format!("op times over {tokens} tokens: expected 1 to the model's context of {context}")));
    }
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
        // The layer's own forward, back to back in one submission: what it costs in a forward.
        time!(name("whole layer, one read"), {
            let mut tape = Tape::none();
            let mut ctx = Ctx { batch: &batch, ropes: Some(&model.ropes), layer: Some(n), tape: &mut tape };
            let mut r = Residual::new(x.clone());
            layer.forward(be, &mut r, &mut ctx)?;
            r.value(be, &mut ctx, "x")?.clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::weights::Checkpoint;

    fn tiny() -> ModernBert<kernels::CpuBackend> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-modernbert-tokcls");
        let ModelConfig::ModernBert(c) = ModelConfig::from_file(&dir.join("config.json")).unwrap() else { panic!("a ModernBERT fixture") };
        ModernBert::load(&kernels::CpuBackend::new(), c, &Checkpoint::open_dir(&dir).unwrap()).unwrap()
    }

    /// Every op of each layer kind and of the head is timed; a length outside 1..=context is
    /// refused with the context named, not run.
    #[test]
    fn times_every_op_and_refuses_lengths_outside_the_context() {
        let (be, model) = (kernels::CpuBackend::new(), tiny());
        let t0 = std::time::Instant::now();
        let now = || t0.elapsed().as_secs_f64();
        let (ops, empty) = kernels::block_on(op_times(&be, &model, 9, 2, &now)).unwrap();
        assert!(empty >= 0.0 && ops.iter().all(|o| o.seconds >= 0.0));
        for name in ["embedding", "layer 0 (global) attention", "layer 0 (global) whole layer, one read", "final norm", "classifier"] {
            assert!(ops.iter().any(|o| o.name == name), "no {name:?} in {:?}", ops.iter().map(|o| &o.name).collect::<Vec<_>>());
        }
        let context = model.config.max_position_embeddings;
        for bad in [0, context + 1] {
            let err = kernels::block_on(op_times(&be, &model, bad, 1, &now)).unwrap_err().to_string();
            assert!(err.contains(&format!("context of {context}")), "{err}");
        }
    }
}
