#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32};

fn add_matches<B: Backend>(b: &B) {
    for &n in &[1usize, 255, 256, 257, 100_003] {
        let x = rand_vec(n, 1, 2.0);
        let y = rand_vec(n, 2, 2.0);
        let out = b.add(&b.upload(&x, &[n]).unwrap(), &b.upload(&y, &[n]).unwrap()).unwrap();
        assert_close("add", &block_on(b.read(&out)).unwrap(), &reference::add(&x, &y), KERNEL_F32);
    }
    assert!(b.add(&b.upload(&[0.0; 4], &[4]).unwrap(), &b.upload(&[0.0; 4], &[2, 2]).unwrap()).is_err());
}

fn add_beyond_one_grid_dimension<B: Backend>(b: &B) {
    // More than 65,535 workgroups of 256: the GPU grid must spread over two dimensions.
    let n = 65_535 * 256 + 777;
    let x = rand_vec(n, 11, 1.0);
    let y = rand_vec(n, 12, 1.0);
    let out = block_on(b.read(&b.add(&b.upload(&x, &[n]).unwrap(), &b.upload(&y, &[n]).unwrap()).unwrap())).unwrap();
    assert_close("add (2-D grid)", &out, &reference::add(&x, &y), KERNEL_F32);
}

fn gelu_matches<B: Backend>(b: &B) {
    let mut x = rand_vec(4099, 3, 6.0);
    x.extend_from_slice(&[0.0, -0.0, 1e-6, -1e-6, 10.0, -10.0, 30.0, -30.0]);
    let n = x.len();
    let out = b.gelu(&b.upload(&x, &[n]).unwrap()).unwrap();
    assert_close("gelu", &block_on(b.read(&out)).unwrap(), &reference::gelu(&x), KERNEL_F32);
}

fn tanh_matches<B: Backend>(b: &B) {
    let mut x = rand_vec(4099, 5, 4.0);
    x.extend_from_slice(&[0.0, -0.0, 1e-7, -1e-7, 10.0, -10.0, 50.0, -50.0, 1e30, -1e30]);
    let n = x.len();
    let out = block_on(b.read(&b.tanh(&b.upload(&x, &[n]).unwrap()).unwrap())).unwrap();
    assert!(out.iter().all(|v| v.is_finite() && v.abs() <= 1.0), "tanh must stay in [-1, 1]");
    assert_close("tanh", &out, &reference::tanh(&x), KERNEL_F32);
}

fn geglu_matches<B: Backend>(b: &B) {
    for &(rows, i) in &[(1usize, 1usize), (3, 72), (17, 1152), (130, 5)] {
        let u = rand_vec(rows * 2 * i, rows as u32, 4.0);
        let out = b.geglu(&b.upload(&u, &[rows, 2 * i]).unwrap()).unwrap();
        assert_eq!(b.shape(&out), &[rows, i]);
        assert_close(&format!("geglu rows={rows} I={i}"), &block_on(b.read(&out)).unwrap(), &reference::geglu(&u, i), KERNEL_F32);
    }
    assert!(b.geglu(&b.upload(&[0.0; 6], &[2, 3]).unwrap()).is_err());
}

fn slice_and_concat_rows<B: Backend>(b: &B) {
    let x = rand_vec(10 * 3, 9, 1.0);
    let t = b.upload(&x, &[10, 3]).unwrap();
    let parts = [b.slice_rows(&t, 0, 4).unwrap(), b.slice_rows(&t, 4, 5).unwrap(), b.slice_rows(&t, 5, 10).unwrap()];
    assert_close("slice_rows", &block_on(b.read(&parts[1])).unwrap(), &x[12..15], KERNEL_F32);
    assert_eq!(b.shape(&parts[2]), &[5, 3]);
    let back = b.concat_rows(&parts).unwrap();
    assert_close("concat_rows", &block_on(b.read(&back)).unwrap(), &x, KERNEL_F32);
    assert!(b.slice_rows(&t, 3, 11).is_err());
    assert!(b.concat_rows(&[t.clone(), b.upload(&[0.0; 4], &[2, 2]).unwrap()]).is_err());
}

