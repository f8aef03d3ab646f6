//! The CPU backend: weight matrices packed once at load time for AVX-512 GEMM microkernels (f32,
//! or bf16 with AVX512-BF16; the encoder layers' products in int8 with VNNI, or portably, in
//! `--dtype int8`), the `gemm` crate on machines without AVX-512, a flash-style
//! attention on the same microkernels that skips the tiles outside the sliding window, vectorised
//! GELU/GeGLU/LayerNorm, and a rayon pool over rows, heads and panels.

mod attention;
pub mod gemm;
pub mod int8;
pub mod isa;
pub mod math;
mod train;

use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{check_concat, check_cu_seqlens, check_slice, positions, AdamUpdate, AttentionOps, DType, DeviceInfo, ElementwiseOps, EmbeddingOps, LayerNormOps, LinearOps, LossOps, OptimOps, ReduceOps, RopeOps, Storage};
use gemm::Packed;
use isa::Isa;
use crate::shapes;
use crate::{Error, Result};

/// A row-major f32 tensor in host memory; a weight matrix may instead be held packed for the
/// GEMM microkernels (then `data` is empty).
#[derive(Clone, Debug)]
pub struct CpuTensor {
    data: Arc<Vec<f32>>,
    packed: Option<Arc<Packed>>,
    shape: Vec<usize>,
}

impl CpuTensor {
    fn new(data: Vec<f32>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        CpuTensor { data: Arc::new(data), packed: None, shape }
    }
    /// (rows, last dim) of a tensor seen as a matrix.
    fn matrix(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.shape.iter().rev().skip(1).product();
        (if cols == 0 { 0 } else { rows }, cols)
    }
    /// The values of an activation (or unpacked weight).
    fn values(&self, op: &'static str) -> Result<&[f32]> {
        if self.packed.is_some() {
            return Err(Error::shape(op, format!("a packed weight matrix {:?} cannot be used as an activation", self.shape)));
        }
        Ok(&self.data)
    }
}

/// An unpadded batch on the CPU: offsets and per-token positions.
#[derive(Clone, Debug)]
pub struct CpuSeqs {
    pub cu_seqlens: Vec<u32>,
    pub positions: Vec<u32>,
}

/// The CPU backend. Work is spread over the global rayon pool.
#[derive(Clone, Debug)]
pub struct CpuBackend {
    /// How weight matrices are stored: f32, or bf16 (activations stay f32 and are rounded to bf16
    /// where they enter a bf16 product; accumulation is f32), or int8 for the encoder layers'
    /// products (`upload_linear_weight`) with everything else as in bf16.
    dtype: DType,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Every op allocates its output. glibc would hand large freed buffers back to the kernel and
/// fault fresh zeroed pages in on the next op (a fifth of the run time at 1,024 tokens); keep
/// them in the heap instead: no allocation is served by its own mmap, and the heap is not trimmed
/// below 1 GiB of free space, so the buffers of one forward pass are reused by the next.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        });
    }
}

impl CpuBackend {
    pub fn new() -> Self {
        keep_freed_buffers();
        // The gemm crate runs its wasm SIMD128 microkernels only when told to; every browser this
        // page supports has SIMD128 (the module is built with it, see .cargo/config.toml).
        #[cfg(target_family = "wasm")]
        ::gemm::set_wasm_simd128(true);
        CpuBackend { dtype: DType::F32 }
    }

    /// Weight storage: f32, bf16 or int8 (f16 is a GPU format). Without AVX512-BF16 the bf16 mode
    /// still rounds every weight to bf16, and multiplies in f32; without VNNI the int8 products run
    /// on a portable loop with the same results.
    pub fn with_dtype(mut self, dtype: DType) -> Result<Self> {
        if dtype == DType::F16 {
            return Err(Error::Device("the CPU backend stores weights as f32, bf16 or int8, not f16".into()));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// Whether products other than the int8 ones take bf16 operands (bf16 and int8 modes).
    fn bf16_products(&self) -> bool {
        matches!(self.dtype, DType::BF16 | DType::Int8)
    }

    /// Pack a weight matrix for this machine (int8 mode: as bf16; see `upload_linear_weight`).
    fn pack(&self, data: Vec<f32>, m: usize, k: usize) -> CpuTensor {
        let isa = Isa::get();
        let shape = vec![m, k];
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| half::bf16::from_f32(x).to_f32()).collect() };
        let dtype = if self.dtype == DType::Int8 { DType::BF16 } else { self.dtype };
        match (dtype, isa.avx512, isa.avx512_bf16) {
            (DType::BF16, true, true) => CpuTensor { data: Arc::new(Vec::new()), packed: Some(Arc::new(Packed::bf16(&data, m, k))), shape },
            (DType::BF16, true, false) => CpuTensor { data: Arc::new(Vec::new()), packed: Some(Arc::new(Packed::f32(&round(data), m, k))), shape },
            (DType::BF16, false, _) => CpuTensor::new(round(data), shape),
            (_, true, _) => CpuTensor { data: Arc::new(Vec::new()), packed: Some(Arc::new(Packed::f32(&data, m, k))), shape },
            (_, false, _) => CpuTensor::new(data, shape),
        }
    }
}

