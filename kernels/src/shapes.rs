//! The shape rules of the `Backend` ops, written once: every backend checks an op's operands
//! here before it runs it, so a wrong shape gets the same refusal, with the same message, on the
//! CPU and on a GPU. Shapes are outermost first; a tensor [.., K] is read as a matrix [N, K].

use crate::{Error, Result};

/// (rows, columns) of a tensor read as a matrix: the last dimension is the columns.
pub(crate) fn matrix(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape.iter().rev().skip(1).product();
    (if cols == 0 { 0 } else { rows }, cols)
}

fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `a` and `b` of one shape (element-wise ops and their backwards).
pub(crate) fn same(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{a:?} and {b:?} differ")));
    }
    Ok(())
}

/// x [N, K] · w [M, K]ᵀ (+ b [M]) → (N, K, M).
pub(crate) fn linear(x: &[usize], w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize, usize)> {
    let ((n, k), (m, kw)) = (matrix(x), matrix(w));
    if kw != k || w.len() != 2 {
        return Err(Error::shape("linear", format!("x {x:?} · wᵀ with w {w:?}: inner sizes differ")));
    }
    if let Some(b) = b {
        bias(b, m)?;
    }
    Ok((n, k, m))
}

/// A bias of `m` values.
pub(crate) fn bias(b: &[usize], m: usize) -> Result<()> {
    if len(b) != m {
        return Err(Error::shape("linear", format!("bias {b:?} for {m} outputs")));
    }
    Ok(())
}

/// LayerNorm of x [N, H] (and, fused, of x + y) with weight [H] and bias [H] → (N, H).
pub(crate) fn norm(op: &'static str, x: &[usize], y: Option<&[usize]>, w: &[usize], b: Option<&[usize]>) -> Result<(usize, usize)> {
    let (rows, h) = matrix(x);
    if y.is_some_and(|y| y != x) || len(w) != h || b.is_some_and(|b| len(b) != h) {
        let y = y.map(|y| format!(", y {y:?}")).unwrap_or_default();
        return Err(Error::shape(op, format!("x {x:?}{y} with weight {w:?} and bias {b:?}")));
    }
    Ok((rows, h))
}

/// x [N, H], w [H], dy [N, H] → (N, H).
pub(crate) fn norm_backward(x: &[usize], w: &[usize], dy: &[usize]) -> Result<(usize, usize)> {
    let (rows, h) = matrix(x);
    if len(w) != h || dy != x {
        return Err(Error::shape("layer_norm_backward", format!("x {x:?} with weight {w:?} and dy {dy:?}")));
    }
    Ok((rows, h))
}

/// u [N, 2I] → (N, I).
pub(crate) fn geglu(u: &[usize]) -> Result<(usize, usize)> {
    let (rows, two_i) = matrix(u);
    if two_i % 2 != 0 {
        return Err(Error::shape("geglu", format!("input {u:?} has an odd last dimension")));
    }
    Ok((rows, two_i / 2))
}

/// u [N, 2I], dy [N, I] → (N, I).
pub(crate) fn geglu_backward(u: &[usize], dy: &[usize]) -> Result<(usize, usize)> {
    let (rows, two_i) = matrix(u);
    if two_i % 2 != 0 || matrix(dy) != (rows, two_i / 2) || u.len() != dy.len() {
        return Err(Error::shape("geglu_backward", format!("u {u:?} with dy {dy:?}")));
    }
    Ok((rows, two_i / 2))
}

/// qkv [T, 3H] of `nh` heads over a batch of `tokens` → (T, H, head dim).
pub(crate) fn qkv(op: &'static str, qkv: &[usize], nh: usize, tokens: usize) -> Result<(usize, usize, usize)> {
    let (t, three_h) = matrix(qkv);
    let h = three_h / 3;
    if three_h % 3 != 0 || nh == 0 || h % nh != 0 || t != tokens {
        return Err(Error::shape(op, format!("qkv {qkv:?} with {nh} heads over {tokens} tokens")));
    }
    Ok((t, h, h / nh))
}

/// The backward of attention: qkv [T, 3H] (2-D), out and dout [T, H], lse [T, nh] → (T, H, head dim).
pub(crate) fn attention_backward(q: &[usize], out: &[usize], lse: &[usize], dout: &[usize], nh: usize, tokens: usize) -> Result<(usize, usize, usize)> {
    let op = "attention_backward";
    let (t, h, hd) = qkv(op, q, nh, tokens)?;
    if q.len() != 2 {
        return Err(Error::shape(op, format!("qkv {q:?} with {nh} heads over {tokens} tokens")));
    }
    if out != [t, h] || dout != [t, h] || lse != [t, nh] {
        return Err(Error::shape(op, format!("out {out:?}, dout {dout:?}, lse {lse:?} for qkv {q:?} with {nh} heads")));
    }
    Ok((t, h, hd))
}

