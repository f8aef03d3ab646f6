//! The shape rules shared by several families (each op's own rule is in its family's `shape`
//! module). Every backend checks an op's operands with these rules before it runs it, so a wrong
//! shape gets the same refusal, with the same message, on the CPU and on a GPU. Shapes are
//! outermost first; a tensor [.., K] is read as a matrix [N, K].

use crate::{Error, Result};

/// (rows, columns) of a tensor read as a matrix: the last dimension is the columns.
pub(crate) fn matrix(shape: &[usize]) -> (usize, usize) {
    let cols = *shape.last().unwrap_or(&1);
    let rows = shape.iter().rev().skip(1).product();
    (if cols == 0 { 0 } else { rows }, cols)
}

pub(crate) fn len(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `a` and `b` of one shape (element-wise ops and their backwards).
pub(crate) fn same(op: &'static str, a: &[usize], b: &[usize]) -> Result<()> {
    if a != b {
        return Err(Error::shape(op, format!("{a:?} and {b:?} differ")));
    }
    Ok(())
}

/// A bias of `m` values.
pub(crate) fn bias(b: &[usize], m: usize) -> Result<()> {
    if len(b) != m {
        return Err(Error::shape("linear", format!("bias {b:?} for {m} outputs")));
    }
    Ok(())
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

/// Row indices whose largest is `max` into a table (or tensor) of `rows` rows.
pub(crate) fn index(op: &'static str, max: Option<u32>, rows: usize) -> Result<()> {
    if let Some(bad) = max.filter(|&m| m as usize >= rows) {
        return Err(Error::shape(op, format!("index {bad} outside a table of {rows} rows")));
    }
    Ok(())
}

/// dy [R, H] with `rows` row indices (`scatter_rows`) or ids (`embedding_backward`) → (R, H).
pub(crate) fn rows_of(op: &'static str, dy: &[usize], rows: usize) -> Result<(usize, usize)> {
    let (r, h) = matrix(dy);
    if r != rows || dy.len() != 2 {
        return Err(Error::shape(op, format!("{rows} rows for dy {dy:?}")));
    }
    Ok((r, h))
}
