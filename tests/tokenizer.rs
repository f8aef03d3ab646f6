//! The real ModernBERT tokenizer reproduces transformers' ids exactly, and a tokenizer whose
//! special tokens disagree with the config is refused with a message naming both files.

use runtime::tokenize::{SpecialNames, Tokenizer};
use runtime::ModernBertConfig;
use workspace_tests::{data, fixture};

fn modernbert_tokenizer() -> Tokenizer {
    let dir = data("modernbert-tokenizer");
    Tokenizer::from_dir(&dir).unwrap()
}

#[test]
fn golden_token_ids() {
    let t = modernbert_tokenizer();
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data("modernbert-tokenizer/golden_token_ids.json")).unwrap()).unwrap();
    let cases = golden.as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(t.encode(text).unwrap().ids, expected, "text {text:?}");
    }
}

#[test]
fn special_tokens_of_the_real_tokenizer() {
    let t = modernbert_tokenizer();
    let s = &t.specials;
    assert_eq!((s.cls, s.sep, s.pad, s.mask, s.unk), (50281, 50282, 50283, Some(50284), Some(50280)));
    let base = ModernBertConfig::from_file(&data("modernbert-configs/ModernBERT-base.config.json")).unwrap();
    t.check_config(&runtime::ModelConfig::ModernBert(base.clone())).unwrap();
    // Offsets point into the text.
    let text = "Patient denies chest pain.";
    let e = t.encode(text).unwrap();
    let pieces: Vec<&str> = e.offsets.iter().zip(&e.special).filter(|(_, s)| !**s).map(|(o, _)| &text[o.0..o.1]).collect();
    assert_eq!(pieces.concat().replace(' ', ""), text.replace(' ', ""));
}

#[test]
fn special_token_mismatch_is_refused() {
    let t = Tokenizer::from_dir(&fixture("tiny-modernbert-mlm")).unwrap();
    let mut config = ModernBertConfig::from_file(&fixture("tiny-modernbert-mlm/config.json")).unwrap();
    t.check_config(&runtime::ModelConfig::ModernBert(config.clone())).unwrap();
    config.pad_token_id = 5;
    let m = t.check_config(&runtime::ModelConfig::ModernBert(config.clone())).unwrap_err().to_string();
    assert!(m.contains("tokenizer.json") && m.contains("[PAD]") && m.contains("has id 303") && m.contains("\"pad_token_id\" is 5"), "{m}");
    config.pad_token_id = 303;
    config.vocab_size = 300;
    let m = t.check_config(&runtime::ModelConfig::ModernBert(config.clone())).unwrap_err().to_string();
    assert!(m.contains("vocab_size"), "{m}");
}

#[test]
fn unreadable_tokenizer_names_the_file() {
    let m = Tokenizer::from_bytes("some/tokenizer.json", b"{not json", SpecialNames::default()).err().unwrap().to_string();
    assert!(m.starts_with("some/tokenizer.json: cannot read tokenizer"), "{m}");
    // A tokenizer without the special tokens the names call for.
    let bytes = std::fs::read(fixture("tiny-modernbert-mlm/tokenizer.json")).unwrap();
    let names = SpecialNames { cls: "<s>".into(), ..SpecialNames::default() };
    let m = Tokenizer::from_bytes("tok.json", &bytes, names).err().unwrap().to_string();
    assert!(m.contains("has no CLS token \"<s>\""), "{m}");
}
