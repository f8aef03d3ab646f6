//! Row gathers and pooling: embedding lookup (over a table that may be split in row chunks),
//! embedding sum (x + table[ids]: BERT's token-type and position embeddings),
//! row gather (CLS pooling, sparse prediction) and mean pooling per sequence.
//!
//! Backwards: the embedding's scatter-add groups the tokens by id on the host (sorted distinct ids
//! with offsets into a list of rows, CSR) so that one workgroup owns each distinct id and sums its
//! rows in token order: deterministic, no atomics. The table gradient is laid out in the row
//! chunks `upload` gives the table itself. Mean pooling and row gathers go back by broadcast and
//! by scatter into zeros.

use cubecl::prelude::*;

use crate::backend::{DType, EmbeddingOps, Storage};
use crate::reduce::fill;
use crate::gpu::tensor::{launch_float, launch_pair, GpuBackend, GpuIds, GpuSeqs, GpuTensor, ELEMWISE_UNITS};
use crate::shapes;
use crate::{Error, Result};

#[cfg(any(test, all(feature = "testing", not(target_family = "wasm"))))]
mod tests;

impl EmbeddingOps for GpuBackend {
    fn embedding(&self, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
        embedding(self, table, ids)
    }

    fn embedding_add(&self, x: &GpuTensor, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
        embedding_add(self, x, table, ids)
    }

    fn gather_rows(&self, x: &GpuTensor, rows: &GpuIds) -> Result<GpuTensor> {
        gather_rows(self, x, rows)
    }

    fn mean_pool(&self, x: &GpuTensor, seqs: &GpuSeqs) -> Result<GpuTensor> {
        mean_pool(self, x, seqs)
    }

    fn embedding_backward(&self, ids: &[u32], dy: &GpuTensor, vocab: usize) -> Result<GpuTensor> {
        embedding_backward(self, ids, dy, vocab)
    }

    fn mean_pool_backward(&self, dy: &GpuTensor, seqs: &GpuSeqs) -> Result<GpuTensor> {
        mean_pool_backward(self, dy, seqs)
    }

    fn scatter_rows(&self, dy: &GpuTensor, rows: &GpuIds, n: usize) -> Result<GpuTensor> {
        scatter_rows(self, dy, rows, n)
    }
}

/// This family's shape rules, checked by the GPU launchers below and by the CPU backend alike.
pub(crate) mod shape {
    use crate::shapes::matrix;
    use crate::{Error, Result};

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
}

/// out[t, c] = table[ids[t] − lo, c] for the ids that fall in this chunk's rows [lo, lo + rows).
#[cube(launch_unchecked)]
fn gather_kernel<A: Float, W: Float>(table: &[W], ids: &[u32], out: &mut [A], n: usize, h: usize, lo: u32, rows: u32) {
    let i = ABSOLUTE_POS;
    if i < n {
        let t = i / h;
        let c = i % h;
        let id = ids[t];
        if id >= lo && id < lo + rows {
            out[i] = A::cast_from(table[(id - lo) as usize * h + c]);
        }
    }
}

/// out[t, c] = x[t, c] + table[ids[t] − lo, c] for the ids that fall in this chunk's rows
/// [lo, lo + rows); every id falls in exactly one chunk, so each output is written once.
#[cube(launch_unchecked)]
fn gather_add_kernel<A: Float, W: Float>(x: &[A], table: &[W], ids: &[u32], out: &mut [A], n: usize, h: usize, lo: u32, rows: u32) {
    let i = ABSOLUTE_POS;
    if i < n {
        let t = i / h;
        let c = i % h;
        let id = ids[t];
        if id >= lo && id < lo + rows {
            out[i] = A::cast_from(f32::cast_from(x[i]) + f32::cast_from(table[(id - lo) as usize * h + c]));
        }
    }
}

/// out[b, c] = mean over the rows of sequence b of x[·, c].
#[cube(launch_unchecked)]
fn mean_pool_kernel<F: Float>(x: &[F], cu_seqlens: &[u32], out: &mut [F], n: usize, h: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let b = i / h;
        let c = i % h;
        let start = cu_seqlens[b] as usize;
        let end = cu_seqlens[b + 1] as usize;
        let mut acc = 0.0f32;
        for t in start..end {
            acc += f32::cast_from(x[t * h + c]);
        }
        out[i] = F::cast_from(acc / f32::cast_from(end - start));
    }
}

fn gather(gpu: &GpuBackend, op: &'static str, table: &GpuTensor, ids: &GpuIds, out_dtype: DType) -> Result<GpuTensor> {
    let (rows, h) = table.matrix();
    shapes::index(op, ids.max, rows)?;
    let n = ids.len * h;
    let out = gpu.alloc_as(op, n, out_dtype)?;
    let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
    for (lo, part_rows, handle) in table.chunks() {
        launch_pair!(out_dtype, table.dtype, gather_kernel(
                gpu.client(), count.clone(), dim,
                BufferArg::from_raw_parts(handle.clone(), part_rows * h),
                BufferArg::from_raw_parts(ids.handle.clone(), ids.len),
                BufferArg::from_raw_parts(out.clone(), n),
                n, h, lo as u32, part_rows as u32,
            ));
    }
    Ok(GpuTensor::of(out, vec![ids.len, h], out_dtype))
}

