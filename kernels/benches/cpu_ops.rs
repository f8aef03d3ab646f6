//! CPU playground: every op of the CPU backend at ModernBERT-base shapes, timed (median of a few
//! runs) with its throughput. `cargo bench -p kernels --bench cpu_ops [-- T]`; RAYON_NUM_THREADS
//! sets the threads.

use std::time::Instant;

use kernels::prelude::*;
use kernels::testing::{block_on, cu_seqlens, rand_vec};
use kernels::CpuBackend;

fn time<F: FnMut()>(mut f: F) -> f64 {
    f();
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with('-')).collect();
    let t: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let b = match std::env::var("CPU_DTYPE").as_deref() {
        Ok("bf16") => CpuBackend::new().with_dtype(kernels::backend::DType::BF16).unwrap(),
        _ => CpuBackend::new(),
    };
    let (h, i, nh) = (768usize, 1152usize, 12usize);
    println!("CPU ops at ModernBERT-base shapes, T = {t}, {} threads, weights {}", rayon::current_num_threads(), b.dtype().name());
    let x = b.upload(&rand_vec(t * h, 1, 1.0), &[t, h]).unwrap();
    let w = b.upload_weight(rand_vec(h, 2, 1.0), &[h]).unwrap();
    let only: Option<String> = args.get(2).cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let report = |name: &str, secs: f64, flops: f64, bytes: f64| {
        println!("{name:<28} {:>9.3} ms {:>8.1} GFLOP/s {:>8.1} GB/s", secs * 1e3, flops / secs / 1e9, bytes / secs / 1e9);
    };
    if wanted("linear") {
    for (name, m, k) in [("linear Wqkv [T,768]x[2304,768]", 3 * h, h), ("linear Wo [T,768]x[768,768]", h, h), ("linear Wi [T,768]x[2304,768]", 2 * i, h), ("linear mlp.Wo [T,1152]x[768,1152]", h, i)] {
        let xin = b.upload(&rand_vec(t * k, 3, 1.0), &[t, k]).unwrap();
        let wt = b.upload_weight(rand_vec(m * k, 4, 0.05), &[m, k]).unwrap();
        let s = time(|| {
            b.linear(&xin, &wt, None).unwrap();
        });
        report(name, s, 2.0 * (t * m * k) as f64, 4.0 * (t * k + m * k + t * m) as f64);
    }
    }
    if wanted("packed") {
    for (name, m, k) in [("packed f32 [T,768]x[2304,768]", 3 * h, h), ("packed f32 [T,1152]x[768,1152]", h, i)] {
        let xin = rand_vec(t * k, 3, 1.0);
        let wv = rand_vec(m * k, 4, 0.05);
        let mut y = vec![0f32; t * m];
        for (kind, packed) in [("", kernels::cpu::gemm::Packed::f32(&wv, m, k)), (" bf16", kernels::cpu::gemm::Packed::bf16(&wv, m, k))] {
            let s = time(|| kernels::cpu::gemm::matmul(&xin, t, &packed, &mut y, m));
            report(&format!("{name}{kind}"), s, 2.0 * (t * m * k) as f64, 0.0);
        }
    }
    }
    let s = time(|| {
        b.layer_norm(&x, &w, None, 1e-5).unwrap();
    });
    report("layer_norm", s, 0.0, 8.0 * (t * h) as f64);
    let u = b.upload(&rand_vec(t * 2 * i, 5, 2.0), &[t, 2 * i]).unwrap();
    let s = time(|| {
        b.geglu(&u).unwrap();
    });
    report("geglu", s, 0.0, 12.0 * (t * i) as f64);
    let s = time(|| {
        b.add(&x, &x).unwrap();
    });
    report("add", s, 0.0, 12.0 * (t * h) as f64);
    if !wanted("attention") {
        return;
    }
    for (lengths, window) in [(vec![128; t / 128], None), (vec![128; t / 128], Some(64)), (vec![t], None), (vec![t], Some(64))] {
        let cu = cu_seqlens(&lengths);
        let seqs = b.seqs(&cu).unwrap();
        let qkv = b.upload(&rand_vec(t * 3 * h, 6, 1.0), &[t, 3 * h]).unwrap();
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, 64, t);
        let (cos, sin) = (b.upload(&cos, &[t, 32]).unwrap(), b.upload(&sin, &[t, 32]).unwrap());
        let s = time(|| {
            b.rope(&qkv, &seqs, &cos, &sin, nh).unwrap();
        });
        report(&format!("rope seq {}", lengths[0]), s, 0.0, 8.0 * (t * 3 * h) as f64);
        let keys: f64 = lengths.iter().map(|&l| (0..l).map(|q| window.map_or(l, |w| q.min(w) + (l - 1 - q).min(w) + 1) as f64).sum::<f64>()).sum();
        let s = time(|| {
            let (o, _) = b.attention(&qkv, &seqs, nh, window).unwrap();
            block_on(b.read(&o)).unwrap();
        });
        report(&format!("attention seq {} win {:?}", lengths[0], window), s, 4.0 * h as f64 * keys, 0.0);
    }
}
