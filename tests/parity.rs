//! The encoder and every head match transformers' ModernBERT on both fixture models, on both
//! backends, to 1e-4 on real tokens; and the fixture's RoPE tables are what we compute.

use kernels::prelude::*;
use kernels::testing;
use kernels::tolerance::{assert_close, parity_with_activations, Parity, Tolerance};
use runtime::check::{check, CheckReport};
use runtime::folder::ModelFolder;
use runtime::weights::Checkpoint;
use runtime::Model;
use workspace_tests::fixture;

fn run<B: Backend>(be: &B, model: &str) -> CheckReport {
    let folder = ModelFolder::open(&fixture(model)).unwrap();
    let model = Model::load(be, folder.config, &folder.checkpoint).unwrap();
    let reference = Checkpoint::open_file(&fixture("reference.safetensors")).unwrap();
    testing::block_on(check(be, &model, &reference)).unwrap()
}

fn assert_report(report: &CheckReport, expected: &[&str], tol: Parity) {
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    for e in expected {
        assert!(names.contains(e), "{e} was not compared; compared {names:?}");
    }
    for r in &report.rows {
        let err = r.err(tol.scale);
        assert!(err <= tol.limit, "{}: {} {:e} > {:e}\n{}", r.name, tol.scale.describe(), err, tol.limit, report.render());
    }
}

const ENCODER: [&str; 10] = [
    "embeddings", "attn_out_0", "layer_0", "attn_out_1", "layer_1", "attn_out_2", "layer_2", "attn_out_3", "layer_3", "last_hidden_state",
];

fn mlm_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-modernbert-mlm");
    let mut expected = ENCODER.to_vec();
    expected.extend(["mlm_logits", "mlm_loss", "rope_cos_full_attention", "rope_sin_sliding_attention"]);
    assert_report(&report, &expected, parity_with_activations(be.dtype(), be.activation_dtype()));
    assert_eq!(report.rows.len(), 16);
    // What is not compared is listed with the reason.
    assert!(report.skipped.iter().any(|(n, why)| n == "tokcls_logits" && why.contains("no classifier")));
    assert!(report.skipped.iter().any(|(n, why)| n == "grad.decoder.bias" && why.contains("training")));
}

fn tokcls_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-modernbert-tokcls");
    let mut expected = ENCODER.to_vec();
    expected.extend(["tokcls_logits", "tokcls_loss", "seqcls_logits_cls", "seqcls_logits_mean", "seqcls_loss_cls", "seqcls_loss_mean"]);
    assert_report(&report, &expected, parity_with_activations(be.dtype(), be.activation_dtype()));
}

#[test]
fn cpu_mlm_model() {
    mlm_model(&testing::cpu());
}
#[test]
fn wgpu_mlm_model() {
    mlm_model(&testing::gpu());
}
#[test]
fn wgpu_f16_mlm_model() {
    mlm_model(&testing::gpu_f16());
}
#[test]
fn wgpu_f16_tokcls_model() {
    tokcls_model(&testing::gpu_f16());
}
#[test]
fn wgpu_f16_activations_mlm_model() {
    mlm_model(&testing::gpu_f16_activations());
}
#[test]
fn wgpu_f16_activations_tokcls_model() {
    tokcls_model(&testing::gpu_f16_activations());
}

/// f16 end to end really stores activations in f16: its encoder output differs from the one with
/// f16 weights and f32 activations, by about f16's rounding, not by a mistake.
#[test]
fn f16_activations_are_f16_and_close_to_f32_activations() {
    let hidden = |be: &kernels::GpuBackend| {
        let folder = ModelFolder::open(&fixture("tiny-modernbert-mlm")).unwrap();
        let model = Model::load(be, folder.config, &folder.checkpoint).unwrap();
        let ids: Vec<Vec<u32>> = (0..3).map(|b| testing::rand_ids(37 + 20 * b, b as u32 + 1, 300)).collect();
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let batch = model.batch(be, &seqs).unwrap();
        testing::block_on(be.read(&model.encode(be, &batch, None).unwrap())).unwrap()
    };
    let end_to_end = testing::gpu_f16_activations();
    assert!(end_to_end.device_info().details.iter().any(|(k, v)| k == "activations stored as" && v == "f16"));
    let (a, b) = (hidden(&end_to_end), hidden(&testing::gpu_f16()));
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max > 0.0, "f16 activations gave bit-identical output to f32 activations");
    let cos = kernels::tolerance::cosine(&a, &b);
    assert!(cos > 0.9999, "cosine {cos}, max abs difference {max}");
}

