#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, rand_for, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32};

fn check<B: Backend>(b: &B, rows: usize, h: usize, bias: bool, eps: f32) {
    let x = rand_vec(rows * h, 1 + rows as u32, 3.0);
    // Weights as the backend stores them (f16 backends round them): the reference sees the same.
    let w = rand_for(b, h, 2, 1.5);
    let bb = rand_for(b, h, 3, 0.5);
    let expected = reference::layer_norm(&x, &w, bias.then_some(&bb[..]), eps, h);
    let xt = b.upload(&x, &[rows, h]).unwrap();
    let wt = b.upload_weight(w.clone(), &[h]).unwrap();
    let bt = b.upload_weight(bb.clone(), &[h]).unwrap();
    let y = b.layer_norm(&xt, &wt, bias.then_some(&bt), eps).unwrap();
    assert_eq!(b.shape(&y), &[rows, h]);
    let actual = block_on(b.read(&y)).unwrap();
    assert_close(&format!("layer_norm rows={rows} h={h} bias={bias}"), &actual, &expected, KERNEL_F32);
}

fn layer_norm_shapes<B: Backend>(b: &B) {
    for &(rows, h) in &[(1, 1), (1, 48), (7, 48), (3, 768), (130, 100), (2, 63)] {
        check(b, rows, h, false, 1e-5);
        check(b, rows, h, true, 1e-5);
    }
}

fn layer_norm_eps<B: Backend>(b: &B) {
    // A constant row has zero variance: the result is b, scaled by 1/sqrt(eps) times zero.
    check(b, 4, 48, true, 1e-12);
    let x = vec![2.5f32; 48];
    let w = vec![1.0f32; 48];
    let y = b.layer_norm(&b.upload(&x, &[1, 48]).unwrap(), &b.upload_weight(w, &[48]).unwrap(), None, 1e-5).unwrap();
    assert!(block_on(b.read(&y)).unwrap().iter().all(|v| *v == 0.0));
}

fn layer_norm_rejects_mismatch<B: Backend>(b: &B) {
    let x = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    let w = b.upload_weight(vec![1.0; 5], &[5]).unwrap();
    assert!(b.layer_norm(&x, &w, None, 1e-5).is_err());
}

fn check_fused<B: Backend>(b: &B, rows: usize, h: usize, bias: bool) {
    let x = rand_vec(rows * h, 11 + rows as u32, 3.0);
    let y = rand_vec(rows * h, 12 + h as u32, 2.0);
    let w = rand_for(b, h, 13, 1.5);
    let bb = rand_for(b, h, 14, 0.5);
    let (s_ref, n_ref) = reference::add_layer_norm(&x, &y, &w, bias.then_some(&bb[..]), 1e-5, h);
    let (s, n) = b
        .add_layer_norm(&b.upload(&x, &[rows, h]).unwrap(), &b.upload(&y, &[rows, h]).unwrap(), &b.upload_weight(w.clone(), &[h]).unwrap(), bias.then(|| b.upload_weight(bb.clone(), &[h]).unwrap()).as_ref(), 1e-5)
        .unwrap();
    assert_eq!(b.shape(&s), &[rows, h]);
    assert_eq!(b.shape(&n), &[rows, h]);
    let what = format!("add_layer_norm rows={rows} h={h} bias={bias}");
    assert_close(&format!("{what} sum"), &block_on(b.read(&s)).unwrap(), &s_ref, KERNEL_F32);
    assert_close(&format!("{what} norm"), &block_on(b.read(&n)).unwrap(), &n_ref, KERNEL_F32);
}

fn add_layer_norm_shapes<B: Backend>(b: &B) {
    for &(rows, h) in &[(1, 1), (1, 48), (7, 48), (3, 768), (130, 100), (2, 63)] {
        check_fused(b, rows, h, false);
        check_fused(b, rows, h, true);
    }
}

/// The fused op is a drop-in for add then layer_norm: the same bits, so the model's outputs do
/// not move when it uses it.
fn add_layer_norm_equals_unfused<B: Backend>(b: &B) {
    let (rows, h) = (37, 96);
    let x = b.upload(&rand_vec(rows * h, 21, 4.0), &[rows, h]).unwrap();
    let y = b.upload(&rand_vec(rows * h, 22, 4.0), &[rows, h]).unwrap();
    let w = b.upload_weight(rand_for(b, h, 23, 1.0), &[h]).unwrap();
    let bias = b.upload_weight(rand_for(b, h, 24, 1.0), &[h]).unwrap();
    let (s, n) = b.add_layer_norm(&x, &y, &w, Some(&bias), 1e-5).unwrap();
    let s2 = b.add(&x, &y).unwrap();
    let n2 = b.layer_norm(&s2, &w, Some(&bias), 1e-5).unwrap();
    assert_eq!(block_on(b.read(&s)).unwrap(), block_on(b.read(&s2)).unwrap());
    assert_eq!(block_on(b.read(&n)).unwrap(), block_on(b.read(&n2)).unwrap());
}

fn add_layer_norm_rejects_mismatch<B: Backend>(b: &B) {
    let x = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    let y = b.upload(&[0.0; 8], &[2, 4]).unwrap();
    let w = b.upload_weight(vec![1.0; 4], &[4]).unwrap();
    assert!(b.add_layer_norm(&x, &y, &w, None, 1e-5).is_err());
    let w5 = b.upload_weight(vec![1.0; 5], &[5]).unwrap();
    assert!(b.add_layer_norm(&x, &x, &w5, None, 1e-5).is_err());
}

