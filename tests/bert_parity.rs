//! Classic BERT matches transformers' `BertForMaskedLM`, `BertForTokenClassification` and
//! `BertForSequenceClassification` on the fixture models, on both backends, to 1e-4 on real
//! tokens, for single segments and sentence pairs (token types 0 and 1); and the loader reads
//! the checkpoint spellings real BERT uploads use.

use kernels::prelude::*;
use kernels::testing;
use kernels::tolerance::{parity_with_activations, Parity};
use runtime::Encoder;
use runtime::check::{check, load_for_check, CheckReport};
use runtime::folder::ModelFolder;
use runtime::weights::{serialize_f32, Checkpoint};
use runtime::{Bert, Model, ModelConfig};
use workspace_tests::bert_fixture;

fn run<B: Backend>(be: &B, model: &str) -> CheckReport {
    let folder = ModelFolder::open(&bert_fixture(model)).unwrap();
    let reference = Checkpoint::open_file(&bert_fixture("reference.safetensors")).unwrap();
    let model = load_for_check(be, folder.config, &folder.checkpoint, &reference).unwrap();
    match &model {
        Model::Bert(b) => assert!(b.pooler_source.is_some(), "the fixture checkpoints have no pooler: it must come from the reference"),
        Model::ModernBert(_) => panic!("a BERT fixture loaded as ModernBERT"),
    }
    testing::block_on(check(be, &model, &reference)).unwrap()
}

fn assert_report(report: &CheckReport, expected: &[&str], tol: Parity) {
    let names: Vec<&str> = report.rows.iter().map(|r| r.name.as_str()).collect();
    for e in expected {
        assert!(names.contains(e), "{e} was not compared; compared {names:?}");
    }
    assert_eq!(names.len(), expected.len(), "compared {names:?}");
    for r in &report.rows {
        let err = r.err(tol.scale);
        assert!(err <= tol.limit, "{}: {} {:e} > {:e}\n{}", r.name, tol.scale.describe(), err, tol.limit, report.render());
    }
}

const ENCODER: [&str; 9] =
    ["embeddings", "attention_0", "layer_0", "attention_1", "layer_1", "attention_2", "layer_2", "last_hidden_state", "pooler_output"];
const PAIR: [&str; 3] = ["pair.embeddings", "pair.last_hidden_state", "pair.pooler_output"];

fn mlm_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-bert-mlm");
    let mut expected = ENCODER.to_vec();
    expected.extend(PAIR);
    expected.extend(["mlm_logits", "mlm_loss", "pair.mlm_logits", "pair.mlm_loss"]);
    assert_report(&report, &expected, parity_with_activations(be.dtype(), be.activation_dtype()));
    assert!(report.skipped.iter().any(|(n, why)| n == "tokcls_logits" && why.contains("no classifier")));
    assert!(report.skipped.iter().any(|(n, why)| n == "grad.cls.predictions.bias" && why.contains("training")));
}

fn tokcls_model<B: Backend>(be: &B) {
    let report = run(be, "tiny-bert-tokcls");
    let mut expected = ENCODER.to_vec();
    expected.extend(PAIR);
    expected.extend(["tokcls_logits", "tokcls_loss", "seqcls_logits", "seqcls_loss", "pair.tokcls_logits", "pair.seqcls_logits"]);
    assert_report(&report, &expected, parity_with_activations(be.dtype(), be.activation_dtype()));
}

#[test]
fn cpu_mlm_model() {
    mlm_model(&testing::cpu());
}
#[test]
fn cpu_tokcls_model() {
    tokcls_model(&testing::cpu());
}
#[test]
fn wgpu_mlm_model() {
    mlm_model(&testing::gpu());
}
#[test]
fn wgpu_tokcls_model() {
    tokcls_model(&testing::gpu());
}
#[test]
fn wgpu_f16_activations_tokcls_model() {
    tokcls_model(&testing::gpu_f16_activations());
}

/// The MLM checkpoint's tensors, as (name, shape, values) in file order.
fn mlm_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let ckpt = Checkpoint::open_dir(&bert_fixture("tiny-bert-mlm")).unwrap();
    let mut names: Vec<String> = ckpt.names().map(str::to_string).collect();
    names.sort();
    names.into_iter().map(|n| {
        let t = ckpt.get(&n).unwrap();
        (n.clone(), t.shape.to_vec(), t.to_f32().unwrap())
    }).collect()
}

fn config() -> runtime::BertConfig {
    match ModelConfig::from_file(&bert_fixture("tiny-bert-mlm/config.json")).unwrap() {
        ModelConfig::Bert(c) => c,
        ModelConfig::ModernBert(_) => unreachable!(),
    }
}

