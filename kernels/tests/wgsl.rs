//! Every kernel, compiled to WGSL, validated by naga under the browser's rules, so that
//! WebGPU-incompatible code is caught without a browser.
//!
//! The WGSL is the exact text cubecl hands to wgpu: this test runs every op of the GPU backend on
//! awkward shapes (every comptime variant the model uses: head dims 12 and 64, windowed and
//! global attention, with and without biases; and every training op, forward and backward) and captures each module from cubecl-wgpu's trace
//! log. Each module must then
//! - parse and validate with naga with no optional capability (no subgroups, no f64; f16 only
//!   in the f16 variants, which need WebGPU's `shader-f16`),
//! - bind at most 8 storage buffers (WebGPU's default; SwiftShader allows 10),
//! - use at most 256 invocations per workgroup and 16 KiB of workgroup memory.

use std::sync::Mutex;

use kernels::backend::Backend;
use kernels::testing::{block_on, cu_seqlens, gpu, rand_ids, rand_vec};
use naga::valid::{Capabilities, ValidationFlags, Validator};

static MODULES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

const PREFIX: &str = "[cubecl-wgpu] compiling WGSL module `";

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("cubecl_wgpu")
    }
    fn log(&self, r: &log::Record) {
        let text = r.args().to_string();
        if let Some(rest) = text.strip_prefix(PREFIX) {
            if let Some((name, source)) = rest.split_once("`\n") {
                MODULES.lock().unwrap().push((name.to_string(), source.to_string()));
            }
        }
    }
    fn flush(&self) {}
}

fn exercise_every_op(b: kernels::GpuBackend) {
    let up = |v: &[f32], s: &[usize]| b.upload(v, s).unwrap();
    let weight = |v: Vec<f32>, s: &[usize]| b.upload_weight(v, s).unwrap();
    for (nh, hd) in [(4usize, 12usize), (2, 64)] {
        let h = nh * hd;
        let lengths = [1usize, 5, 70, 130];
        let cu = cu_seqlens(&lengths);
        let t = *cu.last().unwrap() as usize;
        let seqs = b.seqs(&cu).unwrap();
        let x = up(&rand_vec(t * h, 1, 1.0), &[t, h]);
        let w = weight(rand_vec(h, 2, 1.0), &[h]);
        let bias = weight(rand_vec(h, 3, 1.0), &[h]);
        b.layer_norm(&x, &w, None, 1e-5).unwrap();
        b.layer_norm(&x, &w, Some(&bias), 1e-5).unwrap();
        b.add_layer_norm(&x, &x, &w, Some(&bias), 1e-5).unwrap();
        let wqkv = weight(rand_vec(3 * h * h, 4, 0.1), &[3 * h, h]);
        let qkv = b.linear(&x, &wqkv, None).unwrap();
        b.linear(&x, &wqkv, Some(&weight(rand_vec(3 * h, 5, 0.1), &[3 * h]))).unwrap();
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, hd, 256);
        let qkv = b.rope(&qkv, &seqs, &up(&cos, &[256, hd / 2]), &up(&sin, &[256, hd / 2]), nh).unwrap();
        b.attention(&qkv, &seqs, nh, None).unwrap();
        b.attention(&qkv, &seqs, nh, Some(4)).unwrap();
        let u = up(&rand_vec(t * 2 * h, 6, 1.0), &[t, 2 * h]);
        b.geglu(&u).unwrap();
        b.gelu(&x).unwrap();
        b.tanh(&x).unwrap();
        b.add(&x, &x).unwrap();
        b.mean_pool(&x, &seqs).unwrap();
        b.gather_rows(&x, &b.upload_ids(&[0, 3]).unwrap()).unwrap();
        let table = weight(rand_vec(320 * h, 7, 1.0), &[320, h]);
        let e = b.embedding(&table, &b.upload_ids(&rand_ids(t, 8, 320)).unwrap()).unwrap();
        b.embedding_add(&e, &table, &b.upload_ids(&rand_ids(t, 8, 320)).unwrap()).unwrap();
        let parts = [b.slice_rows(&x, 0, 3).unwrap(), b.slice_rows(&x, 3, t).unwrap()];
        b.concat_rows(&parts).unwrap();
        let logits = up(&rand_vec(7 * 320, 9, 3.0), &[7, 320]);
        let loss = b.cross_entropy(&logits, &b.upload_ids(&rand_ids(7, 10, 320)).unwrap()).unwrap();
        block_on(b.read(&loss)).unwrap();
    }
    // A weight in row chunks (the projection onto a vocabulary larger than one binding).
    let chunked = b.clone().with_max_binding_bytes(128 * 48 * b.dtype().size());
    let w = chunked.upload_weight(rand_vec(320 * 48, 11, 0.1), &[320, 48]).unwrap();
    let y = chunked.linear(&chunked.upload(&rand_vec(5 * 48, 12, 1.0), &[5, 48]).unwrap(), &w, None).unwrap();
    block_on(chunked.read(&y)).unwrap();
}

