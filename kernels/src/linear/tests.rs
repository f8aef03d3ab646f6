use crate::backend::Backend;
use crate::reference;
use crate::testing::{block_on, rand_for, rand_vec};
use crate::tolerance::{assert_close, REDUCTION_F32};

fn check<B: Backend>(b: &B, n: usize, k: usize, m: usize, bias: bool) {
    let x = rand_vec(n * k, (n * 7 + k) as u32, 1.0);
    let w = rand_for(b, m * k, (m * 3 + k) as u32, 1.0 / (k as f32).sqrt());
    let bb = rand_for(b, m, 5, 0.3);
    let expected = reference::linear(&x, &w, bias.then_some(&bb[..]), k);
    let y = b
        .linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), bias.then(|| b.upload_weight(bb.clone(), &[m]).unwrap()).as_ref())
        .unwrap();
    assert_eq!(b.shape(&y), &[n, m]);
    assert_close(&format!("linear {n}x{k} · ({m}x{k})ᵀ bias={bias}"), &block_on(b.read(&y)).unwrap(), &expected, crate::tolerance::linear(b.dtype()));
}

fn linear_shapes<B: Backend>(b: &B) {
    check(b, 1, 48, 144, false);
    check(b, 13, 48, 72, true);
    check(b, 37, 72, 48, false);
    check(b, 3, 13, 7, true); // no vectorisation possible
    check(b, 130, 768, 2304, false);
    check(b, 120, 48, 320, true);
}

fn linear_rejects_mismatch<B: Backend>(b: &B) {
    let x = b.upload(&[0.0; 12], &[3, 4]).unwrap();
    let w = b.upload(&[0.0; 10], &[2, 5]).unwrap();
    assert!(b.linear(&x, &w, None).is_err());
}

crate::backend_tests!(linear_shapes, linear_rejects_mismatch);

/// A weight split across bindings (a vocabulary projection) gives the same product.
#[test]
fn wgpu_chunked_weight() {
    use crate::gpu::GpuBackend;
    let (n, k, m) = (9, 48, 320);
    let gpu: GpuBackend = crate::testing::gpu().with_max_binding_bytes(128 * k * 4);
    let x = rand_vec(n * k, 1, 1.0);
    let w = rand_vec(m * k, 2, 0.2);
    let bb = rand_vec(m, 3, 0.1);
    let wt = gpu.upload(&w, &[m, k]).unwrap();
    assert_eq!(wt.parts.len(), 3);
    let y = gpu.linear(&gpu.upload(&x, &[n, k]).unwrap(), &wt, Some(&gpu.upload(&bb, &[m]).unwrap())).unwrap();
    assert_close("chunked linear", &block_on(gpu.read(&y)).unwrap(), &reference::linear(&x, &w, Some(&bb), k), REDUCTION_F32);
}
