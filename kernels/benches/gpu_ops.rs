//! GPU kernel playground: each kernel of the cubecl backend, and its variants (GEMM paths, weight
//! dtypes, fused against unfused), first checked against its plain-Rust reference on a small
//! instance of the same shapes, then timed at ModernBERT-base shapes on T tokens (median of 5
//! after a warm-up, each run waited for with a device sync). Prints one table: milliseconds,
//! achieved TFLOP/s (products) or GB/s (memory-bound kernels).
//!
//! `cargo bench -p kernels --bench gpu_ops [-- T [filter]]` (T defaults to 512; on a real GPU use
//! 16384 = 32 × 512). `KERNELS_BENCH_DEVICE=cuda` (with `--features cuda`) for CUDA, else the
//! default wgpu adapter. Attention is timed at growing sequence lengths, global and ±64-window,
//! so the table shows the local layers' cost growing like S · window and the global ones' like S².

use std::time::Instant;

use kernels::backend::DType;
use kernels::linear::GemmPath;
use kernels::prelude::*;
use kernels::testing::{block_on, cu_seqlens, rand_ids, rand_vec, representable};
use kernels::tolerance::{self, assert_close};
use kernels::{reference, GpuBackend};

/// Median seconds of 5 runs after a warm-up; each run ends when the device is idle.
fn time<F: FnMut()>(b: &GpuBackend, mut f: F) -> f64 {
    let mut run = || {
        let t0 = Instant::now();
        f();
        block_on(b.client().sync()).expect("device sync");
        t0.elapsed().as_secs_f64()
    };
    run();
    let mut v: Vec<f64> = (0..5).map(|_| run()).collect();
    v.sort_by(f64::total_cmp);
    v[2]
}

fn report(name: &str, secs: f64, flops: f64, bytes: f64) {
    let rate = if flops > 0.0 { format!("{:>8.3} TFLOP/s", flops / secs / 1e12) } else { format!("{:>8.1} GB/s   ", bytes / secs / 1e9) };
    println!("| {name:<58} | {:>10.3} | {rate} |", secs * 1e3);
}

fn backend() -> GpuBackend {
    match std::env::var("KERNELS_BENCH_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => GpuBackend::new(kernels::device::cuda_device(0).expect("CUDA device")),
        _ => GpuBackend::new(kernels::device::wgpu_device(kernels::device::AdapterChoice::Default).expect("a wgpu adapter")),
    }
}

