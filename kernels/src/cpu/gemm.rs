//! CPU matrix products y = x·Wᵀ with AVX-512 microkernels: weights are packed once, at load time,
//! into panels of `NR` = 32 output columns laid out k-major, so a microkernel tile of `MR` = 12
//! rows × 32 columns keeps its 24 accumulators in registers while streaming one panel. An f32
//! kernel (FMA) and a bf16 kernel (AVX512-BF16 `vdpbf16ps`: pairs of bf16 products accumulated in
//! f32, at twice the f32 rate). Machines without AVX-512 use the `gemm` crate on plain weights.

use rayon::prelude::*;

use super::isa::Isa;

/// Output columns per panel (two 16-lane vectors).
pub const NR: usize = 32;
/// Rows per microkernel tile.
pub const MR: usize = 12;

/// How a weight matrix W [m, k] (PyTorch `nn.Linear` layout, out × in) is stored.
#[derive(Debug)]
pub enum Packed {
    /// f32 panels: panel p, step kk, lane j = W[p·NR + j, kk] (zero past m).
    F32 { data: Vec<f32>, m: usize, k: usize },
    /// bf16 pair panels: panel p, pair q, lane j, half t = W[p·NR + j, 2q + t]; k padded to even.
    Bf16 { data: Vec<u16>, m: usize, k: usize },
    /// int8 quad panels, quantised per output channel (`int8`).
    I8(super::int8::Int8Weights),
}

pub(crate) fn bf16_bits(v: f32) -> u16 {
    half::bf16::from_f32(v).to_bits()
}

fn bf16_value(b: u16) -> f32 {
    half::bf16::from_bits(b).to_f32()
}

impl Packed {
    /// Pack W [m, k] as f32 panels.
    pub fn f32(w: &[f32], m: usize, k: usize) -> Packed {
        let panels = m.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        data.par_chunks_mut(k * NR).enumerate().for_each(|(p, panel)| {
            for j in 0..NR.min(m - p * NR) {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        });
        Packed::F32 { data, m, k }
    }

    /// Pack W [m, k] as bf16 pair panels (round to nearest even).
    pub fn bf16(w: &[f32], m: usize, k: usize) -> Packed {
        let panels = m.div_ceil(NR);
        let pairs = k.div_ceil(2);
        let mut data = vec![0u16; panels * pairs * NR * 2];
        data.par_chunks_mut(pairs * NR * 2).enumerate().for_each(|(p, panel)| {
            for j in 0..NR.min(m - p * NR) {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[(kk / 2) * NR * 2 + j * 2 + kk % 2] = bf16_bits(v);
                }
            }
        });
        Packed::Bf16 { data, m, k }
    }

    pub fn rows(&self) -> usize {
        match self {
            Packed::F32 { m, .. } | Packed::Bf16 { m, .. } => *m,
            Packed::I8(w) => w.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Packed::F32 { k, .. } | Packed::Bf16 { k, .. } => *k,
            Packed::I8(w) => w.cols(),
        }
    }

    /// Row j of W (an embedding lookup reads the tied table through this).
    pub fn row(&self, j: usize, out: &mut [f32]) {
        let (p, lane) = (j / NR, j % NR);
        match self {
            Packed::F32 { data, k, .. } => {
                let panel = &data[p * k * NR..(p + 1) * k * NR];
                for (kk, o) in out.iter_mut().enumerate().take(*k) {
                    *o = panel[kk * NR + lane];
                }
            }
            Packed::Bf16 { data, k, .. } => {
                let pairs = k.div_ceil(2);
                let panel = &data[p * pairs * NR * 2..(p + 1) * pairs * NR * 2];
                for (kk, o) in out.iter_mut().enumerate().take(*k) {
                    *o = bf16_value(panel[(kk / 2) * NR * 2 + lane * 2 + kk % 2]);
                }
            }
            Packed::I8(w) => w.row(j, out),
        }
    }

    /// The whole matrix back as row-major f32 [m, k].
    pub fn unpack(&self) -> Vec<f32> {
        let (m, k) = (self.rows(), self.cols());
        let mut w = vec![0f32; m * k];
        w.par_chunks_mut(k.max(1)).enumerate().for_each(|(j, row)| self.row(j, row));
        w
    }
}