crate::backend_tests!(add_matches, add_beyond_one_grid_dimension, gelu_matches, tanh_matches, geglu_matches, slice_and_concat_rows);

// ---- Training ----

use crate::tolerance::REDUCTION_F32;

fn scale_matches<B: Backend>(b: &B) {
    for &(n, s) in &[(1usize, 0.5f32), (255, -3.0), (257, 1e-3), (100_003, 7.25)] {
        let x = rand_vec(n, n as u32, 2.0);
        let out = b.scale(&b.upload(&x, &[n]).unwrap(), s).unwrap();
        assert_eq!(b.shape(&out), &[n]);
        let expected: Vec<f32> = x.iter().map(|v| v * s).collect();
        assert_close(&format!("scale n={n} s={s}"), &block_on(b.read(&out)).unwrap(), &expected, KERNEL_F32);
    }
}

fn tanh_backward_matches<B: Backend>(b: &B) {
    let n = 1031;
    let y = reference::tanh(&rand_vec(n, 15, 3.0));
    let dy = rand_vec(n, 16, 1.0);
    let out = b.tanh_backward(&b.upload(&y, &[n]).unwrap(), &b.upload(&dy, &[n]).unwrap()).unwrap();
    assert_close("tanh_backward", &block_on(b.read(&out)).unwrap(), &reference::tanh_backward(&y, &dy), KERNEL_F32);
    assert!(b.tanh_backward(&b.upload(&[0.0; 4], &[4]).unwrap(), &b.upload(&[0.0; 3], &[3]).unwrap()).is_err());
}

fn gelu_backward_matches<B: Backend>(b: &B) {
    let mut x = rand_vec(4099, 13, 6.0);
    x.extend_from_slice(&[0.0, -0.0, 1e-6, -1e-6, 10.0, -10.0, 30.0, -30.0]);
    let n = x.len();
    let dy = rand_vec(n, 14, 2.0);
    let out = b.gelu_backward(&b.upload(&x, &[n]).unwrap(), &b.upload(&dy, &[n]).unwrap()).unwrap();
    assert_close("gelu_backward", &block_on(b.read(&out)).unwrap(), &reference::gelu_backward(&x, &dy), KERNEL_F32);
    assert!(b.gelu_backward(&b.upload(&[0.0; 4], &[4]).unwrap(), &b.upload(&[0.0; 3], &[3]).unwrap()).is_err());
}

fn geglu_backward_matches<B: Backend>(b: &B) {
    for &(rows, i) in &[(1usize, 1usize), (3, 72), (17, 1152), (130, 5)] {
        let u = rand_vec(rows * 2 * i, rows as u32 + 20, 4.0);
        let dy = rand_vec(rows * i, rows as u32 + 21, 1.0);
        let du = b.geglu_backward(&b.upload(&u, &[rows, 2 * i]).unwrap(), &b.upload(&dy, &[rows, i]).unwrap()).unwrap();
        assert_eq!(b.shape(&du), &[rows, 2 * i]);
        assert_close(&format!("geglu_backward rows={rows} I={i}"), &block_on(b.read(&du)).unwrap(), &reference::geglu_backward(&u, &dy, i), KERNEL_F32);
    }
    assert!(b.geglu_backward(&b.upload(&[0.0; 8], &[2, 4]).unwrap(), &b.upload(&[0.0; 6], &[2, 3]).unwrap()).is_err());
}

fn sum_rows_matches<B: Backend>(b: &B) {
    // Row counts around the 256-row block, several reduction stages (70,000 rows: 274 blocks, then
    // 2, then 1), columns around the 64-column block.
    for &(n, c) in &[(1usize, 1usize), (1, 300), (7, 3), (255, 65), (257, 64), (1000, 129), (70_000, 3)] {
        let x = rand_vec(n * c, (n + c) as u32, 1.0);
        let out = b.sum_rows(&b.upload(&x, &[n, c]).unwrap()).unwrap();
        assert_eq!(b.shape(&out), &[c]);
        // The bias gradient of a linear layer is the column sum of dy.
        let (_, _, expected) = reference::linear_backward(&vec![0.0; n], &vec![0.0; c], &x, 1);
        assert_close(&format!("sum_rows [{n}, {c}]"), &block_on(b.read(&out)).unwrap(), &expected, REDUCTION_F32);
    }
}