/// RoPE on qkv [T, 3H] (an even head dim) with cos, sin [P, hd/2] → (T, H, head dim, P).
pub(crate) fn rope(op: &'static str, q: &[usize], nh: usize, tokens: usize, cos: &[usize], sin: &[usize]) -> Result<(usize, usize, usize, usize)> {
    let (t, h, hd) = qkv(op, q, nh, tokens)?;
    if hd == 0 || hd % 2 != 0 {
        return Err(Error::shape(op, format!("qkv {q:?} with {nh} heads over {tokens} tokens")));
    }
    let (positions, half) = matrix(cos);
    if half != hd / 2 || sin != cos {
        return Err(Error::shape(op, format!("tables {cos:?} / {sin:?} for head dim {hd}")));
    }
    Ok((t, h, hd, positions))
}

/// a [N, K] · b [K, M] → (N, K, M).
pub(crate) fn matmul(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    let ((n, k), (kb, m)) = (matrix(a), matrix(b));
    if a.len() != 2 || b.len() != 2 || kb != k {
        return Err(Error::shape("matmul", format!("a {a:?} · b {b:?}: inner sizes differ")));
    }
    Ok((n, k, m))
}

/// a [N, M]ᵀ · b [N, K] → (N, M, K).
pub(crate) fn matmul_tn(a: &[usize], b: &[usize]) -> Result<(usize, usize, usize)> {
    let ((n, m), (nb, k)) = (matrix(a), matrix(b));
    if a.len() != 2 || b.len() != 2 || nb != n {
        return Err(Error::shape("matmul_tn", format!("a {a:?}ᵀ · b {b:?}: row counts differ")));
    }
    Ok((n, m, k))
}

/// Logits [N, C] with one label per row, the largest `max` → (N, C).
pub(crate) fn labels(op: &'static str, logits: &[usize], n: usize, max: Option<u32>) -> Result<(usize, usize)> {
    let (rows, c) = matrix(logits);
    if n != rows {
        return Err(Error::shape(op, format!("{n} labels for logits {logits:?}")));
    }
    if let Some(bad) = max.filter(|&m| m as usize >= c) {
        return Err(Error::shape(op, format!("label {bad} for {c} classes")));
    }
    Ok((rows, c))
}

/// Row indices whose largest is `max` into a table (or tensor) of `rows` rows.
pub(crate) fn index(op: &'static str, max: Option<u32>, rows: usize) -> Result<()> {
    if let Some(bad) = max.filter(|&m| m as usize >= rows) {
        return Err(Error::shape(op, format!("index {bad} outside a table of {rows} rows")));
    }
    Ok(())
}

/// x [T, H] + table [R, H][ids] with `ids` ids → (R, H).
pub(crate) fn embedding_add(x: &[usize], table: &[usize], ids: usize) -> Result<(usize, usize)> {
    let (rows, h) = matrix(table);
    if x != [ids, h] {
        return Err(Error::shape("embedding_add", format!("x {x:?} with {ids} ids into a table {table:?}")));
    }
    Ok((rows, h))
}

/// x [T, H] pooled over a batch of `tokens` → (T, H).
pub(crate) fn mean_pool(x: &[usize], tokens: usize) -> Result<(usize, usize)> {
    let (t, h) = matrix(x);
    if t != tokens {
        return Err(Error::shape("mean_pool", format!("x {x:?} over {tokens} tokens")));
    }
    Ok((t, h))
}

/// dy [B, H] for `sequences` sequences → (B, H).
pub(crate) fn mean_pool_backward(dy: &[usize], sequences: usize) -> Result<(usize, usize)> {
    let (b, h) = matrix(dy);
    if b != sequences || dy.len() != 2 {
        return Err(Error::shape("mean_pool_backward", format!("dy {dy:?} for {sequences} sequences")));
    }
    Ok((b, h))
}

/// dy [R, H] with `rows` row indices (`scatter_rows`) or ids (`embedding_backward`) → (R, H).
pub(crate) fn rows_of(op: &'static str, dy: &[usize], rows: usize) -> Result<(usize, usize)> {
    let (r, h) = matrix(dy);
    if r != rows || dy.len() != 2 {
        return Err(Error::shape(op, format!("{rows} rows for dy {dy:?}")));
    }
    Ok((r, h))
}

/// A parameter p and its gradient and moments, of one shape; steps count from 1.
pub(crate) fn adam(p: &[usize], g: &[usize], m: &[usize], v: &[usize], step: u64) -> Result<()> {
    for (name, x) in [("g", g), ("m", m), ("v", v)] {
        if x != p {
            return Err(Error::shape("adam_step", format!("{name} {x:?} for a parameter {p:?}")));
        }
    }
    if step == 0 {
        return Err(Error::shape("adam_step", "steps count from 1"));
    }
    Ok(())
}
