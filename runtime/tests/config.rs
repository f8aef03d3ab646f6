//! `config.json` of both families: defaults, real configurations, and errors that name the file
//! and the field.

use runtime::config::*;
use runtime::{ModelConfig, Result};
use serde_json::{Map, Value};

const TINY: &str = include_str!("../../tests/fixtures/tiny-modernbert-tokcls/config.json");
const BASE: &str = include_str!("../../tests/data/modernbert-configs/ModernBERT-base.config.json");
const LARGE: &str = include_str!("../../tests/data/modernbert-configs/ModernBERT-large.config.json");

fn edit(text: &str, f: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut v: Value = serde_json::from_str(text).unwrap();
    f(v.as_object_mut().unwrap());
    v.to_string()
}

#[test]
fn released_base_config() {
    let c = ModernBertConfig::from_json("base/config.json", BASE).unwrap();
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (768, 22, 12, 1152));
    assert_eq!(c.layer_types.iter().filter(|t| **t == LayerType::Full).count(), 8);
    assert_eq!(c.layer_types[0], LayerType::Full);
    assert_eq!(c.layer_types[1], LayerType::Sliding);
    assert_eq!((c.global_rope_theta, c.local_rope_theta, c.window()), (160_000.0, 10_000.0, 64));
    assert_eq!(c.architecture, Some(Architecture::MaskedLm));
    assert_eq!(c.classifier_pooling, Pooling::Mean);
}

#[test]
fn released_large_config() {
    let c = ModernBertConfig::from_json("large/config.json", LARGE).unwrap();
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (1024, 28, 16, 2624));
    assert_eq!(c.layer_types.iter().filter(|t| **t == LayerType::Full).count(), 10);
}

#[test]
fn both_spellings_agree() {
    let both = ModernBertConfig::from_json("tiny", TINY).unwrap();
    let legacy = ModernBertConfig::from_json(
        "tiny",
        &edit(TINY, |m| {
            m.remove("layer_types");
            m.remove("rope_parameters");
        }),
    )
    .unwrap();
    let v5 = ModernBertConfig::from_json(
        "tiny",
        &edit(TINY, |m| {
            m.remove("global_attn_every_n_layers");
            m.remove("global_rope_theta");
            m.remove("local_rope_theta");
        }),
    )
    .unwrap();
    for c in [&legacy, &v5] {
        assert_eq!(c.layer_types, both.layer_types);
        assert_eq!((c.global_rope_theta, c.local_rope_theta), (160_000.0, 10_000.0));
    }
    assert_eq!(both.layer_types, vec![LayerType::Full, LayerType::Sliding, LayerType::Sliding, LayerType::Full]);
    assert_eq!(both.labels, vec!["O", "B-PROBLEM", "I-PROBLEM", "B-DRUG", "I-DRUG"]);
}

#[test]
fn rope_parameters_win_over_legacy_keys() {
    let c = ModernBertConfig::from_json(
        "tiny",
        &edit(TINY, |m| {
            m.insert("rope_parameters".into(), serde_json::json!({"full_attention": {"rope_type": "default", "rope_theta": 80000.0}}));
            m.insert("local_rope_theta".into(), serde_json::json!(5000.0));
        }),
    )
    .unwrap();
    assert_eq!((c.global_rope_theta, c.local_rope_theta), (80_000.0, 5_000.0));
}

fn message(text: &str) -> String {
    ModernBertConfig::from_json("dir/config.json", text).unwrap_err().to_string()
}

const BERT_TOKCLS: &str = include_str!("../../tests/fixtures-bert/tiny-bert-tokcls/config.json");
const BERT_MLM: &str = include_str!("../../tests/fixtures-bert/tiny-bert-mlm/config.json");

fn bert(text: &str) -> Result<BertConfig> {
    match ModelConfig::from_json("bert/config.json", text)? {
        ModelConfig::Bert(c) => Ok(c),
        ModelConfig::ModernBert(_) => panic!("read as ModernBERT"),
    }
}

#[test]
fn bert_fixture_configs() {
    let c = bert(BERT_TOKCLS).unwrap();
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (48, 3, 4, 96));
    assert_eq!((c.max_position_embeddings, c.type_vocab_size, c.pad_token_id, c.vocab_size), (64, 2, 303, 320));
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.architecture, Some(Architecture::TokenClassification));
    assert_eq!(c.labels, vec!["O", "B-PROBLEM", "I-PROBLEM", "B-DRUG", "I-DRUG"]);
    assert!(c.declares_model_type);
    assert_eq!(bert(BERT_MLM).unwrap().architecture, Some(Architecture::MaskedLm));
    // A ModernBERT config still reads as ModernBERT, the same as through its own parser.
    let m = ModelConfig::from_json("tiny", TINY).unwrap();
    assert_eq!(m.modernbert("test").unwrap().layer_types, ModernBertConfig::from_json("tiny", TINY).unwrap().layer_types);
    assert!(ModelConfig::from_json("b", BERT_MLM)
        .unwrap()
        .modernbert("pre-training")
        .unwrap_err()
        .to_string()
        .contains("pre-training needs a ModernBERT model"));
}

