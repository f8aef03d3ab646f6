use crate::prelude::*;
use crate::testing::{block_on, rand_vec};

/// Column sums (bias gradients), Σx² whole and in row chunks, and the fills they start from
/// (training backends only).
fn exercise(b: &crate::GpuBackend) {
    if !crate::testing::trains(b) {
        return;
    }
    let x = b.upload(&rand_vec(333 * 48, 1, 1.0), &[333, 48]).unwrap();
    b.sum_rows(&x).unwrap();
    b.sum_rows(&b.upload(&[], &[0, 48]).unwrap()).unwrap();
    block_on(b.read(&b.sum_squares(&x).unwrap())).unwrap();
    let chunked = b.clone().with_max_binding_bytes(100 * 48 * 4);
    block_on(chunked.read(&chunked.sum_squares(&chunked.upload(&rand_vec(320 * 48, 2, 1.0), &[320, 48]).unwrap()).unwrap())).unwrap();
}

crate::wgsl_exercise!("reduce", ["column_sum", "flat_sum", "fill"], exercise);
