#![cfg_attr(not(test), allow(dead_code, unused_imports))] // the WGSL exercise is built with `testing` alone

use crate::prelude::*;
use crate::reference;
use crate::testing::{block_on, cu_seqlens, rand_for, rand_ids, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32, REDUCTION_F32};

fn embedding_gathers<B: Backend>(b: &B) {
    let (v, h) = (320, 48);
    let table = rand_for(b, v * h, 1, 1.0);
    let mut ids = rand_ids(77, 2, v as u32);
    ids.extend_from_slice(&[0, v as u32 - 1, 5, 5]);
    let y = b.embedding(&b.upload_weight(table.clone(), &[v, h]).unwrap(), &b.upload_ids(&ids).unwrap()).unwrap();
    assert_eq!(b.shape(&y), &[ids.len(), h]);
    assert_close("embedding", &block_on(b.read(&y)).unwrap(), &reference::embedding(&table, &ids, h), KERNEL_F32);
    let bad = b.embedding(&b.upload_weight(table, &[v, h]).unwrap(), &b.upload_ids(&[v as u32]).unwrap());
    assert!(bad.is_err(), "an id past the table must be refused");
}

fn embedding_add_sums<B: Backend>(b: &B) {
    let (r, h, t) = (64, 48, 93);
    let table = rand_for(b, r * h, 5, 1.0);
    let x = rand_vec(t * h, 6, 1.0);
    let mut ids = rand_ids(t - 2, 7, r as u32);
    ids.extend_from_slice(&[0, r as u32 - 1]);
    let tt = b.upload_weight(table.clone(), &[r, h]).unwrap();
    let y = b.embedding_add(&b.upload(&x, &[t, h]).unwrap(), &tt, &b.upload_ids(&ids).unwrap()).unwrap();
    assert_eq!(b.shape(&y), &[t, h]);
    assert_close("embedding_add", &block_on(b.read(&y)).unwrap(), &reference::embedding_add(&x, &table, &ids, h), KERNEL_F32);
    let xt = b.upload(&x, &[t, h]).unwrap();
    assert!(b.embedding_add(&xt, &tt, &b.upload_ids(&vec![r as u32; t]).unwrap()).is_err(), "an id past the table must be refused");
    assert!(b.embedding_add(&xt, &tt, &b.upload_ids(&ids[1..]).unwrap()).is_err(), "ids and rows of x must agree");
}

fn gather_rows_picks<B: Backend>(b: &B) {
    let x = rand_vec(10 * 7, 3, 1.0);
    let rows = [9u32, 0, 3, 3];
    let y = b.gather_rows(&b.upload(&x, &[10, 7]).unwrap(), &b.upload_ids(&rows).unwrap()).unwrap();
    assert_close("gather_rows", &block_on(b.read(&y)).unwrap(), &reference::gather_rows(&x, &rows, 7), KERNEL_F32);
    assert!(b.gather_rows(&b.upload(&x, &[10, 7]).unwrap(), &b.upload_ids(&[10]).unwrap()).is_err());
}

fn mean_pool_per_sequence<B: Backend>(b: &B) {
    for lengths in [&[1usize][..], &[40, 27, 13], &[1, 300, 2]] {
        let cu = cu_seqlens(lengths);
        let t = *cu.last().unwrap() as usize;
        let x = rand_vec(t * 48, t as u32, 2.0);
        let y = b.mean_pool(&b.upload(&x, &[t, 48]).unwrap(), &b.seqs(&cu).unwrap()).unwrap();
        assert_eq!(b.shape(&y), &[lengths.len(), 48]);
        assert_close("mean_pool", &block_on(b.read(&y)).unwrap(), &reference::mean_pool(&x, &cu, 48), KERNEL_F32);
    }
}

crate::backend_tests!(embedding_gathers, embedding_add_sums, gather_rows_picks, mean_pool_per_sequence);

/// A table split over several bindings (as ModernBERT-base's is on a 128 MiB-binding device)
/// gathers the same rows.
#[test]
fn wgpu_chunked_table() {
    use crate::gpu::GpuBackend;
    let (v, h) = (320, 48);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(100 * h * 4);
    let table = rand_vec(v * h, 4, 1.0);
    let t = gpu.upload(&table, &[v, h]).unwrap();
    assert_eq!(t.parts.len(), 4, "320 rows at 100 rows per binding");
    // At most 100 output rows: the pretend binding limit applies to the output too.
    let ids: Vec<u32> = (0..v as u32).rev().step_by(4).chain([99, 100, 199, 200, 299, 300, 0, 319]).collect();
    let y = gpu.embedding(&t, &gpu.upload_ids(&ids).unwrap()).unwrap();
    assert_eq!(block_on(gpu.read(&y)).unwrap(), reference::embedding(&table, &ids, h));
    assert_eq!(block_on(gpu.read(&t)).unwrap(), table, "a chunked tensor reads back whole");
    let x = rand_vec(ids.len() * h, 5, 1.0);
    let y = gpu.embedding_add(&gpu.upload(&x, &[ids.len(), h]).unwrap(), &t, &gpu.upload_ids(&ids).unwrap()).unwrap();
    assert_close("chunked embedding_add", &block_on(gpu.read(&y)).unwrap(), &reference::embedding_add(&x, &table, &ids, h), KERNEL_F32);
    let too_many: Vec<u32> = (0..101).collect();
    assert!(gpu.embedding(&t, &gpu.upload_ids(&too_many).unwrap()).is_err(), "an output above the binding limit is refused");
}

