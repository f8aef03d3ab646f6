use crate::backend::Backend;
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

crate::training_backend_tests!(cross_entropy_backward_rows);