/// Rows per parallel task for row-wise ops (enough work to amortise a task).
const ROWS_PER_TASK: usize = 16;

fn rows_par<F>(x: &[f32], cols_in: usize, cols_out: usize, f: F) -> Vec<f32>
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    let rows = if cols_in == 0 { 0 } else { x.len() / cols_in };
    let mut y = vec![0f32; rows * cols_out];
    y.par_chunks_mut(cols_out * ROWS_PER_TASK)
        .zip(x.par_chunks(cols_in * ROWS_PER_TASK))
        .for_each(|(yb, xb)| {
            for (yr, xr) in yb.chunks_mut(cols_out).zip(xb.chunks(cols_in)) {
                f(xr, yr);
            }
        });
    y
}


/// One row of LayerNorm: y = (x − μ)/sqrt(σ² + ε) ⊙ w (+ b).
fn norm_row(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    let h = x.len();
    let mean = math::sum(x) / h as f32;
    let var = math::sum_sq_dev(x, mean) / h as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    match b {
        Some(b) => (0..h).for_each(|j| y[j] = (x[j] - mean) * rstd * w[j] + b[j]),
        None => (0..h).for_each(|j| y[j] = (x[j] - mean) * rstd * w[j]),
    }
}

/// (rows, classes) of logits [N, C] whose labels [N] are one per row and each < C.
fn check_labels(op: &'static str, logits: &CpuTensor, labels: &[u32]) -> Result<(usize, usize)> {
    crate::loss::shape::labels(op, &logits.shape, labels.len(), labels.iter().copied().max())
}

impl Storage for CpuBackend {
    type Tensor = CpuTensor;
    type Ids = Arc<Vec<u32>>;
    type Seqs = CpuSeqs;

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            backend: "cpu",
            name: "host CPU".into(),
            max_binding_bytes: usize::MAX,
            details: vec![
                ("threads".into(), rayon::current_num_threads().to_string()),
                ("instruction set".into(), Isa::get().describe().into()),
                ("weights stored as".into(), self.dtype.name().into()),
            ]
            .into_iter()
            .chain((self.dtype == DType::Int8).then(|| ("int8 products".into(), int8::Path::get().describe().into())))
            .collect(),
        }
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<CpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape("upload", format!("{} values for shape {shape:?}", data.len())));
        }
        Ok(CpuTensor::new(data.to_vec(), shape.to_vec()))
    }

    fn upload_vec(&self, data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape("upload", format!("{} values for shape {shape:?}", data.len())));
        }
        Ok(CpuTensor::new(data, shape.to_vec()))
    }

    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape("upload", format!("{} values for shape {shape:?}", data.len())));
        }
        // Matrices are packed (and rounded to bf16 in bf16 mode); vectors stay f32.
        if shape.len() == 2 && shape[0] > 0 && shape[1] > 0 {
            return Ok(self.pack(data, shape[0], shape[1]));
        }
        Ok(CpuTensor::new(data, shape.to_vec()))
    }

    fn upload_linear_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<CpuTensor> {
        if self.dtype == DType::Int8 && shape.len() == 2 && data.len() == shape.iter().product::<usize>() && shape[0] > 0 {
            let packed = int8::Int8Weights::pack(&data, shape[0], shape[1]);
            return Ok(CpuTensor { data: Arc::new(Vec::new()), packed: Some(Arc::new(Packed::I8(packed))), shape: shape.to_vec() });
        }
        self.upload_weight(data, shape)
    }

    fn upload_ids(&self, data: &[u32]) -> Result<Self::Ids> {
        Ok(Arc::new(data.to_vec()))
    }

    fn seqs(&self, cu_seqlens: &[u32]) -> Result<CpuSeqs> {
        check_cu_seqlens(cu_seqlens)?;
        Ok(CpuSeqs { cu_seqlens: cu_seqlens.to_vec(), positions: positions(cu_seqlens) })
    }

    fn shape<'a>(&self, t: &'a CpuTensor) -> &'a [usize] {
        &t.shape
    }

    async fn read(&self, t: &CpuTensor) -> Result<Vec<f32>> {
        Ok(match &t.packed {
            Some(p) => p.unpack(),
            None => t.data.to_vec(),
        })
    }

    fn slice_rows(&self, x: &CpuTensor, start: usize, end: usize) -> Result<CpuTensor> {
        let cols = check_slice(&x.shape, start, end)?;
        Ok(CpuTensor::new(x.data[start * cols..end * cols].to_vec(), vec![end - start, cols]))
    }

    fn concat_rows(&self, parts: &[CpuTensor]) -> Result<CpuTensor> {
        let (rows, cols) = check_concat(parts.iter().map(|p| p.shape.as_slice()))?;
        let mut y = Vec::with_capacity(rows * cols);
        for p in parts {
            y.extend_from_slice(&p.data);
        }
        Ok(CpuTensor::new(y, vec![rows, cols]))
    }
}

