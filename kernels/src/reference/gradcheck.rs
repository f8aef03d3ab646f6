//! Every backward reference against float64 central finite differences of its forward
//! reference: L(x) = Σ r ⊙ f(x) for a fixed random r, so ∂L/∂x is the backward of dy = r.

use super::*;
use crate::testing::rand_vec;
use crate::tolerance::FINITE_DIFFERENCE_REL;

const STEP: f32 = 1e-2;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Finite-difference gradient of x ↦ Σ r ⊙ f(x), compared with `analytic`.
fn check(name: &str, x: &[f32], r: &[f32], f: impl Fn(&[f32]) -> Vec<f32>, analytic: &[f32]) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient shape");
    let mut xp = x.to_vec();
    let mut worst = 0f64;
    let scale = analytic.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    assert!(scale > 0.0, "{name}: an all-zero gradient proves nothing");
    for n in 0..x.len() {
        xp[n] = x[n] + STEP;
        let up = dot(r, &f(&xp));
        xp[n] = x[n] - STEP;
        let down = dot(r, &f(&xp));
        xp[n] = x[n];
        let fd = (up - down) / (2.0 * STEP as f64);
        worst = worst.max((fd - analytic[n] as f64).abs());
    }
    assert!(worst <= FINITE_DIFFERENCE_REL * scale, "{name}: max |fd − analytic| = {worst:.3e}, gradient max {scale:.3e}");
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (n, k, m) = (5, 7, 4);
    let x = rand_vec(n * k, 1, 1.0);
    let w = rand_vec(m * k, 2, 1.0);
    let b = rand_vec(m, 3, 1.0);
    let r = rand_vec(n * m, 4, 1.0);
    let (dx, dw, db) = linear_backward(&x, &w, &r, k);
    check("linear dx", &x, &r, |x| linear(x, &w, Some(&b), k), &dx);
    check("linear dw", &w, &r, |w| linear(&x, w, Some(&b), k), &dw);
    check("linear db", &b, &r, |b| linear(&x, &w, Some(b), k), &db);
}

#[test]
fn layer_norm_backward_matches_finite_differences() {
    let (n, h) = (4, 9);
    let x: Vec<f32> = rand_vec(n * h, 5, 2.0).iter().enumerate().map(|(i, v)| v + (i % 3) as f32).collect();
    let w = rand_vec(h, 6, 1.0);
    let b = rand_vec(h, 7, 1.0);
    let r = rand_vec(n * h, 8, 1.0);
    let (dx, dw, db) = layer_norm_backward(&x, &w, &r, 1e-5, h);
    check("layer_norm dx", &x, &r, |x| layer_norm(x, &w, Some(&b), 1e-5, h), &dx);
    check("layer_norm dw", &w, &r, |w| layer_norm(&x, w, Some(&b), 1e-5, h), &dw);
    check("layer_norm db", &b, &r, |b| layer_norm(&x, &w, Some(b), 1e-5, h), &db);
}

#[test]
fn tanh_backward_matches_finite_differences() {
    let x = rand_vec(40, 13, 3.0);
    let r = rand_vec(40, 14, 1.0);
    check("tanh", &x, &r, tanh, &tanh_backward(&tanh(&x), &r));
}

#[test]
fn gelu_and_geglu_backward_match_finite_differences() {
    let x = rand_vec(40, 9, 3.0);
    let r = rand_vec(40, 10, 1.0);
    check("gelu", &x, &r, gelu, &gelu_backward(&x, &r));
    let i = 6;
    let u = rand_vec(3 * 2 * i, 11, 3.0);
    let r = rand_vec(3 * i, 12, 1.0);
    check("geglu", &u, &r, |u| geglu(u, i), &geglu_backward(&u, &r, i));
}

#[test]
fn rope_backward_matches_finite_differences() {
    let (nh, hd) = (2, 4);
    let cu = [0u32, 3, 5];
    let pos = crate::backend::positions(&cu);
    let (cos, sin) = crate::rope::rope_tables(10_000.0, hd, 8);
    let qkv = rand_vec(5 * 3 * nh * hd, 13, 1.0);
    let r = rand_vec(qkv.len(), 14, 1.0);
    let analytic = rope_backward(&r, &pos, &cos, &sin, nh, hd);
    check("rope", &qkv, &r, |x| rope(x, &pos, &cos, &sin, nh, hd), &analytic);
}

#[test]
fn attention_backward_matches_finite_differences() {
    let (nh, hd) = (2, 4);
    let cu = [0u32, 7, 12];
    for window in [None, Some(2)] {
        let qkv = rand_vec(12 * 3 * nh * hd, 15, 1.5);
        let r = rand_vec(12 * nh * hd, 16, 1.0);
        let analytic = attention_backward(&qkv, &cu, nh, hd, window, &r);
        check(&format!("attention {window:?}"), &qkv, &r, |x| attention(x, &cu, nh, hd, window).0, &analytic);
    }
}

#[test]
fn embedding_pooling_and_scatter_backward_match_finite_differences() {
    let (v, h) = (6, 3);
    let ids = [4u32, 1, 4, 0, 2];
    let table = rand_vec(v * h, 17, 1.0);
    let r = rand_vec(ids.len() * h, 18, 1.0);
    check("embedding", &table, &r, |t| embedding(t, &ids, h), &embedding_backward(&ids, &r, v, h));
    let cu = [0u32, 2, 5];
    let x = rand_vec(5 * h, 19, 1.0);
    let r = rand_vec(2 * h, 20, 1.0);
    check("mean_pool", &x, &r, |x| mean_pool(x, &cu, h), &mean_pool_backward(&r, &cu, h));
    let rows = [3u32, 0];
    check("gather_rows", &x, &r, |x| gather_rows(x, &rows, h), &scatter_rows(&r, &rows, 5, h));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let c = 7;
    let logits = rand_vec(4 * c, 21, 3.0);
    let labels = [2i64, -100, 6, 0];
    let r = [0.25f32; 4]; // a mean over the 4 rows: the ignored row contributes nothing
    let analytic = cross_entropy_backward(&logits, &labels, c, -100, 0.25);
    check("cross_entropy", &logits, &r, |l| cross_entropy(l, &labels, c, -100), &analytic);
}
