#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, rand_for, rand_vec};
use crate::tolerance::{assert_close, REDUCTION_F32};

fn check<B: Backend>(b: &B, n: usize, k: usize, m: usize, bias: bool) {
    let x = rand_vec(n * k, (n * 7 + k) as u32, 1.0);
    let w = rand_for(b, m * k, (m * 3 + k) as u32, 1.0 / (k as f32).sqrt());
    let bb = rand_for(b, m, 5, 0.3);
    let expected = reference::linear(&x, &w, bias.then_some(&bb[..]), k);
    let y = b
        .linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), bias.then(|| b.upload_weight(bb.clone(), &[m]).unwrap()).as_ref())
        .unwrap();
    assert_eq!(b.shape(&y), &[n, m]);
    assert_close(&format!("linear {n}x{k} · ({m}x{k})ᵀ bias={bias}"), &block_on(b.read(&y)).unwrap(), &expected, crate::tolerance::linear(b.dtype()));
}

fn linear_shapes<B: Backend>(b: &B) {
    check(b, 1, 48, 144, false);
    check(b, 13, 48, 72, true);
    check(b, 37, 72, 48, false);
    check(b, 3, 13, 7, true); // no vectorisation possible
    check(b, 130, 768, 2304, false);
    check(b, 120, 48, 320, true);
}

fn linear_rejects_mismatch<B: Backend>(b: &B) {
    let x = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    let w = b.upload(&[0.0; 10], &[2, 5]).unwrap();
    assert!(b.linear(&x, &w, None).is_err());
}

crate::backend_tests!(linear_shapes, linear_rejects_mismatch);

/// A weight split across bindings (a vocabulary projection) gives the same product.
#[test]
fn wgpu_chunked_weight() {
    use crate::gpu::GpuBackend;
    let (n, k, m) = (9, 48, 320);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(128 * k * 4);
    let x = rand_vec(n * k, 1, 1.0);
    let w = rand_vec(m * k, 2, 0.2);
    let bb = rand_vec(m, 3, 0.1);
    let wt = gpu.upload(&w, &[m, k]).unwrap();
    assert_eq!(wt.parts.len(), 3);
    let y = gpu.linear(&gpu.upload(&x, &[n, k]).unwrap(), &wt, Some(&gpu.upload(&bb, &[m]).unwrap())).unwrap();
    assert_close("chunked linear", &block_on(gpu.read(&y)).unwrap(), &reference::linear(&x, &w, Some(&bb), k), REDUCTION_F32);
}

/// The register-tiled GEMM (`GemmPath::Tiled`, bias fused): the same shapes with f32 and f16
/// weights, and f16 activations; a weight in row chunks takes the cubek path and still agrees.
#[test]
fn wgpu_tiled() {
    use crate::linear::GemmPath;
    use crate::tolerance::F16_ACTIVATION_OP;
    for b in [crate::testing::gpu(), crate::testing::gpu_f16()] {
        linear_shapes(&b.with_gemm(GemmPath::Tiled));
    }
    let b = crate::testing::gpu_f16_activations().with_gemm(GemmPath::Tiled);
    let half = |v| crate::testing::representable(crate::backend::DType::F16, v);
    for (n, k, m) in [(1usize, 48usize, 144usize), (29, 48, 320), (67, 96, 97)] {
        let (x, w, bias) = (half(rand_vec(n * k, 9, 1.0)), half(rand_vec(m * k, 10, 0.1)), half(rand_vec(m, 11, 0.5)));
        let y = b.linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), Some(&b.upload_weight(bias.clone(), &[m]).unwrap())).unwrap();
        assert_close(&format!("tiled linear {n}x{k}x{m}"), &block_on(b.read(&y)).unwrap(), &reference::linear(&x, &w, Some(&bias), k), F16_ACTIVATION_OP);
    }
    assert!(b.gemm_summary().contains("linear_tiled ×3"), "{}", b.gemm_summary());
    let (n, k, m) = (9, 48, 320);
    let gpu = crate::testing::gpu().with_gemm(GemmPath::Tiled).with_max_binding_bytes(128 * k * 4);
    let (x, w, bb) = (rand_vec(n * k, 1, 1.0), rand_vec(m * k, 2, 0.2), rand_vec(m, 3, 0.1));
    let wt = gpu.upload(&w, &[m, k]).unwrap();
    assert_eq!(wt.parts.len(), 3);
    let y = gpu.linear(&gpu.upload(&x, &[n, k]).unwrap(), &wt, Some(&gpu.upload(&bb, &[m]).unwrap())).unwrap();
    assert_close("tiled path, chunked weight", &block_on(gpu.read(&y)).unwrap(), &reference::linear(&x, &w, Some(&bb), k), REDUCTION_F32);
}

// ---- Training: the two other products of a linear layer's backward. ----