impl EmbeddingOps for CpuBackend {
    fn embedding(&self, table: &CpuTensor, ids: &Self::Ids) -> Result<CpuTensor> {
        let (v, h) = table.matrix();
        shapes::index("embedding", ids.iter().copied().max(), v)?;
        let mut y = vec![0f32; ids.len() * h];
        y.par_chunks_mut(h.max(1)).zip(ids.par_iter()).for_each(|(row, &id)| match &table.packed {
            Some(p) => p.row(id as usize, row),
            None => row.copy_from_slice(&table.data[id as usize * h..(id as usize + 1) * h]),
        });
        Ok(CpuTensor::new(y, vec![ids.len(), h]))
    }

    fn embedding_add(&self, x: &CpuTensor, table: &CpuTensor, ids: &Self::Ids) -> Result<CpuTensor> {
        let (r, h) = crate::embedding::shape::embedding_add(&x.shape, &table.shape, ids.len())?;
        shapes::index("embedding_add", ids.iter().copied().max(), r)?;
        let mut y = x.data.to_vec();
        y.par_chunks_mut(h.max(1)).zip(ids.par_iter()).for_each(|(row, &id)| {
            let mut t = vec![0f32; h];
            match &table.packed {
                Some(p) => p.row(id as usize, &mut t),
                None => t.copy_from_slice(&table.data[id as usize * h..(id as usize + 1) * h]),
            }
            row.iter_mut().zip(&t).for_each(|(a, b)| *a += b);
        });
        Ok(CpuTensor::new(y, x.shape.clone()))
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &Self::Ids) -> Result<CpuTensor> {
        let (n, h) = x.matrix();
        shapes::index("gather_rows", rows.iter().copied().max(), n)?;
        let y = rows.iter().flat_map(|&r| x.data[r as usize * h..(r as usize + 1) * h].iter().copied()).collect();
        Ok(CpuTensor::new(y, vec![rows.len(), h]))
    }

    fn mean_pool(&self, x: &CpuTensor, seqs: &CpuSeqs) -> Result<CpuTensor> {
        let (_, h) = crate::embedding::shape::mean_pool(&x.shape, seqs.positions.len())?;
        let b = seqs.cu_seqlens.len() - 1;
        let mut y = vec![0f32; b * h];
        y.par_chunks_mut(h.max(1)).zip(seqs.cu_seqlens.par_windows(2)).for_each(|(out, w)| {
            for tok in w[0] as usize..w[1] as usize {
                out.iter_mut().zip(&x.data[tok * h..(tok + 1) * h]).for_each(|(o, v)| *o += v);
            }
            let inv = 1.0 / (w[1] - w[0]) as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        });
        Ok(CpuTensor::new(y, vec![b, h]))
    }

