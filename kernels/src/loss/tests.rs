#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, rand_ids, rand_vec};
use crate::tolerance::{assert_close, REDUCTION_F32};

fn cross_entropy_rows<B: Backend>(b: &B) {
    for &(n, c, scale) in &[(1usize, 5usize, 1.0f32), (19, 320, 6.0), (3, 50_368, 10.0), (7, 1, 1.0)] {
        let logits = rand_vec(n * c, c as u32, scale);
        let labels = rand_ids(n, n as u32, c as u32);
        let y = b.cross_entropy(&b.upload(&logits, &[n, c]).unwrap(), &b.upload_ids(&labels).unwrap()).unwrap();
        let labels_i64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let expected = reference::cross_entropy(&logits, &labels_i64, c, -100);
        assert_close(&format!("cross_entropy n={n} c={c}"), &block_on(b.read(&y)).unwrap(), &expected, REDUCTION_F32);
    }
    assert!(b.cross_entropy(&b.upload(&[0.0; 10], &[2, 5]).unwrap(), &b.upload_ids(&[1, 5]).unwrap()).is_err());
}

crate::backend_tests!(cross_entropy_rows);

// ---- Training ----

fn cross_entropy_backward_rows<B: Backend>(b: &B) {
    for &(n, c, spread, scale) in &[(1usize, 5usize, 1.0f32, 1.0f32), (19, 320, 6.0, 1.0 / 19.0), (3, 50_368, 10.0, 0.5), (7, 1, 1.0, 2.0), (300, 3, 30.0, 1.0)] {
        let logits = rand_vec(n * c, c as u32 + 1, spread);
        let labels = rand_ids(n, n as u32 + 1, c as u32);
        let d = b.cross_entropy_backward(&b.upload(&logits, &[n, c]).unwrap(), &b.upload_ids(&labels).unwrap(), scale).unwrap();
        assert_eq!(b.shape(&d), &[n, c]);
        let labels_i64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let expected = reference::cross_entropy_backward(&logits, &labels_i64, c, -100, scale);
        assert_close(&format!("cross_entropy_backward n={n} c={c}"), &block_on(b.read(&d)).unwrap(), &expected, REDUCTION_F32);
    }
    assert!(b.cross_entropy_backward(&b.upload(&[0.0; 10], &[2, 5]).unwrap(), &b.upload_ids(&[1, 5]).unwrap(), 1.0).is_err());
    assert!(b.cross_entropy_backward(&b.upload(&[0.0; 10], &[2, 5]).unwrap(), &b.upload_ids(&[1]).unwrap(), 1.0).is_err());
}

crate::training_backend_tests!(cross_entropy_backward_rows, label_rank_rows);

/// Label ranks against the reference, on random logits (vocabulary-sized rows included) and on
/// rows with ties (equal logits do not count against the label).
fn label_rank_rows<B: Backend>(b: &B) {
    for &(n, c, spread) in &[(1usize, 5usize, 1.0f32), (19, 320, 6.0), (3, 50_368, 10.0), (7, 1, 1.0), (300, 3, 30.0)] {
        let logits = rand_vec(n * c, c as u32 + 2, spread);
        let labels = rand_ids(n, n as u32 + 2, c as u32);
        let r = b.label_rank(&b.upload(&logits, &[n, c]).unwrap(), &b.upload_ids(&labels).unwrap()).unwrap();
        assert_eq!(b.shape(&r), &[n, 1]);
        let expected: Vec<f32> = reference::label_rank(&logits, &labels, c).into_iter().map(|v| v as f32).collect();
        assert_eq!(block_on(b.read(&r)).unwrap(), expected, "label_rank n={n} c={c}");
    }
    // Ties: [2, 2, 1, 3] → label 0 is beaten only by the 3; label 3 is top-1; label 2 is last.
    let t = b.upload(&[2.0, 2.0, 1.0, 3.0, 2.0, 2.0, 1.0, 3.0, 2.0, 2.0, 1.0, 3.0], &[3, 4]).unwrap();
    assert_eq!(block_on(b.read(&b.label_rank(&t, &b.upload_ids(&[0, 3, 2]).unwrap()).unwrap())).unwrap(), vec![1.0, 0.0, 3.0]);
    assert!(b.label_rank(&b.upload(&[0.0; 10], &[2, 5]).unwrap(), &b.upload_ids(&[1, 5]).unwrap()).is_err());
    assert!(b.label_rank(&b.upload(&[0.0; 10], &[2, 5]).unwrap(), &b.upload_ids(&[1]).unwrap()).is_err());
}


/// f16 activations: the logits stored in f16, the losses and ranks computed and kept in f32.
#[test]
fn f16_activations() {
    use crate::backend::DType;
    let b = crate::testing::gpu_f16_activations();
    let (n, c) = (7usize, 321usize);
    let logits = crate::testing::representable(DType::F16, rand_vec(n * c, 15, 3.0));
    let labels = rand_ids(n, 16, c as u32);
    let (lt, ids) = (b.upload(&logits, &[n, c]).unwrap(), b.upload_ids(&labels).unwrap());
    let labels64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let loss = block_on(b.read(&b.cross_entropy(&lt, &ids).unwrap())).unwrap();
    assert_close("cross_entropy", &loss, &reference::cross_entropy(&logits, &labels64, c, -100), REDUCTION_F32);
    let ranks: Vec<f32> = reference::label_rank(&logits, &labels, c).iter().map(|&r| r as f32).collect();
    assert_eq!(block_on(b.read(&b.label_rank(&lt, &ids).unwrap())).unwrap(), ranks, "label_rank");
}

/// Cross-entropy, and (training) its backward and the label ranks.
fn exercise(b: &crate::GpuBackend) {
    let logits = b.upload(&rand_vec(7 * 320, 9, 3.0), &[7, 320]).unwrap();
    let labels = b.upload_ids(&rand_ids(7, 10, 320)).unwrap();
    block_on(b.read(&b.cross_entropy(&logits, &labels).unwrap())).unwrap();
    if crate::testing::trains(b) {
        b.cross_entropy_backward(&logits, &labels, 1.0 / 7.0).unwrap();
        b.label_rank(&logits, &labels).unwrap();
    }
}

crate::wgsl_exercise!("loss", ["cross_entropy", "cross_entropy_backward", "label_rank"], exercise);
