//! int8 matrix products y = x·Wᵀ (+ b), the CPU backend's `--dtype int8`: W quantised once at
//! load, per output channel (symmetric, scale = max|W[j]| / 127), x quantised per row (token) as
//! each product starts, the dot products summed exactly in i32, and the f32 rescale and the bias
//! applied as the tile is stored: y[i, j] = (Σ qx·qw) · (sx[i] · sw[j]) + b[j]. The definition is
//! `reference::linear_int8`.
//!
//! Weights are packed like the f32 panels (`gemm`): panels of `NR` = 32 output columns, here in
//! quads of 4 consecutive k per lane, the layout `vpdpbusd` reads (4 u8 × 4 i8 products summed
//! into each i32 lane). `vpdpbusd` takes one operand unsigned, so activations enter as
//! u = q + 128 ∈ [1, 255] and each column's 128 · Σ qw is subtracted back out: the sum is the same
//! integer. Three paths give the same numbers bit for bit: AVX512-VNNI (12 rows × 32 columns per
//! tile, 24 accumulators in registers), AVX-VNNI (256-bit, 6 rows × 16 columns at a time) and a
//! portable loop.

use rayon::prelude::*;

use super::gemm::{dispatch_rows, run_tiles, MR, NR};
use super::isa::Isa;

/// Bytes of one quad step of a panel: NR columns × 4 consecutive k.
const QUAD: usize = NR * 4;
/// Rows per tile on the 256-bit path (12 accumulators of 16 ymm registers).
const MR_256: usize = 6;

/// A weight matrix W [m, k] quantised per output channel, packed for the int8 products.
#[derive(Debug)]
pub struct Int8Weights {
    /// Panel p, quad q, lane j, byte t = qW[p·NR + j, 4q + t] (zero past m and past k).
    data: Vec<i8>,
    /// sw[j] = max|W[j]| / 127, zero past m (padded to whole panels).
    scale: Vec<f32>,
    /// 128 · Σ_p qW[j, p]: what the u8 offset of the activations adds to column j (padded).
    offset: Vec<i32>,
    m: usize,
    k: usize,
}

/// max |v| over a row, in 16 lanes so that it vectorises.
fn abs_max(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &l| m.max(l))
}

/// Round to the nearest integer, ties to even, for |v| < 2²²: adding and removing 1.5·2²³ leaves
/// exactly the rounded value (f32 addition rounds to nearest even), in two vectorisable adds.
#[inline(always)]
fn round_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC) - MAGIC
}