    fn embedding_backward(&self, ids: &[u32], dy: &CpuTensor, vocab: usize) -> Result<CpuTensor> {
        let (_, h) = shapes::rows_of("embedding_backward", &dy.shape, ids.len())?;
        shapes::index("embedding_backward", ids.iter().copied().max(), vocab)?;
        let mut table = vec![0f32; vocab * h];
        for (row, &id) in dy.data.chunks(h.max(1)).zip(ids) {
            table[id as usize * h..(id as usize + 1) * h].iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
        Ok(CpuTensor::new(table, vec![vocab, h]))
    }

    fn mean_pool_backward(&self, dy: &CpuTensor, seqs: &CpuSeqs) -> Result<CpuTensor> {
        let (_, h) = crate::embedding::shape::mean_pool_backward(&dy.shape, seqs.cu_seqlens.len() - 1)?;
        let t = seqs.positions.len();
        let mut dx = vec![0f32; t * h];
        for (s, w) in seqs.cu_seqlens.windows(2).enumerate() {
            let inv = 1.0 / (w[1] - w[0]) as f32;
            for tok in w[0] as usize..w[1] as usize {
                dx[tok * h..(tok + 1) * h].iter_mut().zip(&dy.data[s * h..(s + 1) * h]).for_each(|(o, v)| *o = v * inv);
            }
        }
        Ok(CpuTensor::new(dx, vec![t, h]))
    }

    fn scatter_rows(&self, dy: &CpuTensor, rows: &Self::Ids, n: usize) -> Result<CpuTensor> {
        let (_, h) = shapes::rows_of("scatter_rows", &dy.shape, rows.len())?;
        shapes::index("scatter_rows", rows.iter().copied().max(), n)?;
        let mut dx = vec![0f32; n * h];
        for (src, &row) in dy.data.chunks(h.max(1)).zip(rows.iter()) {
            dx[row as usize * h..(row as usize + 1) * h].copy_from_slice(src);
        }
        Ok(CpuTensor::new(dx, vec![n, h]))
    }
}

impl LinearOps for CpuBackend {
    fn linear(&self, x: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>) -> Result<CpuTensor> {
        let (n, k, m) = crate::linear::shape::linear(&x.shape, &w.shape, b.map(|b| &b.shape[..]))?;
        let x_values = x.values("linear")?;
        let mut bias_done = false;
        let mut y = if let Some(p) = w.packed.as_deref() {
            // The packed kernels write every output value: no zeroing pass first. The int8 tiles
            // add the bias as they are stored.
            let mut y = Vec::with_capacity(n * m);
            // SAFETY: y has room for n rows of m values, and each kernel writes all of them.
            unsafe {
                match p {
                    Packed::I8(q) => {
                        int8::matmul_to(x_values, n, q, b.map(|b| &b.data[..]), y.as_mut_ptr(), m);
                        bias_done = true;
                    }
                    p => gemm::matmul_to(x_values, n, p, y.as_mut_ptr(), m),
                }
                y.set_len(n * m);
            }
            y
        } else if n > 0 && m > 0 && k > 0 && (gemm::packed_f32_available() || self.bf16_products()) {
            // A plain f32 weight (training's master copy): packed on the fly for the
            // microkernels, as bf16 in bf16 mode (mixed precision).
            train::matmul_nt_as(x_values, &w.data, n, k, m, self.bf16_products())
        } else {
            let mut y = vec![0f32; n * m];
            if n > 0 && m > 0 && k > 0 {
                let threads = rayon::current_num_threads();
                let parallel = threads > 1 && n * m * k > 1 << 16;
                // y[r0..r0 + rows] = x[r0..r0 + rows] · wᵀ on the gemm crate.
                // SAFETY: all pointers cover the stated shapes: y [rows, m] (row stride m),
                // x [rows, k] (row stride k) from row r0, and wᵀ viewed as [k, m] with element
                // (p, o) at w[o·k + p].
                let rows_gemm = |y: &mut [f32], r0: usize, par: ::gemm::Parallelism| unsafe {
                    let rows = y.len() / m;
                    ::gemm::gemm(
                        rows, m, k,
                        y.as_mut_ptr(), 1, m as isize, false,
                        x_values[r0 * k..].as_ptr(), 1, k as isize,
                        w.data.as_ptr(), k as isize, 1,
                        0.0, 1.0, false, false, false, par,
                    );
                };
                if parallel && cfg!(target_family = "wasm") {
                    // In the browser the gemm crate's own threading gains nothing (its several
                    // pool hand-offs per call cost what the second thread saves; measured in
                    // bench/browser/profile.md): whole blocks of rows instead, one single-threaded
                    // GEMM each, at least 64 rows per block.
                    let block = n.div_ceil(4 * threads).max(64);
                    y.par_chunks_mut(block * m).enumerate().for_each(|(i, y)| rows_gemm(y, i * block, ::gemm::Parallelism::None));
                } else {
                    rows_gemm(&mut y, 0, if parallel { ::gemm::Parallelism::Rayon(threads) } else { ::gemm::Parallelism::None });
                }
            }
            y
        };
        if let (Some(b), false) = (b, bias_done) {
            y.par_chunks_mut(m.max(1)).for_each(|row| row.iter_mut().zip(b.data.iter()).for_each(|(v, bb)| *v += bb));
        }
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = m;
        Ok(CpuTensor::new(y, shape))
    }

