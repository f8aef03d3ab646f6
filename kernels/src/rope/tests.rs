#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use super::rope_tables;
use crate::backend::positions;
use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, cu_seqlens, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32};

fn check<B: Backend>(b: &B, lengths: &[usize], nh: usize, hd: usize, theta: f64) {
    let cu = cu_seqlens(lengths);
    let t = *cu.last().unwrap() as usize;
    let h = nh * hd;
    let qkv = rand_vec(t * 3 * h, t as u32 + hd as u32, 1.0);
    let p = lengths.iter().max().copied().unwrap() + 3;
    let (cos, sin) = rope_tables(theta, hd, p);
    let expected = reference::rope(&qkv, &positions(&cu), &cos, &sin, nh, hd);
    let seqs = b.seqs(&cu).unwrap();
    let y = b
        .rope(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &seqs, &b.upload(&cos, &[p, hd / 2]).unwrap(), &b.upload(&sin, &[p, hd / 2]).unwrap(), nh)
        .unwrap();
    assert_close(&format!("rope {lengths:?} nh={nh} hd={hd}"), &block_on(b.read(&y)).unwrap(), &expected, KERNEL_F32);
}

fn rope_mixed_batches<B: Backend>(b: &B) {
    check(b, &[1], 4, 12, 10_000.0);
    check(b, &[2], 4, 12, 160_000.0);
    check(b, &[40, 27, 13], 4, 12, 160_000.0);
    check(b, &[1, 130, 2, 64], 2, 64, 10_000.0);
}

fn rope_refuses_short_tables<B: Backend>(b: &B) {
    let cu = cu_seqlens(&[10]);
    let (cos, sin) = rope_tables(10_000.0, 4, 5);
    let r = b.rope(&b.upload(&vec![0.0; 10 * 12], &[10, 12]).unwrap(), &b.seqs(&cu).unwrap(), &b.upload(&cos, &[5, 2]).unwrap(), &b.upload(&sin, &[5, 2]).unwrap(), 1);
    assert!(r.is_err());
}

#[test]
fn tables_follow_the_formula() {
    let (cos, sin) = rope_tables(10_000.0, 8, 3);
    // position 0: angle 0; position 2, j = 1: 2 / 10000^(2/8) = 0.2
    assert_eq!(&cos[..4], &[1.0; 4]);
    assert!((cos[2 * 4 + 1] - 0.2f32.cos()).abs() < 1e-7);
    assert!((sin[2 * 4 + 1] - 0.2f32.sin()).abs() < 1e-7);
}

crate::backend_tests!(rope_mixed_batches, rope_refuses_short_tables);

// ---- Training ----

fn check_backward<B: Backend>(b: &B, lengths: &[usize], nh: usize, hd: usize, theta: f64) {
    let cu = cu_seqlens(lengths);
    let t = *cu.last().unwrap() as usize;
    let h = nh * hd;
    let dy = rand_vec(t * 3 * h, 3 + t as u32 + hd as u32, 1.0);
    let p = lengths.iter().max().copied().unwrap() + 1;
    let (cos, sin) = rope_tables(theta, hd, p);
    let expected = reference::rope_backward(&dy, &positions(&cu), &cos, &sin, nh, hd);
    let seqs = b.seqs(&cu).unwrap();
    let dx = b
        .rope_backward(&b.upload(&dy, &[t, 3 * h]).unwrap(), &seqs, &b.upload(&cos, &[p, hd / 2]).unwrap(), &b.upload(&sin, &[p, hd / 2]).unwrap(), nh)
        .unwrap();
    assert_eq!(b.shape(&dx), &[t, 3 * h]);
    assert_close(&format!("rope_backward {lengths:?} nh={nh} hd={hd}"), &block_on(b.read(&dx)).unwrap(), &expected, KERNEL_F32);
}

fn rope_backward_mixed_batches<B: Backend>(b: &B) {
    check_backward(b, &[1], 4, 12, 10_000.0);
    check_backward(b, &[2], 4, 12, 160_000.0);
    check_backward(b, &[40, 27, 13], 4, 12, 160_000.0);
    check_backward(b, &[1, 130, 2, 64], 2, 64, 10_000.0);
    check_backward(b, &[1000], 1, 2, 10_000.0);
}

fn rope_backward_inverts_rope<B: Backend>(b: &B) {
    // The rotation is orthogonal: its backward undoes the forward.
    let cu = cu_seqlens(&[5, 70]);
    let (nh, hd, t) = (2, 16, 75);
    let x = rand_vec(t * 3 * nh * hd, 77, 1.0);
    let (cos, sin) = rope_tables(10_000.0, hd, 70);
    let (cos, sin) = (b.upload(&cos, &[70, hd / 2]).unwrap(), b.upload(&sin, &[70, hd / 2]).unwrap());
    let seqs = b.seqs(&cu).unwrap();
    let y = b.rope(&b.upload(&x, &[t, 3 * nh * hd]).unwrap(), &seqs, &cos, &sin, nh).unwrap();
    let back = b.rope_backward(&y, &seqs, &cos, &sin, nh).unwrap();
    assert_close("rope_backward(rope(x))", &block_on(b.read(&back)).unwrap(), &x, KERNEL_F32);
    assert!(b.rope_backward(&y, &b.seqs(&cu_seqlens(&[5, 71])).unwrap(), &cos, &sin, nh).is_err(), "tables too short / token count differs");
}

crate::training_backend_tests!(rope_backward_mixed_batches, rope_backward_inverts_rope);


/// f16 activations: the tables are activations too (uploaded in f16, as the model uploads them).
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    let half = |v| crate::testing::representable(DType::F16, v);
    for (nh, hd) in [(4usize, 12usize), (2, 64)] {
        let h = nh * hd;
        let cu = cu_seqlens(&[1, 5, 70, 130]);
        let t = *cu.last().unwrap() as usize;
        let qkv = half(rand_vec(t * 3 * h, 14, 1.0));
        let (cos, sin) = rope_tables(10_000.0, hd, 256);
        let (cos, sin) = (half(cos), half(sin));
        let rotated = b.rope(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &b.seqs(&cu).unwrap(), &b.upload(&cos, &[256, hd / 2]).unwrap(), &b.upload(&sin, &[256, hd / 2]).unwrap(), nh).unwrap();
        let expected = reference::rope(&qkv, &positions(&cu), &cos, &sin, nh, hd);
        assert_close(&format!("rope hd={hd}"), &block_on(b.read(&rotated)).unwrap(), &expected, F16_ACTIVATION_OP);
    }
}

/// RoPE at head dims 12 and 64, and (training) its backward.
fn exercise(b: &crate::GpuBackend) {
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let seqs = b.seqs(&cu).unwrap();
        let qkv = b.upload(&rand_vec(t * 3 * h, 4, 1.0), &[t, 3 * h]).unwrap();
        let (cos, sin) = rope_tables(10_000.0, hd, 256);
        let (cos, sin) = (b.upload(&cos, &[256, hd / 2]).unwrap(), b.upload(&sin, &[256, hd / 2]).unwrap());
        b.rope(&qkv, &seqs, &cos, &sin, nh).unwrap();
        if crate::testing::trains(b) {
            b.rope_backward(&qkv, &seqs, &cos, &sin, nh).unwrap();
        }
    }
}

crate::wgsl_exercise!("rope", ["rope"], exercise);