crate::backend_tests!(
    layer_norm_shapes,
    layer_norm_eps,
    layer_norm_rejects_mismatch,
    add_layer_norm_shapes,
    add_layer_norm_equals_unfused,
    add_layer_norm_rejects_mismatch
);

// ---- Training ----

use crate::tolerance::REDUCTION_F32;

fn check_backward<B: Backend>(b: &B, rows: usize, h: usize, offset: f32, eps: f32) {
    let x: Vec<f32> = rand_vec(rows * h, 3 + rows as u32 + h as u32, 2.0).iter().map(|v| v + offset).collect();
    let w = rand_vec(h, 4 + h as u32, 1.5);
    let dy = rand_vec(rows * h, 5 + rows as u32, 1.0);
    let (dx_ref, dw_ref, _) = reference::layer_norm_backward(&x, &w, &dy, eps, h);
    let (dx, dw) = b.layer_norm_backward(&b.upload(&x, &[rows, h]).unwrap(), &b.upload(&w, &[h]).unwrap(), &b.upload(&dy, &[rows, h]).unwrap(), eps).unwrap();
    assert_eq!(b.shape(&dx), &[rows, h]);
    assert_eq!(b.shape(&dw), &[h]);
    let what = format!("layer_norm_backward rows={rows} h={h} offset={offset}");
    assert_close(&format!("{what} dx"), &block_on(b.read(&dx)).unwrap(), &dx_ref, REDUCTION_F32);
    assert_close(&format!("{what} dw"), &block_on(b.read(&dw)).unwrap(), &dw_ref, REDUCTION_F32);
}

fn layer_norm_backward_shapes<B: Backend>(b: &B) {
    for &(rows, h) in &[(1, 2), (1, 48), (7, 48), (3, 768), (130, 100), (2, 63), (257, 65), (600, 1024), (3000, 48)] {
        check_backward(b, rows, h, 0.0, 1e-5);
    }
    // A large mean: the two-pass statistics keep their accuracy.
    check_backward(b, 20, 96, 30.0, 1e-5);
    // More rows than one grid dimension holds (65,535 workgroups).
    check_backward(b, 66_000, 8, 0.0, 1e-5);
}

fn layer_norm_backward_rejects_mismatch<B: Backend>(b: &B) {
    let x = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    assert!(b.layer_norm_backward(&x, &b.upload(&[1.0; 5], &[5]).unwrap(), &x, 1e-5).is_err());
    assert!(b.layer_norm_backward(&x, &b.upload(&[1.0; 4], &[4]).unwrap(), &b.upload(&[0.0; 8], &[2, 4]).unwrap(), 1e-5).is_err());
}

crate::training_backend_tests!(layer_norm_backward_shapes, layer_norm_backward_rejects_mismatch);


/// f16 activations: inputs and outputs stored in f16, arithmetic f32 (odd widths pad f16 buffers).
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    let half = |v| crate::testing::representable(DType::F16, v);
    for (rows, h) in [(1usize, 1usize), (7, 63), (33, 96)] {
        let (x, y, w, bias) = (half(rand_vec(rows * h, 1, 3.0)), half(rand_vec(rows * h, 2, 3.0)), half(rand_vec(h, 3, 1.5)), half(rand_vec(h, 4, 0.5)));
        let (xt, yt) = (b.upload(&x, &[rows, h]).unwrap(), b.upload(&y, &[rows, h]).unwrap());
        let (wt, bt) = (b.upload_weight(w.clone(), &[h]).unwrap(), b.upload_weight(bias.clone(), &[h]).unwrap());
        let read = |t: &crate::gpu::GpuTensor| block_on(b.read(t)).unwrap();
        let n = b.layer_norm(&xt, &wt, Some(&bt), 1e-5).unwrap();
        assert_close(&format!("layer_norm {rows}x{h}"), &read(&n), &reference::layer_norm(&x, &w, Some(&bias), 1e-5, h), F16_ACTIVATION_OP);
        // The sum is rounded to f16 before the norm reads it, as the unfused pair does (WGSL lets
        // f32 → f16 pick either neighbour, so the sums are compared within the tolerance).
        let (s, n) = b.add_layer_norm(&xt, &yt, &wt, None, 1e-5).unwrap();
        assert_close(&format!("add_layer_norm sum {rows}x{h}"), &read(&s), &half(reference::add(&x, &y)), F16_ACTIVATION_OP);
        assert_close(&format!("add_layer_norm {rows}x{h}"), &read(&n), &reference::layer_norm(&read(&s), &w, None, 1e-5, h), F16_ACTIVATION_OP);
    }
}

/// LayerNorm with and without bias, the fused add, and (training) the backward.
fn exercise(b: &crate::GpuBackend) {
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let x = b.upload(&rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
        let w = b.upload_weight(rand_vec(h, 2, 1.0), &[h]).unwrap();
        let bias = b.upload_weight(rand_vec(h, 3, 1.0), &[h]).unwrap();
        b.layer_norm(&x, &w, None, 1e-5).unwrap();
        b.layer_norm(&x, &w, Some(&bias), 1e-5).unwrap();
        b.add_layer_norm(&x, &x, &w, Some(&bias), 1e-5).unwrap();
        if crate::testing::trains(b) {
            b.layer_norm_backward(&x, &w, &x, 1e-5).unwrap();
        }
    }
}

crate::wgsl_exercise!("layernorm", ["layer_norm", "add_layer_norm", "layer_norm_backward", "layer_norm_dw"], exercise);