/// A raw pointer that may cross threads: each task writes a disjoint block of the output.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// y [n, m] = x [n, k] · Wᵀ, x and y row-major (y's row stride `ldy` ≥ m).
pub fn matmul(x: &[f32], n: usize, w: &Packed, y: &mut [f32], ldy: usize) {
    let m = w.rows();
    assert!(y.len() >= n.saturating_sub(1) * ldy + m.min(ldy) && ldy >= m);
    // SAFETY: y covers n rows of stride ldy, m values each (checked above).
    unsafe { matmul_to(x, n, w, y.as_mut_ptr(), ldy) }
}

/// `matmul` into memory that may be uninitialised: every one of its n × m values is written.
///
/// # Safety
/// `y` must be valid for writes of n rows of stride `ldy` ≥ m, m values each.
pub unsafe fn matmul_to(x: &[f32], n: usize, w: &Packed, y: *mut f32, ldy: usize) {
    let (m, k) = (w.rows(), w.cols());
    assert!(x.len() >= n * k && ldy >= m);
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        for r in 0..n {
            std::ptr::write_bytes(y.add(r * ldy), 0, m);
        }
        return;
    }
    match w {
        Packed::F32 { data, .. } => run_tiles(n, m, k * 4, y, ldy, |r0, rows, p, cols, c, ldc| unsafe {
            tile_f32_dispatch(rows, k, x.as_ptr().add(r0 * k), k, data.as_ptr().add(p * k * NR), c, ldc, cols)
        }),
        Packed::Bf16 { data, .. } => {
            // Activations to bf16 pairs (k padded to even with a zero).
            let kp = k.div_ceil(2) * 2;
            let mut xb = vec![0u16; n * kp];
            xb.par_chunks_mut(kp * 64).zip(x.par_chunks(k * 64)).for_each(|(dst, src)| {
                for (d, s) in dst.chunks_mut(kp).zip(src.chunks(k)) {
                    super::math::to_bf16(s, &mut d[..k]);
                }
            });
            let pairs = kp / 2;
            run_tiles(n, m, kp * 2, y, ldy, |r0, rows, p, cols, c, ldc| unsafe {
                tile_bf16_dispatch(rows, pairs, xb.as_ptr().add(r0 * kp) as *const u32, pairs, data.as_ptr().add(p * pairs * NR * 2), c, ldc, cols)
            })
        }
        Packed::I8(w) => super::int8::matmul_to(x, n, w, None, y, ldy),
    }
}

/// Split the output into (row chunk × panel group) tasks, spread over the rayon pool. Row chunks
/// are sized so that a chunk of x stays in L2 while the panels stream past it.
pub(super) fn run_tiles<F>(n: usize, m: usize, row_bytes: usize, y: *mut f32, ldy: usize, tile: F)
where
    F: Fn(usize, usize, usize, usize, *mut f32, usize) + Sync,
{
    let panels = m.div_ceil(NR);
    let chunk_rows = ((512 * 1024 / row_bytes.max(1)) / MR * MR).clamp(MR, 16 * MR);
    let row_chunks = n.div_ceil(chunk_rows);
    let threads = rayon::current_num_threads();
    // Enough tasks to balance the pool; panels grouped so a task is not too small.
    let groups = if threads == 1 { 1 } else { (threads * 4).div_ceil(row_chunks).min(panels) };
    let per_group = panels.div_ceil(groups);
    let out = SyncPtr(y);
    let task = |t: usize| {
        let out = out;
        let (rc, g) = (t / groups, t % groups);
        let (r_lo, r_hi) = (rc * chunk_rows, ((rc + 1) * chunk_rows).min(n));
        for p in g * per_group..((g + 1) * per_group).min(panels) {
            let cols = NR.min(m - p * NR);
            let mut r0 = r_lo;
            while r0 < r_hi {
                let rows = MR.min(r_hi - r0);
                tile(r0, rows, p, cols, unsafe { out.0.add(r0 * ldy + p * NR) }, ldy);
                r0 += rows;
            }
        }
    };
    let tasks = row_chunks * groups;
    if threads == 1 || tasks == 1 {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

macro_rules! dispatch_rows {
    ($rows:expr, $f:ident ( $($arg:expr),* )) => {
        match $rows {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            _ => unreachable!("tiles have 1 to MR rows"),
        }
    };
}
pub(super) use dispatch_rows;

/// C [rows, cols] (row stride ldc) = A [rows, k] (row stride lda) · B panel [k, NR].
///
/// # Safety
/// AVX-512F must be available; pointers must cover the stated ranges.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_f32_dispatch(rows: usize, k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
    dispatch_rows!(rows, tile_f32(k, a, lda, b, c, ldc, cols))
}

/// C [rows, cols] += A [rows, k] · B panel (accumulating into C).
///
/// # Safety
/// As [`tile_f32_dispatch`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_f32_acc_dispatch(rows: usize, k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
    dispatch_rows!(rows, tile_f32_acc(k, a, lda, b, c, ldc, cols))
}