/// Quantise one row: q = round-half-even(v · 127 / max|row|) ∈ [−127, 127], written through
/// `put`; returns the scale max|row| / 127 (0 for a row of zeros, or one that is not finite).
#[inline(always)]
fn quantize_row(row: &[f32], mut put: impl FnMut(usize, i32)) -> f32 {
    let amax = abs_max(row);
    if amax == 0.0 || !amax.is_finite() {
        (0..row.len()).for_each(|p| put(p, 0));
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (p, v) in row.iter().enumerate() {
        put(p, (round_even(v * inv) as i32).clamp(-127, 127));
    }
    amax / 127.0
}

/// One activation row to u = q + 128 (`quantize_row`); returns its scale.
fn quantize_row_u8(row: &[f32], out: &mut [u8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 {
        // SAFETY: AVX-512 F/BW are present; `out` holds at least `row.len()` bytes.
        return unsafe { x86::quantize_row_u8(row, out) };
    }
    quantize_row(row, |p, q| out[p] = (q + 128) as u8)
}

/// x [n, k] → (u [n, kp] = q + 128, padded past k with 128, i.e. q = 0; row scales [n]).
fn quantize_activations(x: &[f32], n: usize, k: usize, kp: usize) -> (Vec<u8>, Vec<f32>) {
    let mut u = vec![128u8; n * kp];
    let mut scales = vec![0f32; n];
    const ROWS: usize = 32;
    u.par_chunks_mut(kp * ROWS).zip(scales.par_chunks_mut(ROWS)).zip(x[..n * k].par_chunks(k * ROWS)).for_each(|((ub, sb), xb)| {
        for ((ur, s), xr) in ub.chunks_mut(kp).zip(sb.iter_mut()).zip(xb.chunks(k)) {
            *s = quantize_row_u8(xr, ur);
        }
    });
    (u, scales)
}

impl Int8Weights {
    /// Quantise W [m, k] per output channel and pack it.
    pub fn pack(w: &[f32], m: usize, k: usize) -> Int8Weights {
        assert_eq!(w.len(), m * k);
        let panels = m.div_ceil(NR);
        let quads = k.div_ceil(4);
        let mut data = vec![0i8; panels * quads * QUAD];
        let mut scale = vec![0f32; panels * NR];
        let mut offset = vec![0i32; panels * NR];
        data.par_chunks_mut((quads * QUAD).max(1)).zip(scale.par_chunks_mut(NR)).zip(offset.par_chunks_mut(NR)).enumerate().for_each(
            |(p, ((panel, sc), off))| {
                for j in 0..NR.min(m - p * NR) {
                    let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                    let mut sum = 0i32;
                    sc[j] = quantize_row(row, |kk, q| {
                        panel[(kk / 4) * QUAD + j * 4 + kk % 4] = q as i8;
                        sum += q;
                    });
                    off[j] = 128 * sum;
                }
            },
        );
        Int8Weights { data, scale, offset, m, k }
    }

    pub fn rows(&self) -> usize {
        self.m
    }
    pub fn cols(&self) -> usize {
        self.k
    }
    /// Row j of W as its int8 values times its scale.
    pub fn row(&self, j: usize, out: &mut [f32]) {
        let (p, lane) = (j / NR, j % NR);
        let quads = self.k.div_ceil(4);
        let panel = &self.data[p * quads * QUAD..(p + 1) * quads * QUAD];
        for (kk, o) in out.iter_mut().enumerate().take(self.k) {
            *o = panel[(kk / 4) * QUAD + lane * 4 + kk % 4] as f32 * self.scale[j];
        }
    }
}

/// Which int8 kernel runs here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Avx512Vnni,
    AvxVnni,
    Portable,
}

impl Path {
    pub fn get() -> Path {
        let isa = Isa::get();
        if isa.avx512_vnni {
            Path::Avx512Vnni
        } else if isa.avx_vnni {
            Path::AvxVnni
        } else {
            Path::Portable
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Path::Avx512Vnni => "AVX512-VNNI",
            Path::AvxVnni => "AVX-VNNI",
            Path::Portable => "portable",
        }
    }
}

/// What a tile needs to finish its output: the panel's column scales and offsets, the bias
/// (null when there is none), the tile's row scales.
#[derive(Clone, Copy)]
struct Epilogue {
    scale: *const f32,
    offset: *const i32,
    bias: *const f32,
    xs: *const f32,
}

/// y[r, j] = (acc[j] − offset[j]) · (sx[r] · sw[j]) (+ b[j]) for one row of `cols` columns.
///
/// # Safety
/// The epilogue's pointers cover `cols` columns and row `r`.
#[inline(always)]
unsafe fn finish_row(acc: &[i32], cols: usize, e: Epilogue, r: usize, out: *mut f32) {
    let sx = *e.xs.add(r);
    for (j, &a) in acc.iter().enumerate().take(cols) {
        let mut v = (a - *e.offset.add(j)) as f32 * (sx * *e.scale.add(j));
        if !e.bias.is_null() {
            v += *e.bias.add(j);
        }
        *out.add(j) = v;
    }
}

/// y [n, m] = x [n, k] · Wᵀ (+ b [m]), x and y row-major (y's row stride `ldy` ≥ m).
pub fn matmul(x: &[f32], n: usize, w: &Int8Weights, bias: Option<&[f32]>, y: &mut [f32], ldy: usize) {
    matmul_on(Path::get(), x, n, w, bias, y, ldy)
}

/// `matmul` into memory that may be uninitialised: every one of its n × m values is written.
///
/// # Safety
/// `y` must be valid for writes of n rows of stride `ldy` ≥ m, m values each.
pub unsafe fn matmul_to(x: &[f32], n: usize, w: &Int8Weights, bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
    matmul_path(Path::get(), x, n, w, bias, y, ldy)
}

/// `matmul` on a given path (tests compare the paths).
pub fn matmul_on(path: Path, x: &[f32], n: usize, w: &Int8Weights, bias: Option<&[f32]>, y: &mut [f32], ldy: usize) {
    assert!(y.len() >= n.saturating_sub(1) * ldy + w.m.min(ldy) && ldy >= w.m);
    // SAFETY: y covers n rows of stride ldy, m values each (checked above).
    unsafe { matmul_path(path, x, n, w, bias, y.as_mut_ptr(), ldy) }
}

/// # Safety
/// As `matmul_to`.
unsafe fn matmul_path(path: Path, x: &[f32], n: usize, w: &Int8Weights, bias: Option<&[f32]>, y: *mut f32, ldy: usize) {
    let (m, k) = (w.m, w.k);
    assert!(x.len() >= n * k && ldy >= m && bias.is_none_or(|b| b.len() >= m));
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        for r in 0..n {
            match bias {
                Some(b) => std::ptr::copy_nonoverlapping(b.as_ptr(), y.add(r * ldy), m),
                None => std::ptr::write_bytes(y.add(r * ldy), 0, m),
            }
        }
        return;
    }
    let quads = k.div_ceil(4);
    let kp = quads * 4;
    let (u, xs) = quantize_activations(x, n, k, kp);
    let (u, xs, data) = (u.as_ptr() as usize, xs.as_ptr() as usize, w.data.as_ptr() as usize);
    run_tiles(n, m, kp, y, ldy, |r0, rows, p, cols, c, ldc| {
        let e = Epilogue {
            scale: w.scale.as_ptr().add(p * NR),
            offset: w.offset.as_ptr().add(p * NR),
            bias: bias.map_or(std::ptr::null(), |b| b.as_ptr().add(p * NR)),
            xs: (xs as *const f32).add(r0),
        };
        let a = (u as *const u8).add(r0 * kp);
        let b = (data as *const i8).add(p * quads * QUAD);
        match path {
            Path::Avx512Vnni => tile_512_dispatch(rows, quads, a, kp, b, e, c, ldc, cols),
            Path::AvxVnni => {
                let mut r = 0;
                while r < rows {
                    let sub = MR_256.min(rows - r);
                    let e = Epilogue { xs: e.xs.add(r), ..e };
                    tile_256_dispatch(sub, quads, a.add(r * kp), kp, b, e, c.add(r * ldc), ldc, cols);
                    r += sub;
                }
            }
            Path::Portable => tile_portable(rows, quads, a, kp, b, e, c, ldc, cols),
        }
    });
}

