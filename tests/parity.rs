//! The encoder and every head match transformers' ModernBERT on both fixture models, on both
//! backends, to 1e-4 on real tokens; and the fixture's RoPE tables are what we compute.

use kernels::tolerance::{assert_close, Tolerance, PARITY_F32};
use kernels::{testing, Backend};
use runtime::check::{check, CheckReport};
use runtime::folder::ModelFolder;
use runtime::weights::Checkpoint;
use runtime::ModernBert;
use workspace_tests::fixture;

fn run<B: Backend>(be: &B, model: &str) -> CheckReport {
    let folder = ModelFolder::open(&fixture(model)).unwrap();
    let model = ModernBert::load(be, folder.config, &folder.checkpoint).unwrap();
    let reference = Checkpoint::open_file(&fixture("reference.safetensors")).unwrap();
    testing::block_on(check(be, &model, &reference)).unwrap()
}

fn assert_report(report: &CheckReport, expected: &[&str]) {
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    for e in expected {
        assert!(names.contains(e), "{e} was not compared; compared {names:?}");
    }
    for r in &report.rows {
        assert!(r.max_abs_err <= PARITY_F32, "{}: max abs error {:e} > {:e}\n{}", r.name, r.max_abs_err, PARITY_F32, report.render());
    }
}

const ENCODER: [&str; 10] = [
    "embeddings", "attn_out_0", "layer_0", "attn_out_1", "layer_1", "attn_out_2", "layer_2", "attn_out_3", "layer_3", "last_hidden_state",
];

fn mlm_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-modernbert-mlm");
    let mut expected = ENCODER.to_vec();
    expected.extend(["mlm_logits", "mlm_loss"]);
    assert_report(&report, &expected);
    assert_eq!(report.rows.len(), 12);
}

fn tokcls_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-modernbert-tokcls");
    let mut expected = ENCODER.to_vec();
    expected.extend(["tokcls_logits", "tokcls_loss", "seqcls_logits_cls", "seqcls_logits_mean", "seqcls_loss_cls", "seqcls_loss_mean"]);
    assert_report(&report, &expected);
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
    let w = folder.config.window();
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