/// C [rows, cols] += A pairs [rows, pairs] · B bf16 pair panel (accumulating into C).
///
/// # Safety
/// As [`tile_bf16_dispatch`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_bf16_acc_dispatch(rows: usize, pairs: usize, a: *const u32, lda: usize, b: *const u16, c: *mut f32, ldc: usize, cols: usize) {
    dispatch_rows!(rows, tile_bf16_acc(pairs, a, lda, b, c, ldc, cols))
}

/// C [rows, cols] = A pairs [rows, pairs] (u32 = two bf16) · B bf16 pair panel.
///
/// # Safety
/// AVX-512F and AVX512-BF16 must be available; pointers must cover the stated ranges.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_bf16_dispatch(rows: usize, pairs: usize, a: *const u32, lda: usize, b: *const u16, c: *mut f32, ldc: usize, cols: usize) {
    dispatch_rows!(rows, tile_bf16(pairs, a, lda, b, c, ldc, cols))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::NR;

    #[inline(always)]
    pub fn masks(cols: usize) -> (__mmask16, __mmask16) {
        let lo = if cols >= 16 { 0xffff } else { ((1u32 << cols) - 1) as u16 };
        let hi = if cols >= 32 { 0xffff } else if cols > 16 { ((1u32 << (cols - 16)) - 1) as u16 } else { 0 };
        (lo, hi)
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_f32<const R: usize>(k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        kernel_f32::<R>(k, a, lda, b, &mut acc0, &mut acc1);
        let (m0, m1) = masks(cols);
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc0[r]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc1[r]);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_f32_acc<const R: usize>(k: usize, a: *const f32, lda: usize, b: *const f32, c: *mut f32, ldc: usize, cols: usize) {
        let (m0, m1) = masks(cols);
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        for r in 0..R {
            acc0[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
            acc1[r] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
        }
        kernel_f32::<R>(k, a, lda, b, &mut acc0, &mut acc1);
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc0[r]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc1[r]);
        }
    }

    #[inline(always)]
    unsafe fn kernel_f32<const R: usize>(k: usize, a: *const f32, lda: usize, b: *const f32, acc0: &mut [__m512; R], acc1: &mut [__m512; R]) {
        for kk in 0..k {
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for r in 0..R {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile_bf16<const R: usize>(pairs: usize, a: *const u32, lda: usize, b: *const u16, c: *mut f32, ldc: usize, cols: usize) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        kernel_bf16::<R>(pairs, a, lda, b, &mut acc0, &mut acc1);
        let (m0, m1) = masks(cols);
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc0[r]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc1[r]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile_bf16_acc<const R: usize>(pairs: usize, a: *const u32, lda: usize, b: *const u16, c: *mut f32, ldc: usize, cols: usize) {
        let (m0, m1) = masks(cols);
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        for r in 0..R {
            acc0[r] = _mm512_maskz_loadu_ps(m0, c.add(r * ldc));
            acc1[r] = _mm512_maskz_loadu_ps(m1, c.add(r * ldc + 16));
        }
        kernel_bf16::<R>(pairs, a, lda, b, &mut acc0, &mut acc1);
        for r in 0..R {
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, acc0[r]);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, acc1[r]);
        }
    }

    #[inline(always)]
    unsafe fn kernel_bf16<const R: usize>(pairs: usize, a: *const u32, lda: usize, b: *const u16, acc0: &mut [__m512; R], acc1: &mut [__m512; R]) {
        for q in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR * 2) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(q * NR * 2 + 32) as *const _));
            for r in 0..R {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + q) as i32));
                acc0[r] = _mm512_dpbf16_ps(acc0[r], av, b0);
                acc1[r] = _mm512_dpbf16_ps(acc1[r], av, b1);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::masks;
