//! Tolerances, in one place, per dtype. A test that needs another value says why beside it.
//!
//! The float32 values come from the fixtures' own noise floor (`spec/MODERNBERT.md` §5): a float32
//! implementation differs from transformers by about 1e-5 on hidden states and logits, while every
//! structural mistake changes logits by more than 3e-3. So 1e-4 separates right from wrong.

/// A tolerance: |actual − expected| ≤ atol + rtol·|expected| element-wise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    pub atol: f32,
    pub rtol: f32,
}

impl Tolerance {
    pub const fn new(atol: f32, rtol: f32) -> Self {
        Tolerance { atol, rtol }
    }
}

use crate::backend::DType;

/// Parity with transformers in float32: activations, logits and losses on real tokens.
pub const PARITY_F32: f32 = 1e-4;
/// Parity with weight matrices stored in f16 (vectors, activations and arithmetic f32), measured
/// as |Δ| / max(1, |reference|): absolute for values up to 1, relative above (see `Parity`).
/// Rounding the weights to 11 bits changes the model itself, and the fixture's deliberately sharp
/// attention amplifies that: transformers itself, run in float32 on the fixture's weight matrices
/// rounded to f16, is 3.11e-2 off its own float32 output in absolute terms on layer 3's residual
/// stream (values up to 13), 2.85e-2 in this measure; our f16 path gives the same maxima (3.113e-2,
/// 2.849e-2). Every structural mistake the fixtures list moves logits by more than 3.
pub const PARITY_F16: f32 = 3e-2;

/// Parity f16 end to end: weights and activations stored in f16 (arithmetic f32 inside each
/// kernel), measured like `PARITY_F16`. Rounding every activation to f16 as well moves the fixture's
/// layer 3 (values up to 13) by 6.0e-2 in this measure on lavapipe; transformers itself in float16
/// (`dtype=torch.float16`, eager attention) is 7.2e-2 off its float32 output there, so 8e-2 asks to
/// be no worse than transformers' own half precision.
pub const PARITY_F16_ACTIVATIONS: f32 = 8e-2;

/// Parity with bf16 weights and bf16 products (f32 accumulation; the CPU backend's bf16 mode):
/// 8 bits of mantissa instead of f16's 11 and the activations rounded too, on the fixture whose
/// sharp attention amplifies every perturbation: measured 0.38 on layer 3's residual stream
/// (values up to 13), 0.30 on logits. What bf16 must preserve is checked on a real configuration
/// instead (embeddings within cosine 0.999 of f32).
pub const PARITY_BF16: f32 = 0.5;

/// Two embeddings of the same document, bf16 mode against f32 (issue goal: cosine ≥ 0.999).
pub const BF16_EMBEDDING_COSINE: f64 = 0.999;

/// A single kernel against its reference in float32 (one op, no accumulated error).
pub const KERNEL_F32: Tolerance = Tolerance::new(2e-5, 2e-5);

/// Kernels that reduce over long rows (GEMM, attention) against their f64-accumulating reference.
pub const REDUCTION_F32: Tolerance = Tolerance::new(1e-4, 1e-4);

/// A matrix product whose activations are rounded to bf16 on the way in (relative 2^-9 per
/// element; accumulation in f32).
pub const LINEAR_BF16: Tolerance = Tolerance::new(5e-3, 5e-3);

/// Tolerance of `linear` against its reference for a backend's weight dtype (weights are given
/// exactly representable).
pub fn linear(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 | DType::F16 => REDUCTION_F32,
        DType::BF16 => LINEAR_BF16,
    }
}

/// A matrix product with f16 operands given exactly representable and its output stored in f16
/// (accumulation in f32): the output's rounding, 2^-11 relative, plus the accumulation order.
pub const LINEAR_F16_OUTPUT: Tolerance = Tolerance::new(1e-3, 2e-3);

/// An inference kernel with f16 activations against its reference on f16-representable inputs:
/// the output's rounding to f16 (2^-11 relative, so 2e-3 at the magnitudes of 4 these tests
/// reach) on top of the f32 arithmetic inside.
pub const F16_ACTIVATION_OP: Tolerance = Tolerance::new(2e-3, 1e-3);

/// Attention whose two products take bf16 inputs (q·k scores, then probabilities and values):
/// about 2^-9 relative per rounded operand, averaged over the keys.
pub const ATTENTION_BF16: Tolerance = Tolerance::new(2e-2, 2e-2);

/// Tolerance of `attention` against its reference for a backend's weight dtype.
pub fn attention(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 | DType::F16 => REDUCTION_F32,
        DType::BF16 => ATTENTION_BF16,
    }
}

