#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use super::{AdamStep, Rule};
use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32, REDUCTION_F32};

/// The gradient of step `t` for a [rows, cols] tensor: random, with rows of zeros (rows ≡ 0 mod 5)
/// and rows far below ε (rows ≡ 2 mod 5), so every branch of max(v, ε²) is taken.
fn gradient(rows: usize, cols: usize, t: u64, eps: f64) -> Vec<f32> {
    let mut g = rand_vec(rows * cols, 100 + t as u32 + rows as u32, 1.0);
    for r in 0..rows {
        for x in &mut g[r * cols..(r + 1) * cols] {
            match r % 5 {
                0 => *x = 0.0,
                2 => *x *= (eps * 1e-2) as f32,
                _ => {}
            }
        }
    }
    g
}

/// Five steps of `rule` on a [rows, cols] parameter: the backend chains its own outputs, the
/// reference its own; every step's p, m, v (and rms) must match.
fn run_steps<B: Backend>(b: &B, rule: Rule, rows: usize, cols: usize, weight_decay: f64, eps: f64) {
    let n = rows * cols;
    let mut p_ref = rand_vec(n, 7 + rows as u32, 1.0);
    let (mut m_ref, mut v_ref) = (vec![0f32; n], vec![0f32; n]);
    let shape = [rows, cols];
    let (mut p, mut m, mut v) = (b.upload(&p_ref, &shape).unwrap(), b.upload(&m_ref, &shape).unwrap(), b.upload(&v_ref, &shape).unwrap());
    for t in 1..=5u64 {
        let step = AdamStep { rule, lr: 1e-3 * (1.0 + t as f64) / 2.0, beta1: 0.9, beta2: 0.98, eps, weight_decay, step: t };
        let g = gradient(rows, cols, t, eps);
        let rms_ref = reference::adam_step(&mut p_ref, &g, &mut m_ref, &mut v_ref, &step);
        let up = b.adam_step(&p, &b.upload(&g, &shape).unwrap(), &m, &v, &step).unwrap();
        let what = format!("adam_step {rule:?} [{rows}, {cols}] wd={weight_decay} eps={eps} t={t}");
        assert_eq!(b.shape(&up.param), &shape);
        assert_close(&format!("{what} p"), &block_on(b.read(&up.param)).unwrap(), &p_ref, KERNEL_F32);
        assert_close(&format!("{what} m"), &block_on(b.read(&up.m)).unwrap(), &m_ref, KERNEL_F32);
        assert_close(&format!("{what} v"), &block_on(b.read(&up.v)).unwrap(), &v_ref, KERNEL_F32);
        match (rule, &up.rms) {
            (Rule::AdamW, None) => {}
            (Rule::StableAdamW { .. }, Some(rms)) => {
                assert_eq!(b.shape(rms), &[1]);
                assert_close(&format!("{what} rms"), &block_on(b.read(rms)).unwrap(), &[rms_ref], REDUCTION_F32);
            }
            (_, rms) => panic!("{what}: rms is {}", if rms.is_some() { "present" } else { "missing" }),
        }
        (p, m, v) = (up.param, up.m, up.v);
    }
}

fn adamw_steps<B: Backend>(b: &B) {
    for wd in [0.0, 1e-2] {
        run_steps(b, Rule::AdamW, 1, 1, wd, 1e-8);
        run_steps(b, Rule::AdamW, 37, 13, wd, 1e-8);
        run_steps(b, Rule::AdamW, 3000, 7, wd, 1e-6);
    }
}

fn stable_adamw_steps<B: Backend>(b: &B) {
    let rule = Rule::StableAdamW { max_lr: 2e-3 };
    for wd in [0.0, 1e-2] {
        run_steps(b, rule, 1, 1, wd, 1e-8);
        run_steps(b, rule, 37, 13, wd, 1e-8);
        // 21,000 values: several partial sums of the RMS.
        run_steps(b, rule, 3000, 7, wd, 1e-6);
    }
    // A one-row tensor whose only row is zero: rms 0, η = lr, only the decay moves p.
    run_steps(b, rule, 1, 300, 1e-2, 1e-8);
}

fn adam_step_rejects_mismatch<B: Backend>(b: &B) {
    let p = b.upload(&[0.0; 6], &[2, 3]).unwrap();
    let g = b.upload(&[0.0; 6], &[3, 2]).unwrap();
    let step = AdamStep { rule: Rule::AdamW, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.0, step: 1 };
    assert!(b.adam_step(&p, &g, &p, &p, &step).is_err());
}

crate::training_backend_tests!(adamw_steps, stable_adamw_steps, adam_step_rejects_mismatch);

/// A parameter in row chunks (ModernBERT-base's embedding table on a 128 MiB-binding device) is
/// updated part by part, with one RMS over the whole tensor.
#[test]
fn wgpu_training_chunked_adam_step() {
    use crate::gpu::GpuBackend;
    let (rows, cols) = (320, 48);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(100 * cols * 4);
    for rule in [Rule::AdamW, Rule::StableAdamW { max_lr: 2e-3 }] {
        let mut p_ref = rand_vec(rows * cols, 3, 1.0);
        let (mut m_ref, mut v_ref) = (rand_vec(rows * cols, 4, 0.1), rand_vec(rows * cols, 5, 0.01).iter().map(|x| x.abs()).collect::<Vec<_>>());
        let g = gradient(rows, cols, 3, 1e-8);
        let shape = [rows, cols];
        let up_in = |x: &[f32]| gpu.upload(x, &shape).unwrap();
        let (p, gt, m, v) = (up_in(&p_ref), up_in(&g), up_in(&m_ref), up_in(&v_ref));
        assert_eq!(p.parts.len(), 4);
        let step = AdamStep { rule, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 1e-2, step: 3 };
        let rms_ref = reference::adam_step(&mut p_ref, &g, &mut m_ref, &mut v_ref, &step);
        let up = gpu.adam_step(&p, &gt, &m, &v, &step).unwrap();
        assert_eq!(up.param.parts.len(), 4);
        assert_close("chunked adam_step p", &block_on(gpu.read(&up.param)).unwrap(), &p_ref, KERNEL_F32);
        assert_close("chunked adam_step m", &block_on(gpu.read(&up.m)).unwrap(), &m_ref, KERNEL_F32);
        assert_close("chunked adam_step v", &block_on(gpu.read(&up.v)).unwrap(), &v_ref, KERNEL_F32);
        if let Some(rms) = &up.rms {
            assert_close("chunked adam_step rms", &block_on(gpu.read(rms)).unwrap(), &[rms_ref], REDUCTION_F32);
        }
    }
}

/// Both update rules on a parameter in row chunks (training backends only).
fn exercise(b: &crate::GpuBackend) {
    if !crate::testing::trains(b) {
        return;
    }
    let chunked = b.clone().with_max_binding_bytes(100 * 48 * 4);
    let p = chunked.upload(&rand_vec(320 * 48, 12, 1.0), &[320, 48]).unwrap();
    let g = chunked.add(&p, &p).unwrap();
    let zeros = chunked.upload(&vec![0.0; 320 * 48], &[320, 48]).unwrap();
    for rule in [Rule::AdamW, Rule::StableAdamW { max_lr: 1e-3 }] {
        let step = AdamStep { rule, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 1e-2, step: 1 };
        let up = chunked.adam_step(&p, &g, &zeros, &zeros, &step).unwrap();
        block_on(chunked.read(&up.param)).unwrap();
    }
}

crate::wgsl_exercise!("optim", ["adamw", "stable_moments", "stable_rms", "stable_params"], exercise);
