//! Optimizer steps on one parameter tensor, element by element, in f64 (state stored f32 like the
//! kernels). The formulas are those of `crate::optim`'s documentation.

use crate::optim::{AdamStep, Rule};

/// One AdamW or StableAdamW step on p, with gradient g and moments m, v (all [N]), in place.
/// Returns the tensor's update RMS for StableAdamW (0 for AdamW).
pub fn adam_step(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) -> f32 {
    assert!(p.len() == g.len() && p.len() == m.len() && p.len() == v.len());
    let t = s.step as i32;
    let (b1, b2, eps, lr, wd) = (s.beta1, s.beta2, s.eps, s.lr, s.weight_decay);
    match s.rule {
        Rule::AdamW => {
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for n in 0..p.len() {
                let gn = g[n] as f64;
                let mut pn = p[n] as f64 * (1.0 - lr * wd);
                let mn = b1 * m[n] as f64 + (1.0 - b1) * gn;
                let vn = b2 * v[n] as f64 + (1.0 - b2) * gn * gn;
                pn -= lr / c1 * mn / (vn.sqrt() / c2.sqrt() + eps);
                (p[n], m[n], v[n]) = (pn as f32, mn as f32, vn as f32);
            }
            0.0
        }
        Rule::StableAdamW { max_lr } => {
            // Debiased betas: m and v hold the bias-corrected moments directly.
            let b1t = (b1.powi(t) - b1) / (b1.powi(t) - 1.0);
            let b2t = (b2.powi(t) - b2) / (b2.powi(t) - 1.0);
            let mut sum = 0f64;
            for n in 0..p.len() {
                let gn = g[n] as f64;
                let mn = m[n] as f64 + (1.0 - b1t) * (gn - m[n] as f64);
                let vn = b2t * v[n] as f64 + (1.0 - b2t) * gn * gn;
                (m[n], v[n]) = (mn as f32, vn as f32);
                sum += gn * gn / (vn as f32 as f64).max(eps * eps);
            }
            let rms = if p.is_empty() { 0.0 } else { (sum / p.len() as f64).sqrt() };
            let eta = lr / rms.max(1.0);
            let keep = 1.0 - eta / max_lr * wd;
            for n in 0..p.len() {
                let pn = p[n] as f64 * keep - eta * m[n] as f64 / ((v[n] as f64).sqrt() + eps);
                p[n] = pn as f32;
            }
            rms as f32
        }
    }
}