/// Σ x² in f64 (the oracle of `sum_squares`: one line, no reference function needed).
fn sum_squares_f64(x: &[f32]) -> f32 {
    x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() as f32
}

fn sum_squares_matches<B: Backend>(b: &B) {
    for &n in &[1usize, 4095, 4096, 4097, 1_000_003] {
        let x = rand_vec(n, n as u32 + 5, 1.0);
        let out = b.sum_squares(&b.upload(&x, &[n]).unwrap()).unwrap();
        assert_eq!(b.shape(&out), &[1, 1]);
        let expected = sum_squares_f64(&x);
        // A sum of n terms of order 1/3: relative tolerance on the total.
        assert_close(&format!("sum_squares n={n}"), &block_on(b.read(&out)).unwrap(), &[expected], REDUCTION_F32);
    }
    let m = rand_vec(37 * 5, 9, 3.0);
    let out = b.sum_squares(&b.upload(&m, &[37, 5]).unwrap()).unwrap();
    assert_close("sum_squares [37, 5]", &block_on(b.read(&out)).unwrap(), &[sum_squares_f64(&m)], REDUCTION_F32);
}

fn reductions_are_deterministic<B: Backend>(b: &B) {
    let x = rand_vec(70_000 * 3, 99, 1.0);
    let t = b.upload(&x, &[70_000, 3]).unwrap();
    let first = (block_on(b.read(&b.sum_rows(&t).unwrap())).unwrap(), block_on(b.read(&b.sum_squares(&t).unwrap())).unwrap());
    for _ in 0..3 {
        let again = (block_on(b.read(&b.sum_rows(&t).unwrap())).unwrap(), block_on(b.read(&b.sum_squares(&t).unwrap())).unwrap());
        assert_eq!(again, first, "a reduction must give the same bits every run");
    }
}

crate::training_backend_tests!(scale_matches, tanh_backward_matches, gelu_backward_matches, geglu_backward_matches, sum_rows_matches, sum_squares_matches, reductions_are_deterministic);

/// Tensors in row chunks (a gradient as large as ModernBERT-base's embedding table) are scaled,
/// added and squared-summed part by part.
#[test]
fn wgpu_training_chunked_elementwise() {
    use crate::gpu::GpuBackend;
    let (v, h) = (320, 48);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(100 * h * 4);
    let a = rand_vec(v * h, 31, 1.0);
    let c = rand_vec(v * h, 32, 1.0);
    let (at, ct) = (gpu.upload(&a, &[v, h]).unwrap(), gpu.upload(&c, &[v, h]).unwrap());
    assert_eq!(at.parts.len(), 4);
    let scaled = gpu.scale(&at, -0.5).unwrap();
    assert_eq!(scaled.parts.len(), 4);
    assert_close("chunked scale", &block_on(gpu.read(&scaled)).unwrap(), &a.iter().map(|x| x * -0.5).collect::<Vec<_>>(), KERNEL_F32);
    let sum = gpu.add(&at, &ct).unwrap();
    assert_close("chunked add", &block_on(gpu.read(&sum)).unwrap(), &reference::add(&a, &c), KERNEL_F32);
    let ss = gpu.sum_squares(&at).unwrap();
    assert_close("chunked sum_squares", &block_on(gpu.read(&ss)).unwrap(), &[sum_squares_f64(&a)], REDUCTION_F32);
    let whole = crate::testing::gpu().upload(&a, &[v, h]).unwrap();
    assert!(gpu.add(&at, &whole).is_err(), "different row chunks are refused");
}