#[test]
fn cpu_tokcls_model() {
    tokcls_model(&testing::cpu());
}
#[test]
fn wgpu_tokcls_model() {
    tokcls_model(&testing::gpu());
}

/// Our float32 RoPE tables equal the ones transformers used (stored in the reference).
#[test]
fn rope_tables_match_transformers() {
    let reference = Checkpoint::open_file(&fixture("reference.safetensors")).unwrap();
    for (theta, kind) in [(160_000.0, "full_attention"), (10_000.0, "sliding_attention")] {
        let (cos, sin) = kernels::rope::rope_tables(theta, 12, 40);
        // HF stores the doubled table [40, 12] = concat(cos, cos); ours is the half [40, 6].
        for (ours, name) in [(cos, format!("rope_cos_{kind}")), (sin, format!("rope_sin_{kind}"))] {
            let theirs = reference.require(&name).unwrap().to_f32().unwrap();
            let half: Vec<f32> = theirs.chunks(12).flat_map(|r| r[..6].to_vec()).collect();
            let second: Vec<f32> = theirs.chunks(12).flat_map(|r| r[6..].to_vec()).collect();
            assert_eq!(half, second, "{name}: the two halves of the HF table differ");
            assert_close(&name, &ours, &half, Tolerance::new(1e-6, 0.0));
        }
    }
}

/// The model's attention masks are the fixture's: checked through the reference's `allowed_*`
/// tensors against the window rule the kernels implement (|i − j| ≤ local_attention / 2).
#[test]
fn window_rule_matches_the_fixture_masks() {
    let reference = Checkpoint::open_file(&fixture("reference.safetensors")).unwrap();
    let mask = reference.require("attention_mask").unwrap().to_i64().unwrap();
    let folder = ModelFolder::open(&fixture("tiny-modernbert-mlm")).unwrap();
    let w = folder.config.modernbert("the window test").unwrap().window();
    for (name, window) in [("allowed_full", None), ("allowed_sliding", Some(w))] {
        let allowed = reference.require(name).unwrap().to_i64().unwrap();
        for b in 0..3 {
            for i in 0..40 {
                if mask[b * 40 + i] == 0 {
                    continue; // pad queries are implementation-defined
                }
                for j in 0..40 {
                    let ours = mask[b * 40 + j] == 1 && window.is_none_or(|w| i.abs_diff(j) <= w);
                    assert_eq!(allowed[(b * 40 + i) * 40 + j] == 1, ours, "{name}[{b}, {i}, {j}]");
                }
            }
        }
    }
}

/// The f16 path computes exactly the f32 model with its weight matrices rounded to f16: the GPU
/// in f16 mode matches the CPU backend running those rounded weights, at the float32 tolerance.
#[test]
fn wgpu_f16_is_the_model_with_rounded_weights() {
    use runtime::weights::serialize_f32;
    let folder = ModelFolder::open(&fixture("tiny-modernbert-mlm")).unwrap();
    let mut names: Vec<&str> = folder.checkpoint.names().collect();
    names.sort();
    let rounded: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .map(|n| {
            let t = folder.checkpoint.get(n).unwrap();
            let mut v = t.to_f32().unwrap();
            if t.shape.len() >= 2 {
                v = testing::representable(kernels::backend::DType::F16, v);
            }
            (n.to_string(), t.shape.to_vec(), v)
        })
        .collect();
    let ckpt = Checkpoint::from_bytes(vec![("rounded.safetensors".into(), serialize_f32(&rounded, None).unwrap())]).unwrap();
    let cpu = testing::cpu();
    let cpu_model = Model::load(&cpu, folder.config.clone(), &ckpt).unwrap();
    let gpu = testing::gpu_f16();
    let gpu_model = Model::load(&gpu, folder.config.clone(), &folder.checkpoint).unwrap();
    let seqs: [&[u32]; 2] = [&[301, 17, 44, 90, 250, 302], &[301, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 302]];
    let a = cpu_model.encode(&cpu, &cpu_model.batch(&cpu, &seqs).unwrap(), None).unwrap();
    let b = gpu_model.encode(&gpu, &gpu_model.batch(&gpu, &seqs).unwrap(), None).unwrap();
    let (a, b) = (testing::block_on(cpu.read(&a)).unwrap(), testing::block_on(gpu.read(&b)).unwrap());
    assert_close("f16 GPU vs CPU with rounded weights", &b, &a, kernels::tolerance::Tolerance::new(kernels::tolerance::PARITY_F32, 0.0));
}