    fn matmul(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let (n, k, m) = crate::linear::shape::matmul(&a.shape, &b.shape)?;
        Ok(CpuTensor::new(train::matmul(a.values("matmul")?, b.values("matmul")?, n, k, m, self.bf16_products()), vec![n, m]))
    }

    fn matmul_tn(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        let (n, m, k) = crate::linear::shape::matmul_tn(&a.shape, &b.shape)?;
        Ok(CpuTensor::new(train::matmul_tn(a.values("matmul_tn")?, b.values("matmul_tn")?, n, m, k, self.bf16_products()), vec![m, k]))
    }
}

impl LayerNormOps for CpuBackend {
    fn layer_norm(&self, x: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>, eps: f32) -> Result<CpuTensor> {
        let (_, h) = crate::layernorm::shape::norm("layer_norm", &x.shape, None, &w.shape, b.map(|b| &b.shape[..]))?;
        let (w, b) = (&w.data[..], b.map(|b| &b.data[..]));
        let y = rows_par(&x.data, h, h, |xr, yr| norm_row(xr, w, b, eps, yr));
        Ok(CpuTensor::new(y, x.shape.clone()))
    }

    fn add_layer_norm(&self, x: &CpuTensor, y: &CpuTensor, w: &CpuTensor, b: Option<&CpuTensor>, eps: f32) -> Result<(CpuTensor, CpuTensor)> {
        let (_, h) = crate::layernorm::shape::norm("add_layer_norm", &x.shape, Some(&y.shape), &w.shape, b.map(|b| &b.shape[..]))?;
        let (w, b) = (&w.data[..], b.map(|b| &b.data[..]));
        let mut s = vec![0f32; x.data.len()];
        let mut n = vec![0f32; x.data.len()];
        let block = h.max(1) * ROWS_PER_TASK;
        s.par_chunks_mut(block)
            .zip(n.par_chunks_mut(block))
            .zip(x.data.par_chunks(block).zip(y.data.par_chunks(block)))
            .for_each(|((sb, nb), (xb, yb))| {
                for (((sr, nr), xr), yr) in sb.chunks_mut(h.max(1)).zip(nb.chunks_mut(h.max(1))).zip(xb.chunks(h.max(1))).zip(yb.chunks(h.max(1))) {
                    for j in 0..h {
                        sr[j] = xr[j] + yr[j];
                    }
                    norm_row(sr, w, b, eps, nr);
                }
            });
        Ok((CpuTensor::new(s, x.shape.clone()), CpuTensor::new(n, x.shape.clone())))
    }

    fn layer_norm_backward(&self, x: &CpuTensor, w: &CpuTensor, dy: &CpuTensor, eps: f32) -> Result<(CpuTensor, CpuTensor)> {
        let (_, h) = crate::layernorm::shape::norm_backward(&x.shape, &w.shape, &dy.shape)?;
        let (dx, dw) = train::layer_norm_backward(x.values("layer_norm_backward")?, w.values("layer_norm_backward")?, &dy.data, eps, h);
        Ok((CpuTensor::new(dx, x.shape.clone()), CpuTensor::new(dw, vec![h])))
    }
}

impl ElementwiseOps for CpuBackend {
    fn add(&self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        shapes::same("add", &a.shape, &b.shape)?;
        let y = a.data.par_iter().zip(b.data.par_iter()).map(|(x, y)| x + y).collect();
        Ok(CpuTensor::new(y, a.shape.clone()))
    }

    fn gelu(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let y = rows_par(&x.data, x.matrix().1, x.matrix().1, math::gelu);
        Ok(CpuTensor::new(y, x.shape.clone()))
    }