/// The training ops (f32 only), on the same awkward shapes: both attention backward variants at
/// both head dims, both optimizer rules, tensors in row chunks.
fn exercise_training_ops(b: kernels::GpuBackend) {
    use kernels::optim::{AdamStep, Rule};
    let up = |v: &[f32], s: &[usize]| b.upload(v, s).unwrap();
    for (nh, hd) in [(4usize, 12usize), (2, 64)] {
        let h = nh * hd;
        let lengths = [1usize, 5, 70, 130];
        let cu = cu_seqlens(&lengths);
        let t = *cu.last().unwrap() as usize;
        let seqs = b.seqs(&cu).unwrap();
        let x = up(&rand_vec(t * h, 1, 1.0), &[t, h]);
        let w = up(&rand_vec(h, 2, 1.0), &[h]);
        b.layer_norm_backward(&x, &w, &x, 1e-5).unwrap();
        let qkv = up(&rand_vec(t * 3 * h, 4, 1.0), &[t, 3 * h]);
        let (cos, sin) = kernels::rope::rope_tables(10_000.0, hd, 256);
        b.rope_backward(&qkv, &seqs, &up(&cos, &[256, hd / 2]), &up(&sin, &[256, hd / 2]), nh).unwrap();
        for window in [None, Some(4)] {
            let (out, lse) = b.attention(&qkv, &seqs, nh, window).unwrap();
            b.attention_backward(&qkv, &out, &lse, &x, &seqs, nh, window).unwrap();
        }
        let wqkv = up(&rand_vec(3 * h * h, 5, 0.1), &[3 * h, h]);
        b.matmul(&qkv, &wqkv).unwrap();
        b.matmul_tn(&qkv, &x).unwrap();
        b.sum_rows(&qkv).unwrap();
        b.sum_squares(&qkv).unwrap();
        b.scale(&x, 0.5).unwrap();
        b.gelu_backward(&x, &x).unwrap();
        b.tanh_backward(&x, &x).unwrap();
        b.geglu_backward(&up(&rand_vec(t * 2 * h, 6, 1.0), &[t, 2 * h]), &x).unwrap();
        b.mean_pool_backward(&up(&rand_vec(lengths.len() * h, 7, 1.0), &[lengths.len(), h]), &seqs).unwrap();
        b.scatter_rows(&up(&rand_vec(2 * h, 8, 1.0), &[2, h]), &b.upload_ids(&[0, 3]).unwrap(), t).unwrap();
        b.embedding_backward(&rand_ids(t, 9, 320), &x, 320).unwrap();
        let logits = up(&rand_vec(7 * 320, 10, 3.0), &[7, 320]);
        b.cross_entropy_backward(&logits, &b.upload_ids(&rand_ids(7, 11, 320)).unwrap(), 1.0 / 7.0).unwrap();
        b.label_rank(&logits, &b.upload_ids(&rand_ids(7, 12, 320)).unwrap()).unwrap();
    }
    // Parameters and gradients in row chunks, both optimizer rules.
    let chunked = b.clone().with_max_binding_bytes(100 * 48 * 4);
    let p = chunked.upload(&rand_vec(320 * 48, 12, 1.0), &[320, 48]).unwrap();
    let dy = chunked.upload(&rand_vec(9 * 320, 13, 1.0), &[9, 320]).unwrap();
    let g = chunked.matmul_tn(&dy, &chunked.upload(&rand_vec(9 * 48, 14, 1.0), &[9, 48]).unwrap()).unwrap();
    chunked.matmul(&dy, &p).unwrap();
    let g = chunked.add(&g, &chunked.embedding_backward(&rand_ids(40, 15, 320), &chunked.upload(&rand_vec(40 * 48, 16, 1.0), &[40, 48]).unwrap(), 320).unwrap()).unwrap();
    let zeros = chunked.upload(&vec![0.0; 320 * 48], &[320, 48]).unwrap();
    for rule in [Rule::AdamW, Rule::StableAdamW { max_lr: 1e-3 }] {
        let step = AdamStep { rule, lr: 1e-3, beta1: 0.9, beta2: 0.98, eps: 1e-6, weight_decay: 1e-2, step: 1 };
        let up = chunked.adam_step(&p, &g, &zeros, &zeros, &step).unwrap();
        block_on(chunked.read(&up.param)).unwrap();
    }
    block_on(chunked.read(&chunked.sum_squares(&g).unwrap())).unwrap();
}