/// The portable tile: the same integer sums and the same f32 epilogue as the VNNI kernels.
///
/// # Safety
/// `a` covers `rows` rows of `lda` bytes (≥ 4·quads), `b` a panel of `quads` quads, `c` `rows`
/// rows of `cols` floats at stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable(rows: usize, quads: usize, a: *const u8, lda: usize, b: *const i8, e: Epilogue, c: *mut f32, ldc: usize, cols: usize) {
    let panel = std::slice::from_raw_parts(b, quads * QUAD);
    for r in 0..rows {
        let row = std::slice::from_raw_parts(a.add(r * lda), quads * 4);
        let mut acc = [0i32; NR];
        for (av, bq) in row.chunks_exact(4).zip(panel.chunks_exact(QUAD)) {
            let (a0, a1, a2, a3) = (av[0] as i32, av[1] as i32, av[2] as i32, av[3] as i32);
            for (s, bj) in acc.iter_mut().zip(bq.chunks_exact(4)) {
                *s += a0 * bj[0] as i32 + a1 * bj[1] as i32 + a2 * bj[2] as i32 + a3 * bj[3] as i32;
            }
        }
        finish_row(&acc, cols, e, r, c.add(r * ldc));
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_512_dispatch(rows: usize, quads: usize, a: *const u8, lda: usize, b: *const i8, e: Epilogue, c: *mut f32, ldc: usize, cols: usize) {
    debug_assert!(rows <= MR);
    dispatch_rows!(rows, tile_512(quads, a, lda, b, e, c, ldc, cols))
}

#[allow(clippy::too_many_arguments)]
unsafe fn tile_256_dispatch(rows: usize, quads: usize, a: *const u8, lda: usize, b: *const i8, e: Epilogue, c: *mut f32, ldc: usize, cols: usize) {
    match rows {
        1 => tile_256::<1>(quads, a, lda, b, e, c, ldc, cols),
        2 => tile_256::<2>(quads, a, lda, b, e, c, ldc, cols),
        3 => tile_256::<3>(quads, a, lda, b, e, c, ldc, cols),
        4 => tile_256::<4>(quads, a, lda, b, e, c, ldc, cols),
        5 => tile_256::<5>(quads, a, lda, b, e, c, ldc, cols),
        6 => tile_256::<6>(quads, a, lda, b, e, c, ldc, cols),
        _ => unreachable!("a 256-bit tile has 1 to {MR_256} rows"),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::gemm::masks;
    use super::{finish_row, Epilogue, QUAD};

    /// `quantize_row` to u = q + 128 in 16 lanes: the same max (NaN ignored, as `f32::max`
    /// does), the same product v · (127 / max), rounded by `vcvtps2dq` (to nearest even, as
    /// `round_even`), NaN to 0 and clamped to ±127 as the portable code does.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn quantize_row_u8(row: &[f32], out: &mut [u8]) -> f32 {
        let k = row.len();
        assert!(out.len() >= k);
        let (x, o) = (row.as_ptr(), out.as_mut_ptr());
        let (full, rest) = (k / 16 * 16, k % 16);
        let tail: __mmask16 = ((1u32 << rest) - 1) as __mmask16;
        let mut vmax = _mm512_setzero_ps();
        // max(v, m) returns m where v is NaN: NaN never enters the maximum.
        for i in (0..full).step_by(16) {
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x.add(i))), vmax);
        }
        if rest > 0 {
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x.add(full))), vmax);
        }
        let amax = _mm512_reduce_max_ps(vmax);
        if amax == 0.0 || !amax.is_finite() {
            std::ptr::write_bytes(o, 128, k);
            return 0.0;
        }
        let inv = _mm512_set1_ps(127.0 / amax);
        let (lo, hi, off) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127), _mm512_set1_epi32(128));
        let quantize = |v: __m512| -> __m128i {
            let v = _mm512_mul_ps(v, inv);
            let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v);
            let q = _mm512_maskz_mov_epi32(ordered, _mm512_cvtps_epi32(v));
            _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), off))
        };
        for i in (0..full).step_by(16) {
            _mm_storeu_si128(o.add(i) as *mut __m128i, quantize(_mm512_loadu_ps(x.add(i))));
        }
        if rest > 0 {
            let mut bytes = [0u8; 16];
            _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, quantize(_mm512_maskz_loadu_ps(tail, x.add(full))));
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), o.add(full), rest);
        }
        amax / 127.0
    }

    /// C [R, cols] = A u8 [R, 4·quads] · B int8 panel, rescaled (`finish_row`, in 16 lanes).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_512<const R: usize>(quads: usize, a: *const u8, lda: usize, b: *const i8, e: Epilogue, c: *mut f32, ldc: usize, cols: usize) {
        let mut acc0 = [_mm512_setzero_si512(); R];
        let mut acc1 = [_mm512_setzero_si512(); R];
        for q in 0..quads {
            let b0 = _mm512_loadu_si512(b.add(q * QUAD) as *const _);
            let b1 = _mm512_loadu_si512(b.add(q * QUAD + 64) as *const _);
            for r in 0..R {
                let av = _mm512_set1_epi32(std::ptr::read_unaligned(a.add(r * lda + q * 4) as *const i32));
                acc0[r] = _mm512_dpbusd_epi32(acc0[r], av, b0);
                acc1[r] = _mm512_dpbusd_epi32(acc1[r], av, b1);
            }
        }
        let (m0, m1) = masks(cols);
        let s0 = _mm512_maskz_loadu_ps(m0, e.scale);
        let s1 = _mm512_maskz_loadu_ps(m1, e.scale.add(16));
        let o0 = _mm512_maskz_loadu_epi32(m0, e.offset);
        let o1 = _mm512_maskz_loadu_epi32(m1, e.offset.add(16));
        let bias = (!e.bias.is_null()).then(|| (_mm512_maskz_loadu_ps(m0, e.bias), _mm512_maskz_loadu_ps(m1, e.bias.add(16))));
        for r in 0..R {
            let sx = _mm512_set1_ps(*e.xs.add(r));
            let mut v0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[r], o0)), _mm512_mul_ps(sx, s0));
            let mut v1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[r], o1)), _mm512_mul_ps(sx, s1));
            if let Some((b0, b1)) = bias {
                v0 = _mm512_add_ps(v0, b0);
                v1 = _mm512_add_ps(v1, b1);
            }
            _mm512_mask_storeu_ps(c.add(r * ldc), m0, v0);
            _mm512_mask_storeu_ps(c.add(r * ldc + 16), m1, v1);
        }
    }

    /// As `tile_512` with 256-bit VEX `vpdpbusd` (AVX-VNNI): each half of the panel (16
    /// columns) in turn, R ≤ 6 rows.
    #[target_feature(enable = "avx2,avxvnni")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_256<const R: usize>(quads: usize, a: *const u8, lda: usize, b: *const i8, e: Epilogue, c: *mut f32, ldc: usize, cols: usize) {
        for half in 0..2 {
            let hc = cols.saturating_sub(half * 16).min(16);
            if hc == 0 {
                break;
            }
            let mut acc0 = [_mm256_setzero_si256(); R];
            let mut acc1 = [_mm256_setzero_si256(); R];
            for q in 0..quads {
                let b0 = _mm256_loadu_si256(b.add(q * QUAD + half * 64) as *const _);
                let b1 = _mm256_loadu_si256(b.add(q * QUAD + half * 64 + 32) as *const _);
                for r in 0..R {
                    let av = _mm256_set1_epi32(std::ptr::read_unaligned(a.add(r * lda + q * 4) as *const i32));
                    acc0[r] = _mm256_dpbusd_avx_epi32(acc0[r], av, b0);
                    acc1[r] = _mm256_dpbusd_avx_epi32(acc1[r], av, b1);
                }
            }
            let e = Epilogue {
                scale: e.scale.add(half * 16),
                offset: e.offset.add(half * 16),
                bias: if e.bias.is_null() { e.bias } else { e.bias.add(half * 16) },
                xs: e.xs,
            };
            for r in 0..R {
                let mut acc = [0i32; 16];
                _mm256_storeu_si256(acc.as_mut_ptr() as *mut _, acc0[r]);
                _mm256_storeu_si256(acc.as_mut_ptr().add(8) as *mut _, acc1[r]);
                finish_row(&acc, hc, e, r, c.add(r * ldc + half * 16));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
use x86::{tile_256, tile_512};

#[cfg(not(target_arch = "x86_64"))]
mod other {
    //! Never called: `Path::get` picks the portable path where x86's VNNI is missing.
    use super::Epilogue;
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_512<const R: usize>(_: usize, _: *const u8, _: usize, _: *const i8, _: Epilogue, _: *mut f32, _: usize, _: usize) {
        unreachable!("VNNI kernels on a non-x86 target")
    }
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile_256<const R: usize>(_: usize, _: *const u8, _: usize, _: *const i8, _: Epilogue, _: *mut f32, _: usize, _: usize) {
        unreachable!("VNNI kernels on a non-x86 target")
    }
}
#[cfg(not(target_arch = "x86_64"))]
use other::{tile_256, tile_512};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::testing::rand_vec;
    use crate::tolerance::{assert_close, KERNEL_F32};

    /// Every path this machine has, the portable one always.
    fn paths() -> Vec<Path> {
        let isa = Isa::get();
        let mut p = vec![Path::Portable];
        if isa.avx_vnni {
            p.push(Path::AvxVnni);
        }
        if isa.avx512_vnni {
            p.push(Path::Avx512Vnni);
        }
        p
    }

    /// Awkward shapes: k not a multiple of 4, m not of 32, rows not of 12 or 6, one of each,
    /// and the base model's products.
    const SHAPES: [(usize, usize, usize); 9] =
        [(1, 1, 1), (1, 3, 5), (5, 7, 33), (13, 48, 72), (12, 5, 31), (7, 770, 65), (25, 768, 97), (37, 1152, 768), (130, 768, 2304)];

    #[test]
    fn int8_matches_the_reference_on_every_path() {
        eprintln!("paths here: {:?}", paths());
        for &(n, k, m) in &SHAPES {
            // Rows of very different magnitudes, and an all-zero row: each row has its own scale.
            let mut x = rand_vec(n * k, n as u32 + 3, 1.0);
            for (r, row) in x.chunks_mut(k).enumerate() {
                let s = [1.0, 40.0, 0.01, 0.0][r % 4];
                row.iter_mut().for_each(|v| *v *= s);
            }
            let w = rand_vec(m * k, m as u32 + 9, 1.0 / (k as f32).sqrt());
            let bias = rand_vec(m, 5, 1.0);
            let packed = Int8Weights::pack(&w, m, k);
            for with_bias in [false, true] {
                let b = with_bias.then_some(&bias[..]);
                let expect = reference::linear_int8(&x, &w, b, k);
                let mut first: Option<Vec<f32>> = None;
                for path in paths() {
                    let mut y = vec![f32::NAN; n * (m + 3)];
                    matmul_on(path, &x, n, &packed, b, &mut y, m + 3);
                    assert!(y.chunks(m + 3).all(|r| r[m..].iter().all(|v| v.is_nan())), "{path:?} wrote past the row");
                    let got: Vec<f32> = y.chunks(m + 3).flat_map(|r| r[..m].to_vec()).collect();
                    assert_close(&format!("int8 {path:?} {n}x{k}x{m} bias {with_bias}"), &got, &expect, KERNEL_F32);
                    // The same integers and the same f32 epilogue: the paths agree exactly.
                    match &first {
                        None => first = Some(got),
                        Some(f) => {
                            assert!(f.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{path:?} differs from the portable path at {n}x{k}x{m}")
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn int8_quantisation_is_the_references() {
        let (m, k) = (70, 37);
        let mut w = rand_vec(m * k, 4, 2.0);
        w[5 * k..6 * k].fill(0.0);
        let packed = Int8Weights::pack(&w, m, k);
        let (q, s) = reference::quantize_rows_int8(&w, k);
        let mut row = vec![0f32; k];
        for j in 0..m {
            packed.row(j, &mut row);
            assert_eq!(packed.scale[j], s[j], "scale of row {j}");
            for p in 0..k {
                assert_eq!(row[p], q[j * k + p] as f32 * s[j], "W[{j}, {p}]");
            }
            assert_eq!(packed.offset[j], 128 * q[j * k..(j + 1) * k].iter().map(|&v| v as i32).sum::<i32>());
        }
        // Dequantised weights are within half a step of the originals.
        for (j, r) in w.chunks(k).enumerate() {
            packed.row(j, &mut row);
            assert!(r.iter().zip(&row).all(|(a, b)| (a - b).abs() <= s[j] * 0.5 + 1e-7), "row {j}");
        }
        // Ties go to even, like the reference.
        let (q, _) = reference::quantize_rows_int8(&[127.0, 0.5, 1.5, -2.5, 63.5], 5);
        assert_eq!(q, vec![127, 0, 2, -2, 64]);
        let mut got = vec![0i32; 5];
        quantize_row(&[127.0, 0.5, 1.5, -2.5, 63.5], |p, v| got[p] = v);
        assert_eq!(got, vec![127, 0, 2, -2, 64]);
    }

    #[test]
    fn int8_activation_quantisers_agree() {
        // Ties, values at the maximum, NaN, a row shorter than one vector, an awkward tail.
        let mut row = rand_vec(37, 8, 3.0);
        row[0] = 127.0;
        row[1] = 0.5;
        row[2] = -2.5;
        row[3] = f32::NAN;
        for len in [1, 5, 16, 37] {
            let r = &row[..len];
            let mut portable = vec![0u8; len];
            let s1 = quantize_row(r, |p, q| portable[p] = (q + 128) as u8);
            let mut dispatched = vec![0u8; len];
            let s2 = quantize_row_u8(r, &mut dispatched);
            assert_eq!((s1.to_bits(), &portable), (s2.to_bits(), &dispatched), "length {len}");
        }
    }

    #[test]
    fn int8_edges_k_zero_and_non_finite_rows() {
        let packed = Int8Weights::pack(&[], 3, 0);
        let mut y = vec![f32::NAN; 6];
        matmul(&[], 2, &packed, Some(&[1.0, 2.0, 3.0]), &mut y, 3);
        assert_eq!(y, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        // A row holding inf quantises to zeros (scale 0) instead of reading garbage.
        let w = rand_vec(4 * 8, 1, 1.0);
        let packed = Int8Weights::pack(&w, 4, 8);
        let mut x = rand_vec(2 * 8, 2, 1.0);
        x[3] = f32::INFINITY;
        let mut y = vec![f32::NAN; 8];
        for path in paths() {
            matmul_on(path, &x, 2, &packed, None, &mut y, 4);
            assert_eq!(&y[..4], &[0.0; 4], "{path:?}");
            assert!(y[4..].iter().all(|v| v.is_finite() && *v != 0.0));
        }
    }
}