    fn tanh(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let y = x.data.par_iter().map(|&v| v.tanh()).collect();
        Ok(CpuTensor::new(y, x.shape.clone()))
    }

    fn geglu(&self, u: &CpuTensor) -> Result<CpuTensor> {
        let (n, i) = crate::elementwise::shape::geglu(&u.shape)?;
        let two_i = 2 * i;
        let y = rows_par(&u.data, two_i, i, math::geglu);
        Ok(CpuTensor::new(y, vec![n, i]))
    }

    fn scale(&self, a: &CpuTensor, s: f32) -> Result<CpuTensor> {
        Ok(CpuTensor::new(a.values("scale")?.par_iter().map(|v| v * s).collect(), a.shape.clone()))
    }

    fn gelu_backward(&self, x: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        shapes::same("gelu_backward", &x.shape, &dy.shape)?;
        let y = x.data.par_iter().zip(dy.data.par_iter()).map(|(&z, &d)| d * math::gelu_grad(z)).collect();
        Ok(CpuTensor::new(y, x.shape.clone()))
    }

    fn tanh_backward(&self, y: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        shapes::same("tanh_backward", &y.shape, &dy.shape)?;
        let dx = y.data.par_iter().zip(dy.data.par_iter()).map(|(&t, &d)| d * (1.0 - t * t)).collect();
        Ok(CpuTensor::new(dx, y.shape.clone()))
    }

    fn geglu_backward(&self, u: &CpuTensor, dy: &CpuTensor) -> Result<CpuTensor> {
        let (n, i) = crate::elementwise::shape::geglu_backward(&u.shape, &dy.shape)?;
        let two_i = 2 * i;
        let mut du = vec![0f32; n * two_i];
        du.par_chunks_mut(two_i.max(1)).zip(u.data.par_chunks(two_i.max(1)).zip(dy.data.par_chunks(i.max(1)))).for_each(|(out, (row, d))| {
            for j in 0..i {
                let a = row[j];
                out[j] = d[j] * row[i + j] * math::gelu_grad(a);
                out[i + j] = d[j] * math::gelu_scalar(a);
            }
        });
        Ok(CpuTensor::new(du, u.shape.clone()))
    }
}

impl RopeOps for CpuBackend {
    fn rope(&self, qkv: &CpuTensor, seqs: &CpuSeqs, cos: &CpuTensor, sin: &CpuTensor, nh: usize) -> Result<CpuTensor> {
        let (_, h, hd, p_max) = crate::rope::shape::rope("rope", &qkv.shape, nh, seqs.positions.len(), &cos.shape, &sin.shape)?;
        let (half, three_h) = (hd / 2, 3 * h);
        let longest = seqs.cu_seqlens.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
        if longest > p_max {
            return Err(Error::limit("rope", format!("a sequence of {longest} tokens needs tables of {longest} positions, have {p_max}")));
        }
        let mut y = qkv.data.to_vec();
        // Each q and k head of a row: (a, b) → (a·cos − b·sin, b·cos + a·sin) over its halves,
        // written as zipped slices so that the loop vectorises.
        let rotate = |row: &mut [f32], p: u32| {
            let (c, s) = (&cos.data[p as usize * half..][..half], &sin.data[p as usize * half..][..half]);
            for u in row[..2 * nh * hd].chunks_exact_mut(hd) {
                let (lo, hi) = u.split_at_mut(half);
                for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(c).zip(s) {
                    let (x, z) = (*a, *b);
                    *a = x * c - z * s;
                    *b = z * c + x * s;
                }
            }
        };
        y.par_chunks_mut(three_h * ROWS_PER_TASK).zip(seqs.positions.par_chunks(ROWS_PER_TASK)).for_each(|(rows, ps)| {
            for (row, &p) in rows.chunks_mut(three_h).zip(ps) {
                rotate(row, p);
            }
        });
        Ok(CpuTensor::new(y, qkv.shape.clone()))
    }