/// Mixed-precision training on an f16 backend: f32 master weights cast to f16 for `linear` and
/// `matmul`, whole and in row chunks.
fn exercise_mixed_precision(b: kernels::GpuBackend) {
    for bytes in [usize::MAX, 100 * 48 * 4] {
        let b = b.clone().with_max_binding_bytes(bytes);
        let w = b.upload(&rand_vec(320 * 48, 1, 0.1), &[320, 48]).unwrap();
        b.linear(&b.upload(&rand_vec(9 * 48, 2, 1.0), &[9, 48]).unwrap(), &w, None).unwrap();
        block_on(b.read(&b.matmul(&b.upload(&rand_vec(9 * 320, 3, 1.0), &[9, 320]).unwrap(), &w).unwrap())).unwrap();
    }
}

fn workgroup_size(module: &naga::Module) -> u32 {
    module.entry_points.iter().map(|e| e.workgroup_size.iter().product::<u32>()).max().unwrap_or(0)
}

#[test]
fn every_kernel_validates_as_webgpu_wgsl() {
    static CAPTURE: Capture = Capture;
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    exercise_every_op(gpu());
    exercise_every_op(kernels::testing::gpu_f16());
    exercise_every_op(kernels::testing::gpu_f16_activations());
    exercise_training_ops(gpu());
    exercise_mixed_precision(kernels::testing::gpu_f16());
    let modules = MODULES.lock().unwrap().clone();
    let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    assert!(modules.iter().any(|(_, s)| s.contains("enable f16;")), "no f16 module was compiled");
    for expected in ["layer_norm", "add_layer_norm", "rope", "attention", "geglu", "gelu", "tanh", "add_kernel", "mean_pool", "gather", "gather_add", "copy", "cross_entropy", "add_bias", "matmul",
        // Training.
        "layer_norm_backward", "layer_norm_dw", "attention_delta", "attention_dkv", "attention_dq", "column_sum", "flat_sum",
        "scale", "fill", "gelu_backward", "tanh_backward", "geglu_backward", "embedding_backward", "mean_pool_backward", "scatter_rows",
        "cross_entropy_backward", "take_columns", "adamw", "stable_moments", "stable_rms", "stable_params", "cast", "label_rank"] {
        assert!(names.iter().any(|n| n.contains(expected)), "no module for {expected}; captured {names:?}");
    }
    let mut failures = Vec::new();
    for (name, source) in &modules {
        let module = match naga::front::wgsl::parse_str(source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {}", e.emit_to_string(source)));
                continue;
            }
        };
        // f16 kernels need WebGPU's `shader-f16` feature (and are only used where it exists).
        let f16 = source.contains("enable f16;");
        let caps = if f16 { Capabilities::SHADER_FLOAT16 } else { Capabilities::empty() };
        if let Err(e) = Validator::new(ValidationFlags::all(), caps).validate(&module) {
            failures.push(format!("{name}: invalid under WebGPU's baseline capabilities{}: {e:?}", if f16 { " + shader-f16" } else { "" }));
        }
        let storage = module.global_variables.iter().filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. })).count();
        if storage > 8 {
            failures.push(format!("{name}: binds {storage} storage buffers (WebGPU's default limit is 8)"));
        }
        let wg = workgroup_size(&module);
        if wg > 256 {
            failures.push(format!("{name}: {wg} invocations per workgroup (WebGPU allows 256)"));
        }
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let shared: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
        if shared > 16 * 1024 {
            failures.push(format!("{name}: {shared} bytes of workgroup memory (WebGPU guarantees 16384)"));
        }
    }
    assert!(failures.is_empty(), "{} of {} modules fail:\n{}", failures.len(), modules.len(), failures.join("\n"));
    eprintln!("{} WGSL modules validated: {}", modules.len(), names.join(", "));
}
