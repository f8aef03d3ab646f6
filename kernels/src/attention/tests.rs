#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, cu_seqlens, rand_for};
use crate::tolerance::assert_close;

fn check<B: Backend>(b: &B, lengths: &[usize], nh: usize, hd: usize, window: Option<usize>, scale: f32) {
    let cu = cu_seqlens(lengths);
    let t = *cu.last().unwrap() as usize;
    let h = nh * hd;
    // For bf16 backends the inputs are bf16 values (as a bf16 model's activations would be):
    // the test then measures the rounding of the probabilities and of q·scale only.
    let qkv = rand_for(b, t * 3 * h, 7 + t as u32 * 31 + hd as u32, scale);
    let (out_ref, lse_ref) = reference::attention(&qkv, &cu, nh, hd, window);
    let (out, lse) = b.attention(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &b.seqs(&cu).unwrap(), nh, window).unwrap();
    assert_eq!(b.shape(&out), &[t, h]);
    assert_eq!(b.shape(&lse), &[t, nh]);
    let what = format!("attention {lengths:?} nh={nh} hd={hd} window={window:?}");
    let tol = crate::tolerance::attention(b.dtype());
    assert_close(&format!("{what} out"), &block_on(b.read(&out)).unwrap(), &out_ref, tol);
    assert_close(&format!("{what} lse"), &block_on(b.read(&lse)).unwrap(), &lse_ref, tol);
}

fn attention_tiny_lengths<B: Backend>(b: &B) {
    for window in [None, Some(4)] {
        check(b, &[1], 2, 12, window, 1.0);
        check(b, &[2], 2, 12, window, 1.0);
        check(b, &[1, 2, 3], 4, 12, window, 1.0);
    }
}

fn attention_window_edges<B: Backend>(b: &B) {
    // Sequences shorter than, equal to and longer than the window, around the query-block size
    // (64) and the key tile, mixed in one batch.
    let lengths = [4, 5, 8, 9, 63, 64, 65, 129, 200];
    check(b, &lengths, 2, 12, Some(4), 2.0);
    check(b, &lengths, 2, 12, None, 2.0);
    check(b, &[64, 65, 128, 129, 130, 300], 1, 64, Some(64), 1.0);
}

fn attention_head_dim_64<B: Backend>(b: &B) {
    check(b, &[40, 27, 13], 3, 64, None, 1.0);
    check(b, &[513], 2, 64, Some(64), 1.0);
    check(b, &[513, 3], 2, 64, None, 1.0);
}

fn attention_many_key_tiles<B: Backend>(b: &B) {
    // Pinned: Mesa 22.3's lavapipe (Debian 12's) computes this wrong (16+ key tiles at hd = 64
    // lose part of the last tile); Mesa 25's is right, and so is every other backend. CI runs on
    // Mesa 25 (see .ci/run); `cargo run -p runtime-cli -- info` shows the driver.
    check(b, &[488], 1, 64, None, 1.0);
    check(b, &[1000], 1, 48, None, 1.0);
}

fn attention_sharp_scores<B: Backend>(b: &B) {
    // Large scores: the online softmax must rescale without overflow.
    check(b, &[100, 37], 2, 16, None, 6.0);
    check(b, &[100, 37], 2, 16, Some(8), 6.0);
}

crate::backend_tests!(attention_tiny_lengths, attention_window_edges, attention_head_dim_64, attention_many_key_tiles, attention_sharp_scores);

// ---- Training ----

/// The backward against the reference, given the reference forward's out and lse (the saved
/// activations), so that only the backward kernels are measured.
fn check_backward<B: Backend>(b: &B, lengths: &[usize], nh: usize, hd: usize, window: Option<usize>, scale: f32) {
    let cu = cu_seqlens(lengths);
    let t = *cu.last().unwrap() as usize;
    let h = nh * hd;
    let qkv = crate::testing::rand_vec(t * 3 * h, 11 + t as u32 * 17 + hd as u32, scale);
    let dout = crate::testing::rand_vec(t * h, 12 + t as u32 + nh as u32, 1.0);
    let (out, lse) = reference::attention(&qkv, &cu, nh, hd, window);
    let expected = reference::attention_backward(&qkv, &cu, nh, hd, window, &dout);
    let dqkv = b
        .attention_backward(
            &b.upload(&qkv, &[t, 3 * h]).unwrap(),
            &b.upload(&out, &[t, h]).unwrap(),
            &b.upload(&lse, &[t, nh]).unwrap(),
            &b.upload(&dout, &[t, h]).unwrap(),
            &b.seqs(&cu).unwrap(),
            nh,
            window,
        )
        .unwrap();
    assert_eq!(b.shape(&dqkv), &[t, 3 * h]);
    let what = format!("attention_backward {lengths:?} nh={nh} hd={hd} window={window:?}");
    assert_close(&what, &block_on(b.read(&dqkv)).unwrap(), &expected, crate::tolerance::REDUCTION_F32);
}

