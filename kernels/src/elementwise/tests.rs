use crate::backend::Backend;
use crate::reference;
use crate::testing::{block_on, rand_vec};
use crate::tolerance::{assert_close, KERNEL_F32};

fn add_matches<B: Backend>(b: &B) {
    for &n in &[1usize, 255, 256, 257, 100_003] {
        let x = rand_vec(n, 1, 2.0);
        let y = rand_vec(n, 2, 2.0);
        let out = b.add(&b.upload(&x, &[n]).unwrap(), &b.upload(&y, &[n]).unwrap()).unwrap();
        assert_close("add", &block_on(b.read(&out)).unwrap(), &reference::add(&x, &y), KERNEL_F32);
    }
    assert!(b.add(&b.upload(&[0.0; 4], &[4]).unwrap(), &b.upload(&[0.0; 4], &[2, 2]).unwrap()).is_err());
}

fn add_beyond_one_grid_dimension<B: Backend>(b: &B) {
    // More than 65,535 workgroups of 256: the GPU grid must spread over two dimensions.
    let n = 65_535 * 256 + 777;
    let x = rand_vec(n, 11, 1.0);
    let y = rand_vec(n, 12, 1.0);
    let out = block_on(b.read(&b.add(&b.upload(&x, &[n]).unwrap(), &b.upload(&y, &[n]).unwrap()).unwrap())).unwrap();
    assert_close("add (2-D grid)", &out, &reference::add(&x, &y), KERNEL_F32);
}

fn gelu_matches<B: Backend>(b: &B) {
    let mut x = rand_vec(4099, 3, 6.0);
    x.extend_from_slice(&[0.0, -0.0, 1e-6, -1e-6, 10.0, -10.0, 30.0, -30.0]);
    let n = x.len();
    let out = b.gelu(&b.upload(&x, &[n]).unwrap()).unwrap();
    assert_close("gelu", &block_on(b.read(&out)).unwrap(), &reference::gelu(&x), KERNEL_F32);
}

fn geglu_matches<B: Backend>(b: &B) {
    for &(rows, i) in &[(1usize, 1usize), (3, 72), (17, 1152), (130, 5)] {
        let u = rand_vec(rows * 2 * i, rows as u32, 4.0);
        let out = b.geglu(&b.upload(&u, &[rows, 2 * i]).unwrap()).unwrap();
        assert_eq!(b.shape(&out), &[rows, i]);
        assert_close(&format!("geglu rows={rows} I={i}"), &block_on(b.read(&out)).unwrap(), &reference::geglu(&u, i), KERNEL_F32);
    }
    assert!(b.geglu(&b.upload(&[0.0; 6], &[2, 3]).unwrap()).is_err());
}

fn slice_and_concat_rows<B: Backend>(b: &B) {
    let x = rand_vec(10 * 3, 9, 1.0);
    let t = b.upload(&x, &[10, 3]).unwrap();
    let parts = [b.slice_rows(&t, 0, 4).unwrap(), b.slice_rows(&t, 4, 5).unwrap(), b.slice_rows(&t, 5, 10).unwrap()];
    assert_close("slice_rows", &block_on(b.read(&parts[1])).unwrap(), &x[12..15], KERNEL_F32);
    assert_eq!(b.shape(&parts[2]), &[5, 3]);
    let back = b.concat_rows(&parts).unwrap();
    assert_close("concat_rows", &block_on(b.read(&back)).unwrap(), &x, KERNEL_F32);
    assert!(b.slice_rows(&t, 3, 11).is_err());
    assert!(b.concat_rows(&[t.clone(), b.upload(&[0.0; 4], &[2, 2]).unwrap()]).is_err());
}

crate::backend_tests!(add_matches, add_beyond_one_grid_dimension, gelu_matches, geglu_matches, slice_and_concat_rows);