fn check_backward<B: Backend>(b: &B, n: usize, k: usize, m: usize) {
    let x = rand_vec(n * k, (n * 11 + k) as u32, 1.0);
    let w = rand_vec(m * k, (m * 5 + k) as u32, 1.0 / (k as f32).sqrt());
    let dy = rand_vec(n * m, (n + m * 3) as u32, 1.0);
    let (dx_ref, dw_ref, _) = reference::linear_backward(&x, &w, &dy, k);
    let dyt = b.upload(&dy, &[n, m]).unwrap();
    let dx = b.matmul(&dyt, &b.upload(&w, &[m, k]).unwrap()).unwrap();
    assert_eq!(b.shape(&dx), &[n, k]);
    assert_close(&format!("matmul dy [{n}, {m}] · w [{m}, {k}]"), &block_on(b.read(&dx)).unwrap(), &dx_ref, REDUCTION_F32);
    let dw = b.matmul_tn(&dyt, &b.upload(&x, &[n, k]).unwrap()).unwrap();
    assert_eq!(b.shape(&dw), &[m, k]);
    assert_close(&format!("matmul_tn dy [{n}, {m}]ᵀ · x [{n}, {k}]"), &block_on(b.read(&dw)).unwrap(), &dw_ref, REDUCTION_F32);
}

fn matmul_shapes<B: Backend>(b: &B) {
    check_backward(b, 1, 1, 1);
    check_backward(b, 1, 48, 144);
    check_backward(b, 13, 48, 72);
    check_backward(b, 3, 13, 7); // no vectorisation possible
    check_backward(b, 130, 100, 65);
    check_backward(b, 257, 64, 33);
    check_backward(b, 300, 256, 200);
}

fn matmul_rejects_mismatch<B: Backend>(b: &B) {
    let a = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    let c = b.upload(&[0.0; 10], &[2, 5]).unwrap();
    assert!(b.matmul(&a, &c).is_err(), "a [3, 4] · b [2, 5]");
    assert!(b.matmul_tn(&a, &c).is_err(), "a [3, 4]ᵀ · b [2, 5]");
}

crate::training_backend_tests!(matmul_shapes, matmul_rejects_mismatch);

/// A weight gradient larger than one binding comes back in the row chunks of its parameter, and a
/// chunked [K, M] operand multiplies like a whole one.
#[test]
fn wgpu_training_chunked_products() {
    use crate::gpu::GpuBackend;
    let (n, k, m) = (9, 48, 320);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(100 * k * 4);
    let x = rand_vec(n * k, 1, 1.0);
    let w = rand_vec(m * k, 2, 0.2);
    let dy = rand_vec(n * m, 3, 1.0);
    let (dx_ref, dw_ref, _) = reference::linear_backward(&x, &w, &dy, k);
    let dyt = gpu.upload(&dy, &[n, m]).unwrap();
    let dw = gpu.matmul_tn(&dyt, &gpu.upload(&x, &[n, k]).unwrap()).unwrap();
    let wt = gpu.upload(&w, &[m, k]).unwrap();
    assert_eq!((dw.parts.len(), dw.part_rows), (wt.parts.len(), wt.part_rows), "the gradient is split like its parameter");
    assert_eq!(dw.parts.len(), 4);
    assert_close("chunked matmul_tn", &block_on(gpu.read(&dw)).unwrap(), &dw_ref, REDUCTION_F32);
    let dx = gpu.matmul(&dyt, &wt).unwrap();
    assert_close("matmul with a chunked operand", &block_on(gpu.read(&dx)).unwrap(), &dx_ref, REDUCTION_F32);
}

/// Mixed precision on an f16 backend: an f32 weight (the trainer's master copy) is multiplied as
/// its f16 rounding, by `linear` and by `matmul`, whole or in row chunks, and stays f32 itself.
#[test]
fn wgpu_f16_products_round_f32_master_weights() {
    let (n, k, m) = (9, 48, 320);
    let x = rand_vec(n * k, 1, 1.0);
    let w = rand_vec(m * k, 2, 0.2);
    let dy = rand_vec(n * m, 3, 1.0);
    let w16: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let y_ref = reference::linear(&x, &w16, None, k);
    let (dx_ref, _, _) = reference::linear_backward(&x, &w16, &dy, k);
    let y_f32 = reference::linear(&x, &w, None, k);
    assert!(y_ref.iter().zip(&y_f32).any(|(a, b)| (a - b).abs() > 1e-4), "the f16 rounding must show in the product");
    for (max_binding, parts) in [(None, 1), (Some(100 * k * 4), 4)] {
        let mut gpu = crate::testing::gpu_f16();
        if let Some(bytes) = max_binding {
            gpu = gpu.with_max_binding_bytes(bytes);
        }
        let wt = gpu.upload(&w, &[m, k]).unwrap();
        assert_eq!(wt.parts.len(), parts);
        let y = gpu.linear(&gpu.upload(&x, &[n, k]).unwrap(), &wt, None).unwrap();
        assert_close(&format!("linear, f32 master weight in {parts} part(s)"), &block_on(gpu.read(&y)).unwrap(), &y_ref, REDUCTION_F32);
        let dx = gpu.matmul(&gpu.upload(&dy, &[n, m]).unwrap(), &wt).unwrap();
        assert_close(&format!("matmul, f32 master weight in {parts} part(s)"), &block_on(gpu.read(&dx)).unwrap(), &dx_ref, REDUCTION_F32);
        assert_eq!(block_on(gpu.read(&wt)).unwrap(), w, "the master copy stays f32");
    }
}