    fn rope_backward(&self, dqkv: &CpuTensor, seqs: &CpuSeqs, cos: &CpuTensor, sin: &CpuTensor, nh: usize) -> Result<CpuTensor> {
        // The inverse rotation is the forward one with the angle negated.
        let neg_sin = CpuTensor::new(sin.values("rope_backward")?.iter().map(|v| -v).collect(), sin.shape.clone());
        self.rope(dqkv, seqs, cos, &neg_sin, nh)
    }
}

impl AttentionOps for CpuBackend {
    fn attention(&self, qkv: &CpuTensor, seqs: &CpuSeqs, nh: usize, window: Option<usize>) -> Result<(CpuTensor, CpuTensor)> {
        let (t, h, _) = shapes::qkv("attention", &qkv.shape, nh, seqs.positions.len())?;
        let (out, lse) = attention::forward(qkv.values("attention")?, &seqs.cu_seqlens, nh, h / nh, window, self.bf16_products());
        Ok((CpuTensor::new(out, vec![t, h]), CpuTensor::new(lse, vec![t, nh])))
    }

    fn attention_backward(&self, qkv: &CpuTensor, out: &CpuTensor, lse: &CpuTensor, dout: &CpuTensor, seqs: &CpuSeqs, nh: usize, window: Option<usize>) -> Result<CpuTensor> {
        let (t, h, _) = crate::attention::shape::attention_backward(&qkv.shape, &out.shape, &lse.shape, &dout.shape, nh, seqs.positions.len())?;
        let three_h = 3 * h;
        let d = train::attention_backward(qkv.values("attention_backward")?, &out.data, &lse.data, &dout.data, &seqs.cu_seqlens, nh, h / nh, window);
        Ok(CpuTensor::new(d, vec![t, three_h]))
    }
}

impl LossOps for CpuBackend {
    fn cross_entropy(&self, logits: &CpuTensor, labels: &Self::Ids) -> Result<CpuTensor> {
        let (n, c) = check_labels("cross_entropy", logits, labels)?;
        let y = logits
            .data
            .par_chunks(c.max(1))
            .zip(labels.par_iter())
            .map(|(row, &label)| {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                max + sum.ln() - row[label as usize]
            })
            .collect();
        Ok(CpuTensor::new(y, vec![n, 1]))
    }

    fn cross_entropy_backward(&self, logits: &CpuTensor, labels: &Self::Ids, scale: f32) -> Result<CpuTensor> {
        let (n, c) = check_labels("cross_entropy_backward", logits, labels)?;
        let mut d = vec![0f32; n * c];
        d.par_chunks_mut(c.max(1)).zip(logits.data.par_chunks(c.max(1)).zip(labels.par_iter())).for_each(|(out, (row, &label))| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
            let k = scale / sum;
            out.iter_mut().for_each(|o| *o *= k);
            out[label as usize] -= scale;
        });
        Ok(CpuTensor::new(d, logits.shape.clone()))
    }

    fn label_rank(&self, logits: &CpuTensor, labels: &Self::Ids) -> Result<CpuTensor> {
        let (n, c) = check_labels("label_rank", logits, labels)?;
        let ranks: Vec<f32> = logits
            .data
            .par_chunks(c.max(1))
            .zip(labels.par_iter())
            .map(|(row, &l)| row.iter().filter(|&&v| v > row[l as usize]).count() as f32)
            .collect();
        Ok(CpuTensor::new(ranks, vec![n, 1]))
    }
}

impl ReduceOps for CpuBackend {
    fn sum_rows(&self, x: &CpuTensor) -> Result<CpuTensor> {
        let (_, c) = x.matrix();
        Ok(CpuTensor::new(train::sum_rows(x.values("sum_rows")?, c), vec![c]))
    }

    fn sum_squares(&self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::new(vec![train::sum_squares(x.values("sum_squares")?) as f32], vec![1, 1]))
    }
}

impl OptimOps for CpuBackend {
    fn adam_step(&self, p: &CpuTensor, g: &CpuTensor, m: &CpuTensor, v: &CpuTensor, step: &crate::backend::AdamStep) -> Result<AdamUpdate<CpuTensor>> {
        crate::optim::shape::adam(&p.shape, &g.shape, &m.shape, &v.shape, step.step)?;
        let (mut pn, mut mn, mut vn) = (p.values("adam_step")?.to_vec(), m.data.to_vec(), v.data.to_vec());
        let rms = train::adam_step(&mut pn, g.values("adam_step")?, &mut mn, &mut vn, step);
        let shape = p.shape.clone();
        Ok(AdamUpdate {
            param: CpuTensor::new(pn, shape.clone()),
            m: CpuTensor::new(mn, shape.clone()),
            v: CpuTensor::new(vn, shape),
            rms: matches!(step.rule, crate::backend::Rule::StableAdamW { .. }).then(|| CpuTensor::new(vec![rms], vec![1])),
        })
    }
}