/// Two backends on the same model: cosine similarity of the last hidden state.
pub const BACKEND_COSINE_F32: f64 = 0.99999;

/// How a parity error is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorScale {
    /// max |ours − reference|.
    Absolute,
    /// max |ours − reference| / max(1, |reference|): absolute up to 1, relative above. For
    /// reduced-precision weights, whose rounding error grows with the values.
    AboveOne,
}

impl ErrorScale {
    /// The error of one element.
    pub fn error(self, actual: f32, expected: f32) -> f32 {
        let d = (actual - expected).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        match self {
            ErrorScale::Absolute => d,
            ErrorScale::AboveOne => d / expected.abs().max(1.0),
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            ErrorScale::Absolute => "max abs error",
            ErrorScale::AboveOne => "max |error| / max(1, |reference|)",
        }
    }
}

/// A parity criterion: every compared tensor's error, measured as `scale` says, at most `limit`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Parity {
    pub limit: f32,
    pub scale: ErrorScale,
}

/// Parity criterion for a storage dtype.
pub fn parity(dtype: DType) -> Parity {
    match dtype {
        DType::F32 => Parity { limit: PARITY_F32, scale: ErrorScale::Absolute },
        DType::F16 => Parity { limit: PARITY_F16, scale: ErrorScale::AboveOne },
        DType::BF16 => Parity { limit: PARITY_BF16, scale: ErrorScale::Absolute },
    }
}

/// Parity criterion for a backend's weight and activation dtypes.
pub fn parity_with_activations(weights: DType, activations: DType) -> Parity {
    match activations {
        DType::F16 => Parity { limit: PARITY_F16_ACTIVATIONS, scale: ErrorScale::AboveOne },
        _ => parity(weights),
    }
}

/// The result of comparing two arrays: where the worst element is, and how bad.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub max_abs: f32,
    pub mean_abs: f32,
    pub worst_index: usize,
    pub actual: f32,
    pub expected: f32,
    /// Elements outside the tolerance.
    pub failures: usize,
}

/// Compare element-wise; NaN anywhere counts as a failure at that index.
pub fn compare(actual: &[f32], expected: &[f32], tol: Tolerance) -> Comparison {
    assert_eq!(actual.len(), expected.len(), "compare: lengths differ");
    let mut c = Comparison { max_abs: 0.0, mean_abs: 0.0, worst_index: 0, actual: 0.0, expected: 0.0, failures: 0 };
    let mut sum = 0f64;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let d = (a - e).abs();
        let d = if d.is_nan() { f32::INFINITY } else { d };
        sum += d as f64;
        if d > tol.atol + tol.rtol * e.abs() {
            c.failures += 1;
        }
        if d > c.max_abs || i == 0 {
            c.max_abs = d;
            c.worst_index = i;
            c.actual = a;
            c.expected = e;
        }
    }
    c.mean_abs = if actual.is_empty() { 0.0 } else { (sum / actual.len() as f64) as f32 };
    c
}

/// Cosine similarity in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}

/// Panic with the location and size of the worst error unless `actual` matches `expected`.
/// With `KERNELS_DUMP=1` the values are printed instead of asserted.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], tol: Tolerance) {
    assert_eq!(actual.len(), expected.len(), "{what}: {} values, expected {}", actual.len(), expected.len());
    let c = compare(actual, expected, tol);
    if std::env::var_os("KERNELS_DUMP").is_some() {
        eprintln!("{what}: actual {actual:?}\n{what}: expected {expected:?}");
        return;
    }
    assert!(
        c.failures == 0,
        "{what}: {} of {} values outside atol {:e} + rtol {:e}; worst at index {}: {} vs expected {} \
         (max abs {:e}, mean abs {:e})",
        c.failures,
        actual.len(),
        tol.atol,
        tol.rtol,
        c.worst_index,
        c.actual,
        c.expected,
        c.max_abs,
        c.mean_abs
    );
}

/// A backward reference against float64 central finite differences of its forward reference
/// (step 1e-2 on inputs of order 1): truncation O(h²) and the forward's float32 output rounding
/// divided by 2h stay below 1e-3 of the gradient's largest value; a wrong formula is O(1) off.
pub const FINITE_DIFFERENCE_REL: f64 = 2e-3;

/// Gradients of the whole model against transformers' (fixtures): per tensor,
/// max |Δ| ≤ 1e-4 · max |reference| (the fixtures' float32-vs-float64 noise floor is 7.4e-6).
pub const GRAD_REL_F32: f32 = 1e-4;