const H: usize = 768;
const NH: usize = 12;
const HD: usize = 64;
const I: usize = 1152;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let t: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(512);
    let only = args.get(1).cloned();
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let base = backend();
    let info = base.device_info();
    println!("GPU kernels at ModernBERT-base shapes (H {H}, {NH} heads, I {I}), T = {t} tokens, on {} {}", info.backend, info.name);
    println!();
    println!("| kernel | ms | rate |");
    println!("|---|---|---|");

    if wanted("linear") {
        let f16 = base.limits().f16;
        // (weights, activations): f32; f16 weights; f16 end to end (the tensor-core candidate).
        let dtypes: &[(DType, DType)] =
            if f16 { &[(DType::F32, DType::F32), (DType::F16, DType::F32), (DType::F16, DType::F16)] } else { &[(DType::F32, DType::F32)] };
        for &(dtype, act) in dtypes {
            for path in [GemmPath::Unit, GemmPath::Auto, GemmPath::Cmma, GemmPath::DoubleCmma] {
                let b = base.clone().with_dtype(dtype).and_then(|b| b.with_activations(act)).expect("dtype").with_gemm(path);
                let what = format!("{} weights, {} activations", dtype.name(), act.name());
                // Check on 67 rows (not a multiple of any tile), then time on T.
                let (n, k, m) = (67, H, 3 * H);
                let x = representable(act, rand_vec(n * k, 1, 1.0));
                let w = representable(dtype, rand_vec(m * k, 2, 0.05));
                let y = match b.linear(&b.upload(&x, &[n, k]).unwrap(), &b.upload_weight(w.clone(), &[m, k]).unwrap(), None) {
                    Ok(y) => y,
                    Err(e) => {
                        println!("| linear {path:?} {what} | refused: {} | |", e.to_string().lines().next().unwrap_or(""));
                        continue;
                    }
                };
                let tol = if act == DType::F16 { tolerance::LINEAR_F16_OUTPUT } else { tolerance::linear(dtype) };
                assert_close(&format!("linear {path:?} {what}"), &block_on(b.read(&y)).unwrap(), &reference::linear(&x, &w, None, k), tol);
                for (name, m, k) in [("Wqkv", 3 * H, H), ("attn.Wo", H, H), ("mlp.Wi", 2 * I, H), ("mlp.Wo", H, I)] {
                    let x = b.upload(&rand_vec(t * k, 3, 1.0), &[t, k]).unwrap();
                    let w = b.upload_weight(rand_vec(m * k, 4, 0.05), &[m, k]).unwrap();
                    let s = time(&b, || {
                        b.linear(&x, &w, None).unwrap();
                    });
                    report(&format!("linear {name} [{t},{k}]x[{m},{k}]ᵀ w {} a {} {path:?}", dtype.name(), act.name()), s, 2.0 * (t * m * k) as f64, 0.0);
                }
                println!("|   path that ran: {} | | |", b.gemm_summary().replace('|', "/"));
            }
        }
    }

    let b = &base;
    let x = b.upload(&rand_vec(t * H, 5, 2.0), &[t, H]).unwrap();
    let y = b.upload(&rand_vec(t * H, 6, 2.0), &[t, H]).unwrap();
    let w = b.upload_weight(rand_vec(H, 7, 1.0), &[H]).unwrap();
    if wanted("norm") {
        // Checked on 33 rows.
        let (xs, ys, ws) = (rand_vec(33 * H, 8, 2.0), rand_vec(33 * H, 9, 2.0), rand_vec(H, 10, 1.0));
        let (sum, normed) = b.add_layer_norm(&b.upload(&xs, &[33, H]).unwrap(), &b.upload(&ys, &[33, H]).unwrap(), &b.upload_weight(ws.clone(), &[H]).unwrap(), None, 1e-5).unwrap();
        let (sum_ref, normed_ref) = reference::add_layer_norm(&xs, &ys, &ws, None, 1e-5, H);
        assert_close("add_layer_norm sum", &block_on(b.read(&sum)).unwrap(), &sum_ref, tolerance::KERNEL_F32);
        assert_close("add_layer_norm", &block_on(b.read(&normed)).unwrap(), &normed_ref, tolerance::KERNEL_F32);
        let n = (t * H) as f64;
        let s = time(b, || {
            b.layer_norm(&x, &w, None, 1e-5).unwrap();
        });
        report("layer_norm", s, 0.0, 8.0 * n);
        let s = time(b, || {
            let s = b.add(&x, &y).unwrap();
            b.layer_norm(&s, &w, None, 1e-5).unwrap();
        });
        report("add then layer_norm (unfused)", s, 0.0, 20.0 * n);
        let s = time(b, || {
            b.add_layer_norm(&x, &y, &w, None, 1e-5).unwrap();
        });
        report("add_layer_norm (fused; same bytes counted as unfused)", s, 0.0, 20.0 * n);
    }
    if wanted("geglu") {
        let us = rand_vec(9 * 2 * I, 11, 2.0);
        let g = b.geglu(&b.upload(&us, &[9, 2 * I]).unwrap()).unwrap();
        assert_close("geglu", &block_on(b.read(&g)).unwrap(), &reference::geglu(&us, I), tolerance::KERNEL_F32);
        let u = b.upload(&rand_vec(t * 2 * I, 12, 2.0), &[t, 2 * I]).unwrap();
        let s = time(b, || {
            b.geglu(&u).unwrap();
        });
        report("geglu", s, 0.0, 12.0 * (t * I) as f64);
    }
    if wanted("embedding") {
        let v = 50_368;
        let table = b.upload_weight(rand_vec(v * H, 13, 1.0), &[v, H]).unwrap();
        let ids = b.upload_ids(&rand_ids(t, 14, v as u32)).unwrap();
        let s = time(b, || {
            b.embedding(&table, &ids).unwrap();
        });
        report(&format!("embedding [{v},{H}] ({} parts)", table.parts_len()), s, 0.0, 8.0 * (t * H) as f64);
    }
    if wanted("rope") || wanted("attention") {
        // Checked on a small batch with a window edge inside.
        let cu = cu_seqlens(&[5, 70, 130]);
        let tc = *cu.last().unwrap() as usize;
        let qkv_small = rand_vec(tc * 3 * H, 15, 1.0);
        let seqs = b.seqs(&cu).unwrap();
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, HD, 256);
        let (cos_t, sin_t) = (b.upload(&cos, &[256, HD / 2]).unwrap(), b.upload(&sin, &[256, HD / 2]).unwrap());
        let positions = kernels::backend::positions(&cu);
        let rotated = b.rope(&b.upload(&qkv_small, &[tc, 3 * H]).unwrap(), &seqs, &cos_t, &sin_t, NH).unwrap();
        let rotated_ref = reference::rope(&qkv_small, &positions, &cos, &sin, NH, HD);
        assert_close("rope", &block_on(b.read(&rotated)).unwrap(), &rotated_ref, tolerance::KERNEL_F32);
        for window in [None, Some(64)] {
            let (o, _) = b.attention(&b.upload(&rotated_ref, &[tc, 3 * H]).unwrap(), &seqs, NH, window).unwrap();
            let (o_ref, _) = reference::attention(&rotated_ref, &cu, NH, HD, window);
            assert_close(&format!("attention window {window:?}"), &block_on(b.read(&o)).unwrap(), &o_ref, tolerance::attention(DType::F32));
        }
        let qkv = b.upload(&rand_vec(t * 3 * H, 16, 1.0), &[t, 3 * H]).unwrap();
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, HD, t);
        let (cos, sin) = (b.upload(&cos, &[t, HD / 2]).unwrap(), b.upload(&sin, &[t, HD / 2]).unwrap());
        let seqs = b.seqs(&cu_seqlens(&[t])).unwrap();
        let s = time(b, || {
            b.rope(&qkv, &seqs, &cos, &sin, NH).unwrap();
        });
        report("rope (q and k of qkv)", s, 0.0, 8.0 * (t * 3 * H) as f64);
        // Sequence lengths S = T/4, T/2, T (one sequence each): global grows ~4× per doubling,
        // the ±64 window ~2×.
        for window in [None, Some(64)] {
            for s_len in [t / 4, t / 2, t] {
                if s_len == 0 {
                    continue;
                }
                let qkv = b.upload(&rand_vec(s_len * 3 * H, 17, 1.0), &[s_len, 3 * H]).unwrap();
                let seqs = b.seqs(&cu_seqlens(&[s_len])).unwrap();
                let keys: f64 = (0..s_len).map(|q| window.map_or(s_len, |w| q.min(w) + (s_len - 1 - q).min(w) + 1) as f64).sum();
                let s = time(b, || {
                    b.attention(&qkv, &seqs, NH, window).unwrap();
                });
                let what = match window {
                    None => format!("attention global S={s_len}"),
                    Some(w) => format!("attention ±{w} window S={s_len}"),
                };
                report(&format!("{what} ({:.3} µs/token)", s * 1e6 / s_len as f64), s, 4.0 * H as f64 * keys, 0.0);
            }
        }
    }
}
