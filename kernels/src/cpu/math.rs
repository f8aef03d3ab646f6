//! Vectorised element-wise maths for the CPU backend: exp, exact-GELU (through erf) and GeGLU,
//! 16 lanes at a time with AVX-512 intrinsics, and elsewhere the same polynomials in plain,
//! branch-free Rust over chunks of 16 that the compiler vectorises (WebAssembly SIMD128 in the
//! browser, SSE/AVX2 natively) instead of one library call per element. exp is Cephes'
//! polynomial (≈1 ulp); erf is Abramowitz–Stegun 7.1.26 (absolute error ≤ 1.5e-7), the same as
//! cubecl's GPU polyfill.

#[cfg(target_arch = "x86_64")]
use super::isa::Isa;

/// Scalar exact GELU.
pub fn gelu_scalar(z: f32) -> f32 {
    0.5 * z * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2))
}

/// d GELU(z)/dz = Φ(z) + z·φ(z).
pub fn gelu_grad(z: f32) -> f32 {
    let cdf = 0.5 * (1.0 + libm::erff(z * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = (-0.5 * z * z).exp() * 0.398_942_3; // 1/√(2π)
    cdf + z * pdf
}

/// y = GELU(x).
pub fn gelu(x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 {
        return unsafe { x86::gelu(x, y) };
    }
    portable::gelu(x, y)
}

/// One row of GeGLU: y[j] = GELU(u[j]) · u[I + j], u [2I], y [I].
pub fn geglu(u: &[f32], y: &mut [f32]) {
    let i = y.len();
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 {
        return unsafe { x86::geglu(&u[..i], &u[i..2 * i], y) };
    }
    portable::geglu(&u[..i], &u[i..2 * i], y)
}

/// x = exp(x − shift) in place; returns the sum of the results.
pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 {
        return unsafe { x86::exp_shifted_sum(x, shift) };
    }
    portable::exp_shifted_sum(x, shift)
}

/// f32 → bf16 bits, round to nearest even (AVX512-BF16 when available).
pub fn to_bf16(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512_bf16 {
        return unsafe { x86::to_bf16(src, dst) };
    }
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = half::bf16::from_f32(v).to_bits();
    }
}

/// Largest element (−∞ for an empty slice).
pub fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if Isa::get().avx512 {
        return unsafe { x86::max(x) };
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v);
        }
    }
    chunks.remainder().iter().chain(lanes.iter()).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Sum with 16 independent lanes (vectorisable, and more accurate than one running sum).
pub fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    chunks.remainder().iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

/// Σ (x − mean)².
pub fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += (v - mean) * (v - mean);
        }
    }
    chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() + lanes.iter().sum::<f32>()
}

/// The polynomials of the `x86` module in plain Rust, for every other machine and the browser.
mod portable {
    /// exp(x) by the steps of the AVX-512 `exp16` below, one lane, branch-free (it inlines into
    /// loops that vectorise). Separate multiplies and adds, not `mul_add`: without hardware FMA (wasm,
    /// x86-64's baseline) that is a library call; the results differ from exp16's by rounding only.
    #[inline(always)]
    fn exp_lane(x: f32) -> f32 {
        const HI: f32 = 88.722_83;
        const LO: f32 = -87.336_55;
        let underflow = x < LO;
        let x = x.clamp(LO, HI);
        let n = (x * std::f32::consts::LOG2_E).round_ties_even();
        let r = x - n * 0.693_359_4;
        let r = r - n * -2.121_944_4e-4;
        let mut p = 1.987_569_1e-4f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_351_9e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 5.000_000_1e-1;
        p = p * (r * r) + (r + 1.0);
        // × 2ⁿ as two normal powers of two (n ∈ [−126, 128]; each half ∈ [−63, 64]), exact until
        // the last product, which rounds once as a single scaling would.
        let k = n as i32;
        let (a, b) = (k >> 1, k - (k >> 1));
        let pow2 = |m: i32| f32::from_bits(((m + 127) << 23) as u32);
        // exp(x) → 0 below the smallest normal result (and −∞ → 0 exactly).
        if underflow {
            0.0
        } else {
            p * pow2(a) * pow2(b)
        }
    }