/// Masked-LM logits of two short sequences (one a pair) with the given tensors.
fn logits(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<f32> {
    let be = testing::cpu();
    let ckpt = Checkpoint::from_bytes(vec![("variant.safetensors".into(), serialize_f32(tensors, None).unwrap())]).unwrap();
    let model = Bert::load(&be, config(), &ckpt).unwrap();
    let seqs: [&[u32]; 2] = [&[301, 17, 44, 90, 250, 302], &[301, 5, 6, 302, 7, 8, 302]];
    let types: [&[u32]; 2] = [&[0; 6], &[0, 0, 0, 0, 1, 1, 1]];
    let batch = model.batch(&be, &seqs, Some(&types)).unwrap();
    let hidden = model.encode(&be, &batch, None).unwrap();
    testing::block_on(be.read(&model.mlm_logits(&be, &hidden).unwrap())).unwrap()
}

/// Every spelling of the same BERT that real uploads use loads to the same model: TF-era
/// `gamma`/`beta`, a stored copy of the tied decoder, the old `decoder.bias` name, the NSP head,
/// the pooler and the `position_ids` buffer of `BertForPreTraining` exports. A decoder that
/// differs from the word embeddings is used (untied), as transformers does.
#[test]
fn checkpoint_spellings_load_the_same_model() {
    let base = mlm_tensors();
    let expected = logits(&base);
    let get = |name: &str| base.iter().find(|(n, _, _)| n == name).unwrap().clone();
    let (_, wshape, word) = get("bert.embeddings.word_embeddings.weight");
    let (_, bshape, bias) = get("cls.predictions.bias");

    let renamed: Vec<_> = base
        .iter()
        .map(|(n, s, v)| (n.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"), s.clone(), v.clone()))
        .collect();
    assert_eq!(logits(&renamed), expected, "LayerNorm gamma/beta");

    let mut pretraining = base.clone();
    pretraining.push(("cls.predictions.decoder.weight".into(), wshape.clone(), word.clone()));
    pretraining.push(("cls.predictions.decoder.bias".into(), bshape.clone(), bias.clone()));
    pretraining.push(("cls.seq_relationship.weight".into(), vec![2, 48], vec![0.5; 96]));
    pretraining.push(("cls.seq_relationship.bias".into(), vec![2], vec![0.1; 2]));
    pretraining.push(("bert.pooler.dense.weight".into(), vec![48, 48], vec![0.01; 48 * 48]));
    pretraining.push(("bert.pooler.dense.bias".into(), vec![48], vec![0.0; 48]));
    pretraining.push(("bert.embeddings.position_ids".into(), vec![1, 64], (0..64).map(|i| i as f32).collect()));
    assert_eq!(logits(&pretraining), expected, "BertForPreTraining extras");

    let mut old_bias: Vec<_> = base.iter().filter(|(n, _, _)| n != "cls.predictions.bias").cloned().collect();
    old_bias.push(("cls.predictions.decoder.bias".into(), bshape, bias));
    assert_eq!(logits(&old_bias), expected, "decoder.bias alias");

    let mut untied = base.clone();
    untied.push(("cls.predictions.decoder.weight".into(), wshape, word.iter().map(|w| w + 1.0).collect()));
    let moved = logits(&untied);
    let diff = moved.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 0.1, "an untied decoder must be used (max change {diff})");
}

/// A bare `BertModel` checkpoint (no `bert.` prefix) gives the same hidden states.
#[test]
fn bare_encoder_names_load() {
    let be = testing::cpu();
    let base = mlm_tensors();
    let bare: Vec<_> = base.iter().filter_map(|(n, s, v)| n.strip_prefix("bert.").map(|n| (n.to_string(), s.clone(), v.clone()))).collect();
    let hidden = |tensors: &[(String, Vec<usize>, Vec<f32>)], arch| {
        let ckpt = Checkpoint::from_bytes(vec![("x.safetensors".into(), serialize_f32(tensors, None).unwrap())]).unwrap();
        let mut c = config();
        c.architecture = arch;
        let model = Bert::load(&be, c, &ckpt).unwrap();
        let batch = model.batch(&be, &[&[301, 17, 44, 302]], None).unwrap();
        testing::block_on(be.read(&model.encode(&be, &batch, None).unwrap())).unwrap()
    };
    assert_eq!(hidden(&bare, Some(runtime::config::Architecture::Model)), hidden(&base, None));
}

/// Token types all 0 are what no token types mean (transformers: token_type_ids=None); the
/// second segment's type changes the output; a type the model does not have is refused.
#[test]
fn token_types() {
    let be = testing::cpu();
    let folder = ModelFolder::open(&bert_fixture("tiny-bert-tokcls")).unwrap();
    let model = Model::load(&be, folder.config, &folder.checkpoint).unwrap();
    let seqs: [&[u32]; 1] = [&[301, 17, 44, 302, 90, 250, 302]];
    let run = |batch| testing::block_on(be.read(&model.encode(&be, &batch, None).unwrap())).unwrap();
    let none = run(model.batch(&be, &seqs).unwrap());
    let zeros = run(model.batch_typed(&be, &seqs, &[&[0; 7]]).unwrap());
    let pair = run(model.batch_typed(&be, &seqs, &[&[0, 0, 0, 0, 1, 1, 1]]).unwrap());
    assert_eq!(none, zeros);
    assert_ne!(none, pair);
    let m = model.batch_typed(&be, &seqs, &[&[0, 0, 0, 0, 2, 2, 2]]).err().unwrap().to_string();
    assert!(m.contains("token type 2") && m.contains("2 types"), "{m}");
    let m = model.batch_typed(&be, &seqs, &[&[0, 0]]).err().unwrap().to_string();
    assert!(m.contains("7 tokens but 2 token types"), "{m}");
    // The position table has 64 rows: a longer sequence is refused, never truncated.
    let long: Vec<u32> = (0..65).map(|i| i % 300).collect();
    let m = model.batch(&be, &[&long]).err().unwrap().to_string();
    assert!(m.contains("65 tokens, more than the model's context of 64"), "{m}");
}
