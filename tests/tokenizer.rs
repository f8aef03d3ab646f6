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
    assert!(m.starts_with("some/tokenizer.json: not valid JSON (key must be a string at line 1 column 2)"), "{m}");
    // A tokenizer without the special tokens the names call for.
    let bytes = std::fs::read(fixture("tiny-modernbert-mlm/tokenizer.json")).unwrap();
    let names = SpecialNames { cls: "<s>".into(), ..SpecialNames::default() };
    let m = Tokenizer::from_bytes("tok.json", &bytes, names).err().unwrap().to_string();
    assert!(m.contains("has no CLS token \"<s>\""), "{m}");
}

/// The BERT fixture's `tokenizer.json` gives what `AutoTokenizer` gave (MANIFEST), single texts
/// and pairs with their token types.
#[test]
fn bert_fixture_tokenizer_matches_transformers() {
    let t = Tokenizer::from_dir(&workspace_tests::bert_fixture("tiny-bert-mlm")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(workspace_tests::bert_fixture("MANIFEST.json")).unwrap()).unwrap();
    let examples = manifest["metadata"]["tokenizer_examples"].as_array().unwrap();
    assert_eq!(examples.len(), 2);
    let ints = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    for e in examples {
        let text = e["text"].as_str().unwrap();
        let enc = match e["text_pair"].as_str() {
            Some(b) => t.encode_pair(text, b).unwrap(),
            None => t.encode(text).unwrap(),
        };
        assert_eq!(enc.ids, ints(&e["input_ids"]), "{text}");
        assert_eq!(enc.type_ids, ints(&e["token_type_ids"]), "{text}");
    }
}

/// A BERT folder without tokenizer.json: WordPiece from vocab.txt with tokenizer_config.json's
/// lowercasing gives transformers' ids (golden file made by `BertTokenizer`), through the same
/// folder loading the CLI uses.
#[test]
fn wordpiece_folder_matches_transformers() {
    let dir = workspace_tests::data("bert-wordpiece");
    let t = Tokenizer::from_dir(&dir).unwrap();
    assert!(t.description.contains("WordPiece") && t.description.contains("lowercased (do_lower_case in tokenizer_config.json)"), "{}", t.description);
    assert_eq!((t.specials.cls, t.specials.sep, t.specials.pad, t.specials.mask), (301, 302, 303, Some(304)));
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ints = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    for case in golden.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let enc = match case["text_pair"].as_str() {
            Some(b) => t.encode_pair(text, b).unwrap(),
            None => t.encode(text).unwrap(),
        };
        assert_eq!(enc.ids, ints(&case["ids"]), "{text:?}");
        assert_eq!(enc.type_ids, ints(&case["type_ids"]), "{text:?}");
    }
    // Without tokenizer_config.json transformers lowercases too, and `info` says why.
    let bare = workspace_tests::scratch("wordpiece-bare");
    std::fs::copy(dir.join("vocab.txt"), bare.join("vocab.txt")).unwrap();
    let t2 = Tokenizer::from_dir(&bare).unwrap();
    assert!(t2.description.contains("transformers' default do_lower_case = true"), "{}", t2.description);
    assert_eq!(t2.encode("The Patient").unwrap().ids, t.encode("the patient").unwrap().ids);
    // A folder with none of the files names what it looked for.
    let empty = workspace_tests::scratch("no-tokenizer");
    let m = Tokenizer::from_dir(&empty).err().unwrap().to_string();
    assert!(m.contains("expected tokenizer.json, or vocab.txt (WordPiece), or vocab.json with merges.txt"), "{m}");
}

/// A long text is tokenized in pieces cut where whitespace starts (bounded memory for huge notes):
/// the tokens, offsets and word groups are those of one call over the whole text, for the real
/// ModernBERT tokenizer (byte-level BPE) and a WordPiece one, on real notes with runs of spaces,
/// newlines and non-ASCII text.
#[test]
fn long_texts_in_pieces_tokenize_as_one() {
    let opts = runtime::input::InputOptions { text_column: Some("note".into()), ..Default::default() };
    let notes = runtime::input::read_documents(data("aci-bench/valid.csv").to_str().unwrap(), &opts).unwrap().documents;
    let mut text: String = notes.iter().take(4).map(|d| d.text.as_str()).collect::<Vec<_>>().join("\n\n  \n");
    text.push_str("  Zoë Ödegaard,\tMRN 0042137   seen 3/14/2019 — café  ");
    let wordpiece = Tokenizer::from_dir(&data("bert-wordpiece")).unwrap();
    for t in [modernbert_tokenizer(), wordpiece] {
        let whole = t.encode_plain(&text).unwrap();
        for piece in [97, 1000, 4096] {
            let cut = t.encode_plain_in_pieces(&text, piece).unwrap();
            assert_eq!(cut.ids, whole.ids, "{}: pieces of {piece} bytes", t.description);
            assert_eq!(cut.offsets, whole.offsets, "{}: pieces of {piece} bytes", t.description);
            assert_eq!(cut.words, whole.words, "{}: pieces of {piece} bytes", t.description);
        }
    }
}