/// f32 → f16 on the device gives one of the two f16 values nearest each input (WGSL's rule), for
/// normal and subnormal magnitudes, exact values, halfway points and the largest finite f16.
#[test]
fn wgpu_cast_to_f16_rounds_to_a_neighbour() {
    use half::f16;
    let gpu = crate::testing::gpu_f16();
    let mut x = rand_vec(1001, 7, 3.0); // odd: the f16 buffer is padded to 4 bytes
    x.extend([0.0, -0.0, 1.0, 65504.0, -65504.0, 6.0e-8, 3.0e-5, 1.0 + 1.0 / 2048.0, 1.0 + 3.0 / 2048.0]);
    let t = gpu.upload(&x, &[x.len()]).unwrap();
    let h = super::cast(&gpu, &t, crate::backend::DType::F16).unwrap();
    assert_eq!(h.dtype, crate::backend::DType::F16);
    let got = block_on(gpu.read(&h)).unwrap();
    for (i, (&v, &g)) in x.iter().zip(&got).enumerate() {
        let near = f16::from_f32(v);
        let n = near.to_f32();
        // The other neighbour lies on the far side of v from the nearest one.
        let other = [near.to_bits().wrapping_sub(1), near.to_bits().wrapping_add(1)].map(|b| f16::from_bits(b).to_f32());
        let ok = g == n || other.iter().any(|&o| g == o && (o - v) * (n - v) < 0.0);
        assert!(ok, "value {i}: {v} became {g}; nearest f16 is {n}");
    }
}


/// f16 activations: inputs and outputs stored in f16, arithmetic f32; row copies are exact.
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    assert_eq!(b.activation_dtype(), DType::F16);
    let half = |v| crate::testing::representable(DType::F16, v);
    let read = |t: &crate::gpu::GpuTensor| block_on(b.read(t)).unwrap();
    for (rows, h) in [(1usize, 1usize), (7, 63), (33, 96)] {
        let (x, y) = (half(rand_vec(rows * h, 1, 3.0)), half(rand_vec(rows * h, 2, 3.0)));
        let (xt, yt) = (b.upload(&x, &[rows, h]).unwrap(), b.upload(&y, &[rows, h]).unwrap());
        let what = format!("rows={rows} h={h}");
        assert_close(&format!("add {what}"), &read(&b.add(&xt, &yt).unwrap()), &half(reference::add(&x, &y)), F16_ACTIVATION_OP);
        assert_close(&format!("gelu {what}"), &read(&b.gelu(&xt).unwrap()), &reference::gelu(&x), F16_ACTIVATION_OP);
        assert_close(&format!("tanh {what}"), &read(&b.tanh(&xt).unwrap()), &reference::tanh(&x), F16_ACTIVATION_OP);
        let parts = [b.slice_rows(&xt, 0, rows / 2).unwrap(), b.slice_rows(&xt, rows / 2, rows).unwrap()];
        assert_eq!(read(&b.concat_rows(&parts).unwrap()), x, "slice and concat {what}");
    }
    let u = half(rand_vec(9 * 2 * 37, 5, 2.0));
    assert_close("geglu", &read(&b.geglu(&b.upload(&u, &[9, 74]).unwrap()).unwrap()), &reference::geglu(&u, 37), F16_ACTIVATION_OP);
}

/// The element-wise ops, rows sliced and concatenated, and (training) their backwards and scaling.
fn exercise(b: &crate::GpuBackend) {
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let x = b.upload(&rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
        let u = b.upload(&rand_vec(t * 2 * h, 6, 1.0), &[t, 2 * h]).unwrap();
        b.geglu(&u).unwrap();
        b.gelu(&x).unwrap();
        b.tanh(&x).unwrap();
        b.add(&x, &x).unwrap();
        let parts = [b.slice_rows(&x, 0, 3).unwrap(), b.slice_rows(&x, 3, t).unwrap()];
        b.concat_rows(&parts).unwrap();
        if crate::testing::trains(b) {
            b.scale(&x, 0.5).unwrap();
            b.gelu_backward(&x, &x).unwrap();
            b.tanh_backward(&x, &x).unwrap();
            b.geglu_backward(&u, &x).unwrap();
        }
    }
}

crate::wgsl_exercise!("elementwise", ["geglu", "gelu", "tanh", "add_kernel", "copy", "scale", "gelu_backward", "tanh_backward", "geglu_backward"], exercise);