/// table [V, H] (a weight, possibly in row chunks), ids [T] → table[ids] [T, H] (an activation).
pub fn embedding(gpu: &GpuBackend, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
    gather(gpu, "embedding", table, ids, gpu.act)
}

/// x [T, H] (an activation), table [R, H] (a weight, possibly in row chunks), ids [T]
/// → x + table[ids] [T, H] in x's dtype.
pub fn embedding_add(gpu: &GpuBackend, x: &GpuTensor, table: &GpuTensor, ids: &GpuIds) -> Result<GpuTensor> {
    let (rows, h) = shape::embedding_add(&x.shape, &table.shape, ids.len)?;
    shapes::index("embedding_add", ids.max, rows)?;
    let n = ids.len * h;
    let (xh, ad) = x.act("embedding_add")?;
    let out = gpu.alloc_as("embedding_add", n, ad)?;
    let (count, dim) = gpu.elementwise("embedding_add", n, ELEMWISE_UNITS)?;
    for (lo, part_rows, handle) in table.chunks() {
        launch_pair!(ad, table.dtype, gather_add_kernel(
                gpu.client(), count.clone(), dim,
                BufferArg::from_raw_parts(xh.clone(), n),
                BufferArg::from_raw_parts(handle.clone(), part_rows * h),
                BufferArg::from_raw_parts(ids.handle.clone(), ids.len),
                BufferArg::from_raw_parts(out.clone(), n),
                n, h, lo as u32, part_rows as u32,
            ));
    }
    Ok(GpuTensor::of(out, x.shape.clone(), ad))
}

/// x [N, H], rows [R] → x[rows] [R, H].
pub fn gather_rows(gpu: &GpuBackend, x: &GpuTensor, rows: &GpuIds) -> Result<GpuTensor> {
    if x.dtype == DType::BF16 {
        return Err(Error::shape("gather_rows", "bf16 tensor on the GPU"));
    }
    gather(gpu, "gather_rows", x, rows, x.dtype)
}

/// x [T, H] → per-sequence mean [B, H].
pub fn mean_pool(gpu: &GpuBackend, x: &GpuTensor, seqs: &GpuSeqs) -> Result<GpuTensor> {
    let (t, h) = shape::mean_pool(&x.shape, seqs.tokens)?;
    let b = seqs.cu_seqlens.len() - 1;
    let n = b * h;
    let (xh, ad) = x.act("mean_pool")?;
    let out = gpu.alloc_as("mean_pool", n, ad)?;
    let (count, dim) = gpu.elementwise("mean_pool", n, ELEMWISE_UNITS)?;
    launch_float!(ad, mean_pool_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(xh, t * h),
            BufferArg::from_raw_parts(seqs.cu.clone(), b + 1),
            BufferArg::from_raw_parts(out.clone(), n),
            n, h,
        ));
    Ok(GpuTensor::of(out, vec![b, h], ad))
}

/// Invocations per distinct id in the embedding backward (they split the columns).
const SCATTER_UNITS: usize = 64;

/// For distinct id u = first + CUBE_POS (of `count`): out[uniq[u] − lo, c] = Σ dy[rows[k], c] over
/// k in offsets[u]..offsets[u + 1], in that order. out is one table chunk [part_rows, h].
#[cube(launch_unchecked)]
fn embedding_backward_kernel<F: Float>(
    dy: &[F],
    uniq: &[u32],
    offsets: &[u32],
    rows: &[u32],
    out: &mut [F],
    count: usize,
    first: usize,
    h: usize,
    lo: u32,
) {
    let cube = CUBE_POS;
    if cube < count {
        let u = first + cube;
        let id = uniq[u];
        let k0 = offsets[u] as usize;
        let k1 = offsets[u + 1] as usize;
        let dst = (id - lo) as usize * h;
        let mut c = UNIT_POS as usize;
        while c < h {
            let mut acc = 0.0f32;
            for k in k0..k1 {
                acc += f32::cast_from(dy[rows[k] as usize * h + c]);
            }
            out[dst + c] = F::cast_from(acc);
            c += SCATTER_UNITS;
        }
    }
}

/// dx[t, c] = dy[seq(t), c] / len(seq(t)).
#[cube(launch_unchecked)]
fn mean_pool_backward_kernel<F: Float>(dy: &[F], cu_seqlens: &[u32], seq_ids: &[u32], dx: &mut [F], n: usize, h: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let t = i / h;
        let c = i % h;
        let b = seq_ids[t] as usize;
        let len = cu_seqlens[b + 1] - cu_seqlens[b];
        dx[i] = F::cast_from(f32::cast_from(dy[b * h + c]) / f32::cast_from(len));
    }
}

