//! Every inference op of the GPU backend with f16 activations (`with_activations(F16)`: inputs
//! and outputs stored in f16, arithmetic in f32), against the plain-Rust reference on inputs
//! that f16 represents exactly, on awkward shapes: odd lengths (f16 buffers padded to 4 bytes),
//! head dims 12 and 64, windowed and global attention, a weight in row chunks.

use kernels::backend::{Backend, DType};
use kernels::reference;
use kernels::testing::{block_on, cu_seqlens, gpu_f16_activations, rand_ids, rand_vec, representable};
use kernels::tolerance::{assert_close, F16_ACTIVATION_OP, REDUCTION_F32};

fn half(v: Vec<f32>) -> Vec<f32> {
    representable(DType::F16, v)
}

fn read<B: Backend>(b: &B, t: &B::Tensor) -> Vec<f32> {
    block_on(b.read(t)).unwrap()
}

#[test]
fn elementwise_norms_and_rows() {
    let b = gpu_f16_activations();
    assert_eq!(b.activation_dtype(), DType::F16);
    for (rows, h) in [(1usize, 1usize), (7, 63), (33, 96)] {
        let x = half(rand_vec(rows * h, 1, 3.0));
        let y = half(rand_vec(rows * h, 2, 3.0));
        let w = half(rand_vec(h, 3, 1.5));
        let bias = half(rand_vec(h, 4, 0.5));
        let (xt, yt) = (b.upload(&x, &[rows, h]).unwrap(), b.upload(&y, &[rows, h]).unwrap());
        let (wt, bt) = (b.upload_weight(w.clone(), &[h]).unwrap(), b.upload_weight(bias.clone(), &[h]).unwrap());
        let what = format!("rows={rows} h={h}");
        let n = b.layer_norm(&xt, &wt, Some(&bt), 1e-5).unwrap();
        assert_close(&format!("layer_norm {what}"), &read(&b, &n), &reference::layer_norm(&x, &w, Some(&bias), 1e-5, h), F16_ACTIVATION_OP);
        // The sum is rounded to f16 before the norm reads it, as the unfused pair does (WGSL lets
        // f32 → f16 pick either neighbour, so the sums are compared within the tolerance).
        let (s, n) = b.add_layer_norm(&xt, &yt, &wt, None, 1e-5).unwrap();
        let s_ref = half(reference::add(&x, &y));
        assert_close(&format!("add_layer_norm sum {what}"), &read(&b, &s), &s_ref, F16_ACTIVATION_OP);
        assert_close(&format!("add_layer_norm {what}"), &read(&b, &n), &reference::layer_norm(&read(&b, &s), &w, None, 1e-5, h), F16_ACTIVATION_OP);
        assert_close(&format!("add {what}"), &read(&b, &b.add(&xt, &yt).unwrap()), &s_ref, F16_ACTIVATION_OP);
        assert_close(&format!("gelu {what}"), &read(&b, &b.gelu(&xt).unwrap()), &reference::gelu(&x), F16_ACTIVATION_OP);
        assert_close(&format!("tanh {what}"), &read(&b, &b.tanh(&xt).unwrap()), &reference::tanh(&x), F16_ACTIVATION_OP);
        // Rows: copies are exact.
        let parts = [b.slice_rows(&xt, 0, rows / 2).unwrap(), b.slice_rows(&xt, rows / 2, rows).unwrap()];
        assert_eq!(read(&b, &b.concat_rows(&parts).unwrap()), x, "slice and concat {what}");
        let picked: Vec<u32> = (0..rows as u32).rev().step_by(2).collect();
        let g = b.gather_rows(&xt, &b.upload_ids(&picked).unwrap()).unwrap();
        assert_eq!(read(&b, &g), reference::gather_rows(&x, &picked, h), "gather_rows {what}");
    }
    let u = half(rand_vec(9 * 2 * 37, 5, 2.0));
    let g = b.geglu(&b.upload(&u, &[9, 74]).unwrap()).unwrap();
    assert_close("geglu", &read(&b, &g), &reference::geglu(&u, 37), F16_ACTIVATION_OP);
    let cu = cu_seqlens(&[1, 5, 70]);
    let x = half(rand_vec(76 * 48, 6, 2.0));
    let pooled = b.mean_pool(&b.upload(&x, &[76, 48]).unwrap(), &b.seqs(&cu).unwrap()).unwrap();
    assert_close("mean_pool", &read(&b, &pooled), &reference::mean_pool(&x, &cu, 48), F16_ACTIVATION_OP);
}