    /// GELU(z) = z/2 · (1 + erf(z/√2)) by the steps of the AVX-512 `gelu16` below, one lane.
    #[inline(always)]
    fn gelu_lane(z: f32) -> f32 {
        let a = z * std::f32::consts::FRAC_1_SQRT_2;
        let abs = a.abs();
        let t = 1.0 / (abs * 0.327_591_1 + 1.0);
        let mut poly = 1.061_405_4f32;
        poly = poly * t + -1.453_152;
        poly = poly * t + 1.421_413_7;
        poly = poly * t + -0.284_496_74;
        poly = poly * t + 0.254_829_6;
        poly *= t;
        let erf_abs = 1.0 - poly * exp_lane(-(abs * abs));
        let erf = if a < 0.0 { -erf_abs } else { erf_abs };
        z * 0.5 * (erf + 1.0)
    }

    /// y = GELU(x).
    pub fn gelu(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (mut xs, mut ys) = (x[..n].chunks_exact(16), y[..n].chunks_exact_mut(16));
        for (xc, yc) in (&mut xs).zip(&mut ys) {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = gelu_lane(v);
            }
        }
        ys.into_remainder().iter_mut().zip(xs.remainder()).for_each(|(o, &v)| *o = gelu_lane(v));
    }

    /// y[j] = GELU(a[j]) · g[j].
    pub fn geglu(a: &[f32], g: &[f32], y: &mut [f32]) {
        let (mut ac, mut gc, mut yc) = (a.chunks_exact(16), g.chunks_exact(16), y.chunks_exact_mut(16));
        for ((a, g), y) in (&mut ac).zip(&mut gc).zip(&mut yc) {
            for j in 0..16 {
                y[j] = gelu_lane(a[j]) * g[j];
            }
        }
        for ((o, &a), &g) in yc.into_remainder().iter_mut().zip(ac.remainder()).zip(gc.remainder()) {
            *o = gelu_lane(a) * g;
        }
    }

    /// x = exp(x − shift) in place; returns the sum (16 lanes, then the tail).
    pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let mut lanes = [0f32; 16];
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c.iter_mut()) {
                *v = exp_lane(*v - shift);
                *l += *v;
            }
        }
        let mut rest = 0f32;
        for v in chunks.into_remainder() {
            *v = exp_lane(*v - shift);
            rest += *v;
        }
        rest + lanes.iter().sum::<f32>()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn exp16(x: __m512) -> __m512 {
        let hi = _mm512_set1_ps(88.722_83);
        let lo = _mm512_set1_ps(-87.336_55);
        let underflow = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, lo);
        let x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.398_199_9e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_351_9e-3));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.000_000_1e-1));
        let r2 = _mm512_mul_ps(r, r);
        p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        // exp(x) → 0 below the smallest normal result (and −∞ → 0 exactly).
        _mm512_maskz_mov_ps(!underflow, _mm512_scalef_ps(p, n))
    }

    #[inline(always)]
    unsafe fn gelu16(z: __m512) -> __m512 {
        // erf(a), a = z/√2, Abramowitz–Stegun 7.1.26.
        let a = _mm512_mul_ps(z, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let abs = _mm512_abs_ps(a);
        let t = _mm512_div_ps(_mm512_set1_ps(1.0), _mm512_fmadd_ps(abs, _mm512_set1_ps(0.327_591_1), _mm512_set1_ps(1.0)));
        let mut poly = _mm512_set1_ps(1.061_405_4);
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453_152));
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421_413_7));
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284_496_74));
        poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254_829_6));
        poly = _mm512_mul_ps(poly, t);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(abs, abs)));
        let erf_abs = _mm512_fnmadd_ps(poly, e, _mm512_set1_ps(1.0));
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_setzero_ps());
        let erf = _mm512_mask_sub_ps(erf_abs, neg, _mm512_setzero_ps(), erf_abs);
        _mm512_mul_ps(_mm512_mul_ps(z, _mm512_set1_ps(0.5)), _mm512_add_ps(erf, _mm512_set1_ps(1.0)))
    }

    #[inline(always)]
    fn tail_mask(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as u16 }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, gelu16(v));
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn geglu(a: &[f32], g: &[f32], y: &mut [f32]) {
        let n = y.len();
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let va = _mm512_maskz_loadu_ps(m, a.as_ptr().add(i));
            let vg = _mm512_maskz_loadu_ps(m, g.as_ptr().add(i));
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), m, _mm512_mul_ps(gelu16(va), vg));
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        let n = x.len();
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            acc = _mm512_mask_max_ps(acc, m, acc, _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)));
            i += 16;
        }
        _mm512_reduce_max_ps(acc)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, src.as_ptr().add(i));
            let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(i) as *mut i16, m, b);
            i += 16;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
        let n = x.len();
        let s = _mm512_set1_ps(shift);
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i < n {
            let m = tail_mask(n - i);
            let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(i));
            let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(v, s)));
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), m, e);
            acc = _mm512_add_ps(acc, e);
            i += 16;
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;
    use crate::testing::rand_vec;
    use crate::tolerance::{assert_close, KERNEL_F32, Tolerance};

    /// Both implementations: the dispatched one (AVX-512 where the machine has it) and the
    /// portable one (every other machine, and the browser), whatever this machine has.
    #[test]
    fn gelu_and_geglu_match_the_reference() {
        let mut x = rand_vec(1001, 3, 8.0);
        x.extend_from_slice(&[0.0, -0.0, 1e-7, -30.0, 30.0, 87.0, -100.0]);
        let u = rand_vec(2 * 37, 4, 5.0);
        type Gelu = fn(&[f32], &mut [f32]);
        type Geglu = fn(&[f32], &mut [f32]);
        let portable_geglu: Geglu = |u, y| portable::geglu(&u[..y.len()], &u[y.len()..2 * y.len()], y);
        for (path, gelu, geglu) in [("dispatched", gelu as Gelu, geglu as Geglu), ("portable", portable::gelu, portable_geglu)] {
            let mut y = vec![0f32; x.len()];
            gelu(&x, &mut y);
            assert_close(&format!("{path} gelu"), &y, &reference::gelu(&x), KERNEL_F32);
            let mut g = vec![0f32; 37];
            geglu(&u, &mut g);
            assert_close(&format!("{path} geglu"), &g, &reference::geglu(&u, 37), KERNEL_F32);
        }
    }

    #[test]
    fn bf16_conversion_rounds_to_nearest_even() {
        let mut x = rand_vec(1003, 9, 100.0);
        // Ties at 1 + 1/256 and 1 + 3/256 round to even. (Denormals are left out: the hardware
        // conversion flushes them to zero, the software one keeps them.)
        x.extend_from_slice(&[0.0, -0.0, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, f32::INFINITY]);
        let mut got = vec![0u16; x.len()];
        to_bf16(&x, &mut got);
        for (i, (&v, &g)) in x.iter().zip(&got).enumerate() {
            assert_eq!(g, half::bf16::from_f32(v).to_bits(), "element {i} ({v})");
        }
    }

    #[test]
    fn exp_is_accurate_and_underflows_to_zero() {
        type ExpSum = fn(&mut [f32], f32) -> f32;
        for (path, exp_sum) in [("dispatched", exp_shifted_sum as ExpSum), ("portable", portable::exp_shifted_sum)] {
            let mut x = rand_vec(999, 5, 80.0);
            // Beyond both ends of the range, the edges themselves, and 2ⁿ's extremes (n = ±126..128).
            x.extend_from_slice(&[f32::NEG_INFINITY, -200.0, 0.0, 88.0, 90.2, -85.8, -85.9, 1.5 + 88.72, 1.5 - 87.33]);
            let expected: Vec<f32> = x.iter().map(|&v| ((v - 1.5) as f64).exp() as f32).collect();
            let total = exp_sum(&mut x, 1.5);
            // Relative accuracy of a few ulp.
            for (i, (&a, &e)) in x.iter().zip(&expected).enumerate() {
                assert!((a - e).abs() <= 4e-7 * e.abs() + 1e-37, "{path} exp at {i}: {a} vs {e}");
            }
            assert_eq!(x[999], 0.0, "{path}: exp(−∞)");
            assert_close(&format!("{path} sum"), &[total], &[expected.iter().sum::<f32>()], Tolerance::new(0.0, 1e-5));
        }
    }
}