/// out[rows[r], c] = dy[r, c] for dy [R, h] (out zeroed before).
#[cube(launch_unchecked)]
fn scatter_rows_kernel<F: Float>(dy: &[F], rows: &[u32], out: &mut [F], n: usize, h: usize) {
    let i = ABSOLUTE_POS;
    if i < n {
        let r = i / h;
        let c = i % h;
        out[rows[r] as usize * h + c] = dy[i];
    }
}

/// The tokens grouped by id: (sorted distinct ids, offsets [U + 1] into `rows`, token indices
/// ordered by id then position).
fn group_by_id(ids: &[u32]) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut rows: Vec<u32> = (0..ids.len() as u32).collect();
    rows.sort_by_key(|&t| (ids[t as usize], t));
    let mut uniq = Vec::new();
    let mut offsets = Vec::new();
    for (k, &t) in rows.iter().enumerate() {
        if uniq.last() != Some(&ids[t as usize]) {
            uniq.push(ids[t as usize]);
            offsets.push(k as u32);
        }
    }
    offsets.push(rows.len() as u32);
    (uniq, offsets, rows)
}

/// ids [T] (host), dy [T, H] → dtable [V, H] (zero in rows no id selects), in the row chunks
/// `upload` would use for a [V, H] f32 tensor.
pub fn embedding_backward(gpu: &GpuBackend, ids: &[u32], dy: &GpuTensor, vocab: usize) -> Result<GpuTensor> {
    let op = "embedding_backward";
    let (t, h) = shapes::rows_of(op, &dy.shape, ids.len())?;
    shapes::index(op, ids.iter().copied().max(), vocab)?;
    let dyh = dy.handle(op)?;
    let out = gpu.alloc_parts(op, &[vocab, h])?;
    let (uniq, offsets, rows) = group_by_id(ids);
    let uniq_h = gpu.upload_ids(&uniq)?;
    let offsets_h = gpu.upload_ids(&offsets)?;
    let rows_h = gpu.upload_ids(&rows)?;
    for (lo, part_rows, handle) in out.chunks() {
        fill(gpu, handle, part_rows * h, 0.0)?;
        let first = uniq.partition_point(|&id| (id as usize) < lo);
        let end = uniq.partition_point(|&id| (id as usize) < lo + part_rows);
        if end == first || h == 0 {
            continue;
        }
        launch_float!(DType::F32, embedding_backward_kernel(
                gpu.client(),
                gpu.grid(op, end - first)?,
                CubeDim::new_1d(SCATTER_UNITS as u32),
                BufferArg::from_raw_parts(dyh.clone(), t * h),
                BufferArg::from_raw_parts(uniq_h.handle.clone(), uniq.len()),
                BufferArg::from_raw_parts(offsets_h.handle.clone(), offsets.len()),
                BufferArg::from_raw_parts(rows_h.handle.clone(), rows.len()),
                BufferArg::from_raw_parts(handle.clone(), part_rows * h),
                end - first,
                first,
                h,
                lo as u32,
            ));
    }
    Ok(out)
}

/// dy [B, H] → dx [T, H]: every row of sequence b gets dy[b] / len(b).
pub fn mean_pool_backward(gpu: &GpuBackend, dy: &GpuTensor, seqs: &GpuSeqs) -> Result<GpuTensor> {
    let op = "mean_pool_backward";
    let (b, h) = shape::mean_pool_backward(&dy.shape, seqs.cu_seqlens.len() - 1)?;
    let t = seqs.tokens;
    let n = t * h;
    let out = gpu.alloc(op, n)?;
    let (count, dim) = gpu.elementwise(op, n, ELEMWISE_UNITS)?;
    launch_float!(DType::F32, mean_pool_backward_kernel(
            gpu.client(), count, dim,
            BufferArg::from_raw_parts(dy.handle(op)?, b * h),
            BufferArg::from_raw_parts(seqs.cu.clone(), b + 1),
            BufferArg::from_raw_parts(seqs.seq_ids.clone(), t),
            BufferArg::from_raw_parts(out.clone(), n),
            n, h,
        ));
    Ok(GpuTensor::single(out, vec![t, h]))
}

/// dy [R, H], rows [R] (distinct, each < n) → dx [n, H]: dy's rows at `rows`, zero elsewhere.
pub fn scatter_rows(gpu: &GpuBackend, dy: &GpuTensor, rows: &GpuIds, n: usize) -> Result<GpuTensor> {
    let op = "scatter_rows";
    let (r, h) = shapes::rows_of(op, &dy.shape, rows.len)?;
    shapes::index(op, rows.max, n)?;
    let out = gpu.alloc(op, n * h)?;
    fill(gpu, &out, n * h, 0.0)?;
    let elems = r * h;
    if elems > 0 {
        let (count, dim) = gpu.elementwise(op, elems, ELEMWISE_UNITS)?;
        launch_float!(DType::F32, scatter_rows_kernel(
                gpu.client(), count, dim,
                BufferArg::from_raw_parts(dy.handle(op)?, elems),
                BufferArg::from_raw_parts(rows.handle.clone(), r),
                BufferArg::from_raw_parts(out.clone(), n * h),
                elems, h,
            ));
    }
    Ok(GpuTensor::single(out, vec![n, h]))
}