/// f16 activations: products with f16 operands and f32 accumulation, and a vocabulary projection
/// stored in row chunks, each chunk's product copied into its columns.
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    let half = |v| crate::testing::representable(DType::F16, v);
    for (n, k, m) in [(1usize, 48usize, 144usize), (29, 48, 320), (67, 96, 97)] {
        let (x, w, bias) = (half(rand_vec(n * k, 9, 1.0)), half(rand_vec(m * k, 10, 0.1)), half(rand_vec(m, 11, 0.5)));
        let y = b.linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), Some(&b.upload_weight(bias.clone(), &[m]).unwrap())).unwrap();
        assert_close(&format!("linear {n}x{k}x{m}"), &block_on(b.read(&y)).unwrap(), &reference::linear(&x, &w, Some(&bias), k), F16_ACTIVATION_OP);
    }
    let (v, h) = (320usize, 48usize);
    let chunked = b.clone().with_max_binding_bytes(128 * h * 2);
    let w = half(rand_vec(v * h, 12, 0.1));
    let wt = chunked.upload_weight(w.clone(), &[v, h]).unwrap();
    assert!(wt.parts_len() > 1);
    let x = half(rand_vec(5 * h, 13, 1.0));
    let y = chunked.linear(&chunked.upload(&x, &[5, h]).unwrap(), &wt, None).unwrap();
    assert_close("linear, chunked weight", &block_on(chunked.read(&y)).unwrap(), &reference::linear(&x, &w, None, h), F16_ACTIVATION_OP);
}

/// Products with and without bias, a weight in row chunks; (training) both backward products,
/// whole and chunked, on cubek's GEMM and the register-tiled one; (f16 weights) f32 master weights
/// cast for `linear` and `matmul`.
fn exercise(b: &crate::GpuBackend) {
    use crate::backend::DType;
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let x = b.upload(&rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
        let w = b.upload_weight(rand_vec(3 * h * h, 4, 0.1), &[3 * h, h]).unwrap();
        let y = b.linear(&x, &w, None).unwrap();
        let bias = b.upload_weight(rand_vec(3 * h, 5, 0.1), &[3 * h]).unwrap();
        b.linear(&x, &w, Some(&bias)).unwrap();
        // The register-tiled GEMM, with and without its fused bias.
        let tiled = b.clone().with_gemm(crate::linear::GemmPath::Tiled);
        tiled.linear(&x, &w, None).unwrap();
        tiled.linear(&x, &w, Some(&bias)).unwrap();
        if crate::testing::trains(b) {
            b.matmul(&y, &w).unwrap();
            b.matmul_tn(&y, &x).unwrap();
        }
    }
    // A weight in row chunks (the projection onto a vocabulary larger than one binding).
    let chunked = b.clone().with_max_binding_bytes(128 * 48 * b.dtype().size());
    let w = chunked.upload_weight(rand_vec(320 * 48, 11, 0.1), &[320, 48]).unwrap();
    let y = chunked.linear(&chunked.upload(&rand_vec(5 * 48, 12, 1.0), &[5, 48]).unwrap(), &w, None).unwrap();
    block_on(chunked.read(&y)).unwrap();
    if crate::testing::trains(b) {
        let chunked = b.clone().with_max_binding_bytes(100 * 48 * 4);
        let dy = chunked.upload(&rand_vec(9 * 320, 13, 1.0), &[9, 320]).unwrap();
        let p = chunked.upload(&rand_vec(320 * 48, 12, 1.0), &[320, 48]).unwrap();
        chunked.matmul_tn(&dy, &chunked.upload(&rand_vec(9 * 48, 14, 1.0), &[9, 48]).unwrap()).unwrap();
        chunked.matmul(&dy, &p).unwrap();
    }
    if b.dtype() == DType::F16 && b.activation_dtype() == DType::F32 {
        for bytes in [usize::MAX, 100 * 48 * 4] {
            let b = b.clone().with_max_binding_bytes(bytes);
            let w = b.upload(&rand_vec(320 * 48, 1, 0.1), &[320, 48]).unwrap();
            b.linear(&b.upload(&rand_vec(9 * 48, 2, 1.0), &[9, 48]).unwrap(), &w, None).unwrap();
            block_on(b.read(&b.matmul(&b.upload(&rand_vec(9 * 320, 3, 1.0), &[9, 320]).unwrap(), &w).unwrap())).unwrap();
        }
    }
}

crate::wgsl_exercise!("linear", ["matmul", "linear_tiled", "add_bias", "copy_columns", "take_columns", "cast"], exercise);