// ---- Training ----

fn embedding_backward_scatter_adds<B: Backend>(b: &B) {
    for &(v, h, t) in &[(1usize, 1usize, 1usize), (320, 48, 77), (50, 65, 2000), (1000, 7, 3)] {
        let mut ids = rand_ids(t, t as u32 + 7, v as u32);
        if t > 10 {
            ids[3] = v as u32 - 1;
            ids[4] = 0;
            ids[5] = ids[6];
        }
        let dy = rand_vec(t * h, t as u32 + 8, 1.0);
        let d = b.embedding_backward(&ids, &b.upload(&dy, &[t, h]).unwrap(), v).unwrap();
        assert_eq!(b.shape(&d), &[v, h]);
        // Ids repeated up to ~40 times (2000 tokens over 50 ids): sums of that many rows.
        assert_close(&format!("embedding_backward V={v} H={h} T={t}"), &block_on(b.read(&d)).unwrap(), &reference::embedding_backward(&ids, &dy, v, h), REDUCTION_F32);
    }
    // More distinct ids than one grid dimension holds (65,535 workgroups).
    let (v, t) = (70_000usize, 70_000usize);
    let ids: Vec<u32> = (0..t as u32).rev().collect();
    let dy = rand_vec(t, 9, 1.0);
    let d = b.embedding_backward(&ids, &b.upload(&dy, &[t, 1]).unwrap(), v).unwrap();
    assert_close("embedding_backward 70,000 distinct ids", &block_on(b.read(&d)).unwrap(), &reference::embedding_backward(&ids, &dy, v, 1), KERNEL_F32);
    assert!(b.embedding_backward(&[3], &b.upload(&[0.0; 4], &[1, 4]).unwrap(), 3).is_err(), "an id past the table");
    assert!(b.embedding_backward(&[0, 1], &b.upload(&[0.0; 4], &[1, 4]).unwrap(), 3).is_err(), "ids and rows differ");
}

fn mean_pool_backward_broadcasts<B: Backend>(b: &B) {
    for lengths in [&[1usize][..], &[40, 27, 13], &[1, 300, 2]] {
        let cu = cu_seqlens(lengths);
        let t = *cu.last().unwrap() as usize;
        let dy = rand_vec(lengths.len() * 48, t as u32 + 1, 2.0);
        let dx = b.mean_pool_backward(&b.upload(&dy, &[lengths.len(), 48]).unwrap(), &b.seqs(&cu).unwrap()).unwrap();
        assert_eq!(b.shape(&dx), &[t, 48]);
        assert_close("mean_pool_backward", &block_on(b.read(&dx)).unwrap(), &reference::mean_pool_backward(&dy, &cu, 48), KERNEL_F32);
    }
    assert!(b.mean_pool_backward(&b.upload(&[0.0; 8], &[2, 4]).unwrap(), &b.seqs(&cu_seqlens(&[3])).unwrap()).is_err());
}

fn scatter_rows_places<B: Backend>(b: &B) {
    for &(n, h, ref rows) in &[(1usize, 3usize, vec![0u32]), (10, 7, vec![9, 0, 3]), (500, 65, (0..500).rev().step_by(3).collect::<Vec<u32>>())] {
        let dy = rand_vec(rows.len() * h, n as u32, 1.0);
        let dx = b.scatter_rows(&b.upload(&dy, &[rows.len(), h]).unwrap(), &b.upload_ids(rows).unwrap(), n).unwrap();
        assert_eq!(b.shape(&dx), &[n, h]);
        assert_close("scatter_rows", &block_on(b.read(&dx)).unwrap(), &reference::scatter_rows(&dy, rows, n, h), KERNEL_F32);
    }
    assert!(b.scatter_rows(&b.upload(&[0.0; 7], &[1, 7]).unwrap(), &b.upload_ids(&[10]).unwrap(), 10).is_err());
}

crate::training_backend_tests!(embedding_backward_scatter_adds, mean_pool_backward_broadcasts, scatter_rows_places);