#[cfg(target_arch = "x86_64")]
use x86::{tile_bf16, tile_bf16_acc, tile_f32, tile_f32_acc};

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    //! Never called: packing is only chosen when `Isa` reports AVX-512.
    pub unsafe fn tile_f32<const R: usize>(_: usize, _: *const f32, _: usize, _: *const f32, _: *mut f32, _: usize, _: usize) {
        unreachable!("AVX-512 kernels on a non-x86 target")
    }
    pub unsafe fn tile_f32_acc<const R: usize>(_: usize, _: *const f32, _: usize, _: *const f32, _: *mut f32, _: usize, _: usize) {
        unreachable!("AVX-512 kernels on a non-x86 target")
    }
    pub unsafe fn tile_bf16<const R: usize>(_: usize, _: *const u32, _: usize, _: *const u16, _: *mut f32, _: usize, _: usize) {
        unreachable!("AVX-512 kernels on a non-x86 target")
    }
    pub unsafe fn tile_bf16_acc<const R: usize>(_: usize, _: *const u32, _: usize, _: *const u16, _: *mut f32, _: usize, _: usize) {
        unreachable!("AVX-512 kernels on a non-x86 target")
    }
}
#[cfg(not(target_arch = "x86_64"))]
use portable::{tile_bf16, tile_bf16_acc, tile_f32, tile_f32_acc};

/// Whether the packed f32 path can run here.
pub fn packed_f32_available() -> bool {
    Isa::get().avx512
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::testing::rand_vec;
    use crate::tolerance::{assert_close, REDUCTION_F32, Tolerance};

    #[test]
    fn f32_panels_match_the_reference() {
        if !Isa::get().avx512 {
            eprintln!("no AVX-512 here: the packed kernels are not used");
            return;
        }
        for &(n, k, m) in &[(1, 1, 1), (1, 48, 144), (13, 48, 72), (37, 72, 48), (12, 5, 31), (25, 768, 97), (130, 768, 2304)] {
            let x = rand_vec(n * k, n as u32 + 1, 1.0);
            let w = rand_vec(m * k, m as u32 + 7, 1.0 / (k as f32).sqrt());
            let packed = Packed::f32(&w, m, k);
            let mut y = vec![f32::NAN; n * (m + 3)];
            matmul(&x, n, &packed, &mut y, m + 3);
            let got: Vec<f32> = y.chunks(m + 3).flat_map(|r| r[..m].to_vec()).collect();
            assert_close(&format!("packed f32 {n}x{k}x{m}"), &got, &reference::linear(&x, &w, None, k), REDUCTION_F32);
            assert!(y.chunks(m + 3).all(|r| r[m..].iter().all(|v| v.is_nan())), "wrote past the row");
            let mut row = vec![0f32; k];
            packed.row(m - 1, &mut row);
            assert_eq!(row, w[(m - 1) * k..]);
        }
    }

    #[test]
    fn bf16_panels_match_the_reference_on_rounded_inputs() {
        if !Isa::get().avx512_bf16 {
            eprintln!("no AVX512-BF16 here: the bf16 kernels are not used");
            return;
        }
        let round = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| half::bf16::from_f32(x).to_f32()).collect() };
        for &(n, k, m) in &[(1, 1, 1), (13, 47, 72), (12, 768, 33), (131, 1152, 768)] {
            let x = round(rand_vec(n * k, n as u32 + 1, 1.0));
            let w = round(rand_vec(m * k, m as u32 + 7, 1.0 / (k as f32).sqrt()));
            let packed = Packed::bf16(&w, m, k);
            let mut y = vec![0f32; n * m];
            matmul(&x, n, &packed, &mut y, m);
            // Inputs exactly representable: only f32 accumulation order differs.
            assert_close(&format!("packed bf16 {n}x{k}x{m}"), &y, &reference::linear(&x, &w, None, k), Tolerance::new(1e-4, 1e-4));
            let mut row = vec![0f32; k];
            packed.row(0, &mut row);
            assert_eq!(row, w[..k]);
        }
    }
}