#[test]
fn google_converted_bert_config_without_model_type() {
    // Bio_ClinicalBERT's config.json as published: no model_type, no architectures, defaults elsewhere.
    let text = r#"{"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 768,
        "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 512, "num_attention_heads": 12,
        "num_hidden_layers": 12, "type_vocab_size": 2, "vocab_size": 28996}"#;
    let c = bert(text).unwrap();
    assert!(!c.declares_model_type);
    assert_eq!((c.architecture, c.pad_token_id, c.layer_norm_eps, c.max_position_embeddings), (None, 0, 1e-12, 512));
    let pre = bert(&edit(text, |m| {
        m.insert("architectures".into(), serde_json::json!(["BertForPreTraining"]));
    }))
    .unwrap();
    assert_eq!(pre.architecture, Some(Architecture::MaskedLm));
    assert_eq!(pre.architecture_name.as_deref(), Some("BertForPreTraining"));
}

#[test]
fn bert_refusals_name_the_field() {
    let refuse = |key: &str, value: serde_json::Value, needle: &str| {
        let m = bert(&edit(BERT_TOKCLS, |m| {
            m.insert(key.into(), value);
        }))
        .unwrap_err()
        .to_string();
        assert!(m.starts_with("bert/config.json: ") && m.contains(needle), "{key}: {m}");
    };
    refuse("hidden_act", serde_json::json!("gelu_new"), "field \"hidden_act\": \"gelu_new\" is not supported");
    refuse("position_embedding_type", serde_json::json!("relative_key"), "\"position_embedding_type\": \"relative_key\"");
    refuse("is_decoder", serde_json::json!(true), "field \"is_decoder\"");
    refuse("add_cross_attention", serde_json::json!(true), "field \"add_cross_attention\"");
    refuse("num_attention_heads", serde_json::json!(5), "head dimension");
    refuse("pad_token_id", serde_json::json!(320), "outside the vocabulary of 320");
    refuse("architectures", serde_json::json!(["BertForQuestionAnswering"]), "\"BertForQuestionAnswering\" is not supported");
    refuse("model_type", serde_json::json!("roberta"), "\"roberta\" is not supported; expected \"modernbert\"");
    let m = ModelConfig::from_json("x/config.json", r#"{"hidden_size": 4}"#).unwrap_err().to_string();
    assert!(m.contains("missing required field \"model_type\""), "{m}");
}

#[test]
fn errors_name_the_file_and_field() {
    let m = message(&edit(TINY, |m| {
        m.insert("hidden_size".into(), serde_json::json!("48"));
    }));
    assert!(m.starts_with("dir/config.json: field \"hidden_size\": expected a non-negative integer"), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("model_type".into(), serde_json::json!("llama"));
    }));
    assert!(m.contains("\"model_type\": \"llama\" is not supported"), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("architectures".into(), serde_json::json!(["ModernBertForQuestionAnswering"]));
    }));
    assert!(m.contains("ModernBertForQuestionAnswering\" is not supported"), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("layer_types".into(), serde_json::json!(["full_attention"]));
    }));
    assert!(m.contains("\"layer_types\": 1 entries for 4 layers"), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("hidden_activation".into(), serde_json::json!("gelu_pytorch_tanh"));
    }));
    assert!(m.contains("\"hidden_activation\""), "{m}");
    let m = message(&edit(TINY, |m| {
        m.remove("vocab_size");
    }));
    assert!(m.contains("missing required field \"vocab_size\""), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("norm_bias".into(), serde_json::json!("no"));
    }));
    assert!(m.contains("field \"norm_bias\": expected true or false, found \"no\""), "{m}");
    let m = message("{\"model_type\": ");
    assert!(m.starts_with("dir/config.json: not valid JSON"), "{m}");
    let m = message(&edit(TINY, |m| {
        m.insert("rope_parameters".into(), serde_json::json!({"full_attention": {"rope_type": "yarn", "rope_theta": 1.0}}));
    }));
    assert!(m.contains("rope_parameters.full_attention.rope_type"), "{m}");
}