fn attention_backward_tiny_lengths<B: Backend>(b: &B) {
    for window in [None, Some(4)] {
        check_backward(b, &[1], 2, 12, window, 1.0);
        check_backward(b, &[2], 2, 12, window, 1.0);
        check_backward(b, &[1, 2, 3], 4, 12, window, 1.0);
    }
}

fn attention_backward_mixed_batches<B: Backend>(b: &B) {
    // Sequences of 1, 13, 70 and 200 tokens: one and several 64-row blocks, partial tiles.
    let lengths = [1, 13, 70, 200];
    for window in [None, Some(4), Some(64)] {
        check_backward(b, &lengths, 4, 12, window, 1.0);
        check_backward(b, &lengths, 2, 64, window, 1.0);
    }
    check_backward(b, &[200, 13], 3, 64, None, 1.0);
    // Many key and query tiles at hd 64 (17 tiles of 32 rows per sweep).
    check_backward(b, &[513], 1, 64, None, 1.0);
}

fn attention_backward_window_edges<B: Backend>(b: &B) {
    // Sequences shorter than, equal to and longer than the window, around the block size (64)
    // and the tiles (64 rows at hd 12, 32 at hd 64).
    check_backward(b, &[4, 5, 8, 9, 63, 64, 65, 129], 2, 12, Some(4), 1.0);
    check_backward(b, &[31, 32, 33, 64, 65, 130], 1, 64, Some(64), 1.0);
    check_backward(b, &[97, 3], 2, 64, Some(1), 1.0);
}

fn attention_backward_sharp_scores<B: Backend>(b: &B) {
    // Large scores: probabilities near 0 and 1, recomputed from the saved lse.
    check_backward(b, &[100, 37], 2, 16, None, 3.0);
    check_backward(b, &[100, 37], 2, 16, Some(8), 3.0);
}

fn attention_backward_rejects_mismatch<B: Backend>(b: &B) {
    let seqs = b.seqs(&cu_seqlens(&[3])).unwrap();
    let qkv = b.upload(&[0.0; 3 * 24], &[3, 24]).unwrap();
    let o = b.upload(&[0.0; 24], &[3, 8]).unwrap();
    let lse = b.upload(&[0.0; 6], &[3, 2]).unwrap();
    assert!(b.attention_backward(&qkv, &o, &lse, &o, &seqs, 2, None).is_ok());
    assert!(b.attention_backward(&qkv, &o, &b.upload(&[0.0; 3], &[3, 1]).unwrap(), &o, &seqs, 2, None).is_err(), "lse of the wrong head count");
    assert!(b.attention_backward(&qkv, &o, &lse, &b.upload(&[0.0; 21], &[3, 7]).unwrap(), &seqs, 2, None).is_err(), "dout of the wrong width");
    assert!(b.attention_backward(&qkv, &o, &lse, &o, &b.seqs(&cu_seqlens(&[4])).unwrap(), 2, None).is_err(), "token counts differ");
}

crate::training_backend_tests!(
    attention_backward_tiny_lengths,
    attention_backward_mixed_batches,
    attention_backward_window_edges,
    attention_backward_sharp_scores,
    attention_backward_rejects_mismatch
);


/// f16 activations: q, k, v and the output stored in f16, scores and softmax in f32.
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    for (nh, hd) in [(4usize, 12usize), (2, 64)] {
        let h = nh * hd;
        let cu = cu_seqlens(&[1, 5, 70, 130]);
        let t = *cu.last().unwrap() as usize;
        let qkv = crate::testing::representable(DType::F16, crate::testing::rand_vec(t * 3 * h, 14, 1.0));
        for window in [None, Some(4), Some(64)] {
            let (o, _) = b.attention(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &b.seqs(&cu).unwrap(), nh, window).unwrap();
            let (o_ref, _) = reference::attention(&qkv, &cu, nh, hd, window);
            assert_close(&format!("attention hd={hd} window={window:?}"), &block_on(b.read(&o)).unwrap(), &o_ref, F16_ACTIVATION_OP);
        }
    }
}

/// Global and windowed attention at head dims 12 and 64, and (training) both backwards.
fn exercise(b: &crate::GpuBackend) {
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let seqs = b.seqs(&cu).unwrap();
        let qkv = b.upload(&crate::testing::rand_vec(t * 3 * h, 4, 1.0), &[t, 3 * h]).unwrap();
        for window in [None, Some(4)] {
            let (out, lse) = b.attention(&qkv, &seqs, nh, window).unwrap();
            if crate::testing::trains(b) {
                let dout = b.upload(&crate::testing::rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
                b.attention_backward(&qkv, &out, &lse, &dout, &seqs, nh, window).unwrap();
            }
        }
    }
}

crate::wgsl_exercise!("attention", ["attention", "attention_delta", "attention_dkv", "attention_dq"], exercise);
