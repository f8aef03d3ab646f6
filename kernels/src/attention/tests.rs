use crate::backend::Backend;
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
    // Mesa 25 (see .ci/run); `cargo run -p runtime --bin runtime-cli -- info` shows the driver.
    check(b, &[488], 1, 64, None, 1.0);
    check(b, &[1000], 1, 48, None, 1.0);
}

fn attention_sharp_scores<B: Backend>(b: &B) {
    // Large scores: the online softmax must rescale without overflow.
    check(b, &[100, 37], 2, 16, None, 6.0);
    check(b, &[100, 37], 2, 16, Some(8), 6.0);
}

crate::backend_tests!(attention_tiny_lengths, attention_window_edges, attention_head_dim_64, attention_many_key_tiles, attention_sharp_scores);
