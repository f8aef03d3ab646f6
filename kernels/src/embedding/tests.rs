use crate::backend::Backend;
use crate::reference;
use crate::testing::{block_on, cu_seqlens, rand_for, rand_ids, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32};

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

crate::backend_tests!(embedding_gathers, gather_rows_picks, mean_pool_per_sequence);

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
    let too_many: Vec<u32> = (0..101).collect();
    assert!(gpu.embedding(&t, &gpu.upload_ids(&too_many).unwrap()).is_err(), "an output above the binding limit is refused");
}