/// The gradient of a table larger than one binding comes back in the table's own row chunks.
#[test]
fn wgpu_training_chunked_embedding_backward() {
    use crate::gpu::GpuBackend;
    let (v, h, t) = (320, 48, 90);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(100 * h * 4);
    let mut ids = rand_ids(t, 5, v as u32);
    ids.extend_from_slice(&[99, 100, 199, 200, 299, 300, 0, 319, 100]);
    let dy = rand_vec(ids.len() * h, 6, 1.0);
    let d = gpu.embedding_backward(&ids, &gpu.upload(&dy, &[ids.len(), h]).unwrap(), v).unwrap();
    let table = gpu.upload(&vec![0.0; v * h], &[v, h]).unwrap();
    assert_eq!((d.parts.len(), d.part_rows), (table.parts.len(), table.part_rows));
    assert_close("chunked embedding_backward", &block_on(gpu.read(&d)).unwrap(), &reference::embedding_backward(&ids, &dy, v, h), REDUCTION_F32);
}

/// Lookups (whole and summed into x), row gathers and mean pooling, and (training) their

/// f16 activations: lookups and row gathers exact, the sum and the mean within f16 rounding.
#[test]
fn f16_activations() {
    use crate::backend::DType;
    use crate::tolerance::F16_ACTIVATION_OP;
    let b = crate::testing::gpu_f16_activations();
    let half = |v| crate::testing::representable(DType::F16, v);
    let read = |t: &crate::gpu::GpuTensor| block_on(b.read(t)).unwrap();
    let (v, h) = (320usize, 48usize);
    let table = half(rand_vec(v * h, 7, 1.0));
    let ids = rand_ids(29, 8, v as u32);
    let e = b.embedding(&b.upload_weight(table.clone(), &[v, h]).unwrap(), &b.upload_ids(&ids).unwrap()).unwrap();
    assert_eq!(read(&e), reference::embedding(&table, &ids, h), "embedding");
    let types = half(rand_vec(2 * h, 13, 0.5));
    let type_ids: Vec<u32> = (0..29).map(|t| t % 2).collect();
    let s = b.embedding_add(&e, &b.upload_weight(types.clone(), &[2, h]).unwrap(), &b.upload_ids(&type_ids).unwrap()).unwrap();
    assert_close("embedding_add", &read(&s), &half(reference::embedding_add(&read(&e), &types, &type_ids, h)), F16_ACTIVATION_OP);
    for (rows, h) in [(1usize, 1usize), (7, 63), (33, 96)] {
        let x = half(rand_vec(rows * h, 1, 3.0));
        let picked: Vec<u32> = (0..rows as u32).rev().step_by(2).collect();
        let g = b.gather_rows(&b.upload(&x, &[rows, h]).unwrap(), &b.upload_ids(&picked).unwrap()).unwrap();
        assert_eq!(read(&g), reference::gather_rows(&x, &picked, h), "gather_rows rows={rows} h={h}");
    }
    let cu = cu_seqlens(&[1, 5, 70]);
    let x = half(rand_vec(76 * 48, 6, 2.0));
    let pooled = b.mean_pool(&b.upload(&x, &[76, 48]).unwrap(), &b.seqs(&cu).unwrap()).unwrap();
    assert_close("mean_pool", &read(&pooled), &reference::mean_pool(&x, &cu, 48), F16_ACTIVATION_OP);
}

/// backwards, whole and in row chunks.
fn exercise(b: &crate::GpuBackend) {
    for (nh, hd, cu) in crate::testing::exercise_shapes() {
        let (h, t) = (nh * hd, *cu.last().unwrap() as usize);
        let seqs = b.seqs(&cu).unwrap();
        let x = b.upload(&rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
        b.mean_pool(&x, &seqs).unwrap();
        b.gather_rows(&x, &b.upload_ids(&[0, 3]).unwrap()).unwrap();
        let table = b.upload_weight(rand_vec(320 * h, 7, 1.0), &[320, h]).unwrap();
        let e = b.embedding(&table, &b.upload_ids(&rand_ids(t, 8, 320)).unwrap()).unwrap();
        b.embedding_add(&e, &table, &b.upload_ids(&rand_ids(t, 8, 320)).unwrap()).unwrap();
        if crate::testing::trains(b) {
            let b_seqs = cu.len() - 1;
            b.mean_pool_backward(&b.upload(&rand_vec(b_seqs * h, 7, 1.0), &[b_seqs, h]).unwrap(), &seqs).unwrap();
            b.scatter_rows(&b.upload(&rand_vec(2 * h, 8, 1.0), &[2, h]).unwrap(), &b.upload_ids(&[0, 3]).unwrap(), t).unwrap();
            b.embedding_backward(&rand_ids(t, 9, 320), &x, 320).unwrap();
        }
    }
    if crate::testing::trains(b) {
        let chunked = b.clone().with_max_binding_bytes(100 * 48 * 4);
        let dy = chunked.upload(&rand_vec(40 * 48, 16, 1.0), &[40, 48]).unwrap();
        block_on(chunked.read(&chunked.embedding_backward(&rand_ids(40, 15, 320), &dy, 320).unwrap())).unwrap();
    }
}

crate::wgsl_exercise!("embedding", ["gather", "gather_add", "mean_pool", "mean_pool_backward", "scatter_rows", "embedding_backward"], exercise);