#[test]
fn embedding_linear_and_a_chunked_weight() {
    let b = gpu_f16_activations();
    let (v, h) = (320usize, 48usize);
    let table = half(rand_vec(v * h, 7, 1.0));
    let ids = rand_ids(29, 8, v as u32);
    let e = b.embedding(&b.upload_weight(table.clone(), &[v, h]).unwrap(), &b.upload_ids(&ids).unwrap()).unwrap();
    assert_eq!(read(&b, &e), reference::embedding(&table, &ids, h), "embedding");
    let types = half(rand_vec(2 * h, 13, 0.5));
    let type_ids: Vec<u32> = (0..29).map(|t| t % 2).collect();
    let s = b.embedding_add(&e, &b.upload_weight(types.clone(), &[2, h]).unwrap(), &b.upload_ids(&type_ids).unwrap()).unwrap();
    let expected = half(reference::embedding_add(&read(&b, &e), &types, &type_ids, h));
    assert_close("embedding_add", &read(&b, &s), &expected, F16_ACTIVATION_OP);
    for (n, k, m) in [(1usize, 48usize, 144usize), (29, 48, 320), (67, 96, 97)] {
        let x = half(rand_vec(n * k, 9, 1.0));
        let w = half(rand_vec(m * k, 10, 0.1));
        let bias = half(rand_vec(m, 11, 0.5));
        let y = b.linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), Some(&b.upload_weight(bias.clone(), &[m]).unwrap())).unwrap();
        assert_close(&format!("linear {n}x{k}x{m}"), &read(&b, &y), &reference::linear(&x, &w, Some(&bias), k), F16_ACTIVATION_OP);
    }
    // A vocabulary projection stored in row chunks: each chunk's product copied into its columns.
    let chunked = b.clone().with_max_binding_bytes(128 * h * 2);
    let w = half(rand_vec(v * h, 12, 0.1));
    let wt = chunked.upload_weight(w.clone(), &[v, h]).unwrap();
    assert!(wt.parts_len() > 1);
    let x = half(rand_vec(5 * h, 13, 1.0));
    let y = chunked.linear(&chunked.upload(&x, &[5, h]).unwrap(), &wt, None).unwrap();
    assert_close("linear, chunked weight", &read(&chunked, &y), &reference::linear(&x, &w, None, h), F16_ACTIVATION_OP);
}

#[test]
fn rope_and_attention() {
    let b = gpu_f16_activations();
    for (nh, hd) in [(4usize, 12usize), (2, 64)] {
        let h = nh * hd;
        let cu = cu_seqlens(&[1, 5, 70, 130]);
        let t = *cu.last().unwrap() as usize;
        let seqs = b.seqs(&cu).unwrap();
        let qkv = half(rand_vec(t * 3 * h, 14, 1.0));
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, hd, 256);
        // The tables are activations here too (uploaded in f16), as the model uploads them.
        let (cos, sin) = (half(cos), half(sin));
        let rotated = b.rope(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &seqs, &b.upload(&cos, &[256, hd / 2]).unwrap(), &b.upload(&sin, &[256, hd / 2]).unwrap(), nh).unwrap();
        let positions = kernels::backend::positions(&cu);
        assert_close(&format!("rope hd={hd}"), &read(&b, &rotated), &reference::rope(&qkv, &positions, &cos, &sin, nh, hd), F16_ACTIVATION_OP);
        for window in [None, Some(4), Some(64)] {
            let (o, _) = b.attention(&b.upload(&qkv, &[t, 3 * h]).unwrap(), &seqs, nh, window).unwrap();
            let (o_ref, _) = reference::attention(&qkv, &cu, nh, hd, window);
            assert_close(&format!("attention hd={hd} window={window:?}"), &read(&b, &o), &o_ref, F16_ACTIVATION_OP);
        }
    }
}

#[test]
fn losses_and_ranks_stay_f32() {
    let b = gpu_f16_activations();
    let (n, c) = (7usize, 321usize);
    let logits = half(rand_vec(n * c, 15, 3.0));
    let labels = rand_ids(n, 16, c as u32);
    let lt = b.upload(&logits, &[n, c]).unwrap();
    let ids = b.upload_ids(&labels).unwrap();
    let labels64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let loss = b.cross_entropy(&lt, &ids).unwrap();
    assert_close("cross_entropy", &read(&b, &loss), &reference::cross_entropy(&logits, &labels64, c, -100), REDUCTION_F32);
    let ranks: Vec<f32> = reference::label_rank(&logits, &labels, c).iter().map(|&r| r as f32).collect();
    assert_eq!(read(&b, &b.label_rank(&lt, &ids).unwrap()), ranks, "label_rank");
}
