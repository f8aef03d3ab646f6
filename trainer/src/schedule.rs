//! Learning-rate (and masking-rate) schedules as functions of the 0-based optimizer step n: the
//! rate of update n, the one that follows the loss of batch n (the HF Trainer / LambdaLR
//! convention). Schedules restart at every phase.

use serde::{Deserialize, Serialize};

/// The learning-rate schedule of a phase of `total` optimizer steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// lr = peak throughout (BioClinical ModernBERT phase 1).
    Constant,
    /// Linear warmup from 0 over `warmup` steps, then constant.
    Warmup { warmup: u64 },
    /// Linear warmup, then linear decay to 0 after `total` steps (transformers'
    /// `get_linear_schedule_with_warmup`, the fine-tuning default).
    Linear { warmup: u64 },
    /// Linear warmup, then cosine decay towards `min_ratio`·peak, reached after `total` steps
    /// (transformers' `get_cosine_schedule_with_warmup`; Clinical ModernBERT: 10% warmup).
    Cosine { warmup: u64, #[serde(default)] min_ratio: f64 },
    /// Warmup-stable-decay with 1-sqrt decay over the last `decay` steps (ModernBERT's
    /// `one_minus_sqrt`; BioClinical ModernBERT phase 2 decays over the whole phase):
    /// scale = α + (1 − α)(1 − sqrt(t / decay)), t counted from the first decay step.
    WarmupStableDecay { warmup: u64, decay: u64, #[serde(default = "default_alpha")] alpha: f64 },
}

fn default_alpha() -> f64 {
    0.001
}

impl Schedule {
    /// The learning rate of update `n` (0-based) in a phase of `total` updates with peak `peak`.
    pub fn lr(&self, n: u64, total: u64, peak: f64) -> f64 {
        let warm = |w: u64| if w > 0 && n < w { Some(peak * n as f64 / w as f64) } else { None };
        match *self {
            Schedule::Constant => peak,
            Schedule::Warmup { warmup } => warm(warmup).unwrap_or(peak),
            Schedule::Linear { warmup } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                peak * (1.0 - (n - warmup) as f64 / span).max(0.0)
            }),
            Schedule::Cosine { warmup, min_ratio } => warm(warmup).unwrap_or_else(|| {
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((n - warmup) as f64 / span).min(1.0);
                peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
            }),
            Schedule::WarmupStableDecay { warmup, decay, alpha } => warm(warmup).unwrap_or_else(|| {
                let start = total.saturating_sub(decay);
                if n < start || decay == 0 {
                    peak
                } else {
                    let t = (n - start) as f64 / decay as f64;
                    peak * (alpha + (1.0 - alpha) * (1.0 - t.min(1.0).sqrt()))
                }
            }),
        }
    }
}

/// The masking rate of step n in a phase of `total` steps: constant, or linear from `start` to
/// `end` with p(0) = start and p(total − 1) = end exactly (Clinical ModernBERT's 30% → 15%).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaskRate {
    Constant(f64),
    Linear { start: f64, end: f64 },
}

impl MaskRate {
    pub fn at(&self, n: u64, total: u64) -> f64 {
        match *self {
            MaskRate::Constant(p) => p,
            MaskRate::Linear { start, end } => {
                if total <= 1 {
                    return start;
                }
                start + (end - start) * (n.min(total - 1) as f64) / (total - 1) as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_stable_1_sqrt_matches_the_fixture_formula() {
        // fixtures-training README §3: 2 warmup, 4 stable, 4 decay steps, α = 0.001, peak 1e-3.
        let s = Schedule::WarmupStableDecay { warmup: 2, decay: 4, alpha: 0.001 };
        let expected = [0.0, 5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 0.0005005, 0.0002936003, 0.0001348406];
        for (n, e) in expected.iter().enumerate() {
            let lr = s.lr(n as u64, 10, 1e-3);
            assert!((lr - e).abs() < 1e-10, "step {n}: {lr} vs {e}");
        }
    }

    #[test]
    fn cosine_and_warmup() {
        let s = Schedule::Cosine { warmup: 10, min_ratio: 0.0 };
        assert_eq!(s.lr(0, 110, 1.0), 0.0);
        assert_eq!(s.lr(5, 110, 1.0), 0.5);
        assert!((s.lr(10, 110, 1.0) - 1.0).abs() < 1e-12);
        assert!((s.lr(60, 110, 1.0) - 0.5).abs() < 1e-12);
        assert!((s.lr(109, 110, 1.0) - 0.5 * (1.0 + (std::f64::consts::PI * 0.99).cos())).abs() < 1e-12);
        assert_eq!(Schedule::Warmup { warmup: 4 }.lr(2, 100, 2.0), 1.0);
        assert_eq!(Schedule::Warmup { warmup: 4 }.lr(7, 100, 2.0), 2.0);
        assert_eq!(Schedule::Constant.lr(7, 100, 2.0), 2.0);
        let l = Schedule::Linear { warmup: 0 };
        assert_eq!(l.lr(0, 100, 2.0), 2.0);
        assert_eq!(l.lr(50, 100, 2.0), 1.0);
        assert!((l.lr(99, 100, 2.0) - 0.02).abs() < 1e-12);
    }

    #[test]
    fn linear_mask_rate_matches_the_fixture_examples() {
        // fixtures-training README §9: 0.30 → 0.15 over 1000 steps.
        let r = MaskRate::Linear { start: 0.30, end: 0.15 };
        for (n, e) in [(0, 0.300000), (1, 0.299850), (250, 0.262462), (500, 0.224925), (750, 0.187387), (998, 0.150150), (999, 0.150000)] {
            assert!((r.at(n, 1000) - e).abs() < 5e-7, "step {n}: {} vs {e}", r.at(n, 1000));
        }
    }
}
