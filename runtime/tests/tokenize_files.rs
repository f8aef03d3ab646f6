//! Tokenizers built from vocab.txt (WordPiece) and vocab.json + merges.txt (byte-level BPE).

use runtime::tokenize_files::*;
use serde_json::Value;
use tokenizers::Tokenizer;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{DATA}{path}")).unwrap_or_else(|e| panic!("{DATA}{path}: {e}"))
}

fn options_from(files: &[&str]) -> FileTokenizerOptions {
    let mut options = FileTokenizerOptions::default();
    for file in files {
        options.update_from_json(file, &read(file)).unwrap();
    }
    options
}

fn numbers<T: TryFrom<u64>>(value: &Value) -> Vec<T> {
    value.as_array().unwrap().iter().map(|v| T::try_from(v.as_u64().unwrap()).ok().unwrap()).collect()
}

fn pairs(value: &Value) -> Vec<(usize, usize)> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p: Vec<usize> = numbers(p);
            (p[0], p[1])
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// Encode every case of a golden file and compare ids, type ids, tokens and `offsets_key`
/// (byte offsets); returns how many cases there were.
fn check_golden(tokenizer: &Tokenizer, golden: &str, offsets_key: &str) -> usize {
    let cases: Vec<Value> = serde_json::from_str(&read(golden)).unwrap();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let encoding = match case.get("text_pair") {
            Some(pair) => tokenizer.encode((text, pair.as_str().unwrap()), true),
            None => tokenizer.encode(text, true),
        }
        .unwrap();
        let what = format!("{golden}: {text:?} / {:?}", case.get("text_pair"));
        assert_eq!(encoding.get_ids(), numbers::<u32>(&case["ids"]).as_slice(), "ids of {what}");
        assert_eq!(encoding.get_type_ids(), numbers::<u32>(&case["type_ids"]).as_slice(), "type ids of {what}");
        assert_eq!(encoding.get_tokens(), strings(&case["tokens"]).as_slice(), "tokens of {what}");
        assert_eq!(encoding.get_offsets(), pairs(&case[offsets_key]).as_slice(), "offsets of {what}");
    }
    cases.len()
}

#[test]
fn options_from_the_bert_folder() {
    let options = options_from(&["bert-wordpiece/tokenizer_config.json"]);
    assert_eq!(options, FileTokenizerOptions::default());
}

#[test]
fn wordpiece_matches_transformers_lowercased() {
    let options = options_from(&["bert-wordpiece/tokenizer_config.json"]);
    let tokenizer = wordpiece(&read("bert-wordpiece/vocab.txt"), &options).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), 320);
    for (name, id) in [("[UNK]", 300), ("[CLS]", 301), ("[SEP]", 302), ("[PAD]", 303), ("[MASK]", 304)] {
        assert_eq!(tokenizer.token_to_id(name), Some(id));
    }
    assert_eq!(check_golden(&tokenizer, "bert-wordpiece/golden.json", "byte_offsets"), 15);
}

#[test]
fn golden_offsets_agree_on_ascii() {
    // Python gives character offsets; `byte_offsets` converts them. On ASCII they are the same.
    for golden in ["bert-wordpiece/golden.json", "bert-wordpiece/golden_cased.json"] {
        let cases: Vec<Value> = serde_json::from_str(&read(golden)).unwrap();
        for case in cases {
            let ascii = case["text"].as_str().unwrap().is_ascii() && case.get("text_pair").is_none_or(|p| p.as_str().unwrap().is_ascii());
            assert_eq!(ascii, case["offsets"] == case["byte_offsets"], "{golden}: {}", case["text"]);
        }
    }
}

#[test]
fn wordpiece_matches_transformers_cased() {
    let mut options = options_from(&["bert-wordpiece/tokenizer_config.json"]);
    options.do_lower_case = false;
    let tokenizer = wordpiece(&read("bert-wordpiece/vocab.txt"), &options).unwrap();
    assert_eq!(check_golden(&tokenizer, "bert-wordpiece/golden_cased.json", "byte_offsets"), 6);
}

#[test]
fn wordpiece_decodes_and_reads_crlf() {
    let options = FileTokenizerOptions::default();
    let vocab = read("bert-wordpiece/vocab.txt");
    let tokenizer = wordpiece(&vocab, &options).unwrap();
    let encoding = tokenizer.encode("The patient reports [MASK] pain.", true).unwrap();
    assert_eq!(tokenizer.decode(encoding.get_ids(), true).unwrap(), "the patient reports pain.");
    assert_eq!(tokenizer.decode(encoding.get_ids(), false).unwrap(), "[CLS] the patient reports [MASK] pain. [SEP]");
    let crlf = wordpiece(&vocab.replace('\n', "\r\n"), &options).unwrap();
    assert_eq!(crlf.encode("The patient reports [MASK] pain.", true).unwrap().get_ids(), encoding.get_ids());
    assert_eq!(crlf.get_vocab(true), tokenizer.get_vocab(true));
}

#[test]
fn bpe_matches_the_fixture_tokenizer_json() {
    let options = FileTokenizerOptions::default();
    let tokenizer = bpe(&read("bert-bpe-files/vocab.json"), &read("bert-bpe-files/merges.txt"), &options).unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), 305);
    // ids, type ids and tokens are the fixture's; offsets are trimmed of the spaces the fixture keeps.
    assert_eq!(check_golden(&tokenizer, "bert-bpe-files/golden.json", "offsets_trimmed"), 10);
    // And the fixture's own tokenizer.json, read by this crate, gives the untrimmed offsets.
    let fixture = Tokenizer::from_file(format!("{DATA}../fixtures-bert/tiny-bert-mlm/tokenizer.json")).unwrap();
    assert_eq!(check_golden(&fixture, "bert-bpe-files/golden.json", "offsets"), 10);
    let text = "She's been taking 20mg daily;\n  it's fine. ";
    let encoding = tokenizer.encode(text, true).unwrap();
    assert_eq!(tokenizer.decode(encoding.get_ids(), true).unwrap(), text);
}

#[test]
fn bpe_with_prefix_space() {
    // Expected values from Python tokenizers 0.23.3 with the same pipeline and add_prefix_space=True.
    let mut options = FileTokenizerOptions::default();
    options.update_from_json("tokenizer_config.json", r#"{"add_prefix_space": true}"#).unwrap();
    let tokenizer = bpe(&read("bert-bpe-files/vocab.json"), &read("bert-bpe-files/merges.txt"), &options).unwrap();
    let encoding = tokenizer.encode("patient reports", true).unwrap();
    assert_eq!(encoding.get_ids(), &[301, 274, 290, 278, 220, 81, 295, 260, 83, 82, 302]);
    assert_eq!(encoding.get_offsets(), &[(0, 0), (0, 1), (1, 4), (4, 7), (8, 8), (8, 9), (9, 11), (11, 13), (13, 14), (14, 15), (0, 0)]);
    let encoding = tokenizer.encode(("and x", "and"), true).unwrap();
    assert_eq!(encoding.get_ids(), &[301, 293, 220, 87, 302, 293, 302]);
    assert_eq!(encoding.get_type_ids(), &[0, 0, 0, 0, 0, 1, 1]);
    assert_eq!(encoding.get_offsets(), &[(0, 0), (0, 3), (4, 4), (4, 5), (0, 0), (0, 3), (0, 0)]);
}

#[test]
fn duplicate_vocab_line_is_an_error() {
    let err = wordpiece("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\nthe\n", &FileTokenizerOptions::default()).unwrap_err();
    assert!(err.contains("line 8") && err.contains("\"the\"") && err.contains("line 6"), "{err}");
}

#[test]
fn missing_special_token_is_an_error() {
    let err = wordpiece("[PAD]\n[UNK]\n[SEP]\n[MASK]\nthe\n", &FileTokenizerOptions::default()).unwrap_err();
    assert!(err.contains("\"[CLS]\"") && err.contains("cls_token"), "{err}");
    let options = FileTokenizerOptions { mask: "<mask>".into(), ..FileTokenizerOptions::default() };
    let err = wordpiece(&read("bert-wordpiece/vocab.txt"), &options).unwrap_err();
    assert!(err.contains("\"<mask>\"") && err.contains("mask_token"), "{err}");
    let vocab: String = read("bert-bpe-files/vocab.json").replace("\"[SEP]\"", "\"[SEP ]\"");
    let err = bpe(&vocab, &read("bert-bpe-files/merges.txt"), &FileTokenizerOptions::default()).unwrap_err();
    assert!(err.contains("\"[SEP]\"") && err.contains("sep_token"), "{err}");
    let options = FileTokenizerOptions { unk: String::new(), ..FileTokenizerOptions::default() };
    let err = wordpiece(&read("bert-wordpiece/vocab.txt"), &options).unwrap_err();
    assert!(err.contains("unk_token is empty"), "{err}");
}

#[test]
fn small_vocab_and_blank_lines() {
    // Blank lines in the middle keep their id; blank lines at the end are ignored.
    let tokenizer = wordpiece("[PAD]\n\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##m\n\n\n", &FileTokenizerOptions::default()).unwrap();
    assert_eq!(tokenizer.token_to_id("[UNK]"), Some(2));
    assert_eq!(tokenizer.token_to_id("##m"), Some(7));
    assert_eq!(tokenizer.get_vocab_size(true), 7);
    let encoding = tokenizer.encode(("The them", "x"), true).unwrap();
    assert_eq!(encoding.get_ids(), &[3, 6, 6, 7, 4, 2, 4]);
    assert_eq!(encoding.get_type_ids(), &[0, 0, 0, 0, 0, 1, 1]);
}

#[test]
fn custom_special_names() {
    let vocab = "<pad>\n<unk>\n<s>\n</s>\n<mask>\nhi\n";
    let mut options = FileTokenizerOptions::default();
    options
        .update_from_json(
            "special_tokens_map.json",
            r#"{"cls_token": "<s>", "sep_token": {"content": "</s>", "lstrip": false}, "pad_token": "<pad>",
                "mask_token": {"content": "<mask>", "lstrip": true}, "unk_token": "<unk>", "additional_special_tokens": []}"#,
        )
        .unwrap();
    let tokenizer = wordpiece(vocab, &options).unwrap();
    let encoding = tokenizer.encode(("hi <mask>", "HI"), true).unwrap();
    assert_eq!(encoding.get_ids(), &[2, 5, 4, 3, 5, 3]);
    assert_eq!(encoding.get_type_ids(), &[0, 0, 0, 0, 1, 1]);
}

#[test]
fn update_from_json_reads_fields_and_rejects_bad_types() {
    let mut options = FileTokenizerOptions::default();
    options
        .update_from_json(
            "tokenizer_config.json",
            r#"{"do_lower_case": false, "strip_accents": true, "tokenize_chinese_chars": false, "add_prefix_space": true,
                "mask_token": {"content": "[M]"}, "model_max_length": 512, "never_split": null}"#,
        )
        .unwrap();
    assert!(!options.do_lower_case && options.strip_accents == Some(true) && !options.tokenize_chinese_chars && options.add_prefix_space);
    assert_eq!(options.mask, "[M]");
    options.update_from_json("tokenizer_config.json", r#"{"strip_accents": null, "do_lower_case": null}"#).unwrap();
    assert_eq!(options.strip_accents, None);
    assert!(!options.do_lower_case);
    // The fixture's special_tokens_map.json has [MASK] as an object.
    let fixture = read("../fixtures-bert/tiny-bert-mlm/special_tokens_map.json");
    options.update_from_json("special_tokens_map.json", &fixture).unwrap();
    assert_eq!(options.mask, "[MASK]");

    let before = options.clone();
    for (text, field) in [
        (r#"{"do_lower_case": "yes"}"#, "\"do_lower_case\""),
        (r#"{"cls_token": "<s>", "strip_accents": 1}"#, "\"strip_accents\""),
        (r#"{"add_prefix_space": []}"#, "\"add_prefix_space\""),
        (r#"{"sep_token": 5}"#, "\"sep_token\""),
        (r#"{"mask_token": {"content": 5}}"#, "\"mask_token\""),
        (r#"{"unk_token": {"lstrip": true}}"#, "\"unk_token\""),
        ("[1, 2]", "JSON object"),
        ("{\"do_lower_case\": tru", "not valid JSON"),
    ] {
        let err = options.update_from_json("tokenizer_config.json", text).unwrap_err();
        assert!(err.contains("tokenizer_config.json") && err.contains(field), "{err}");
        assert_eq!(options, before, "changed by {text}");
    }
}

#[test]
fn bad_bpe_files_are_errors() {
    let options = FileTokenizerOptions::default();
    let vocab = read("bert-bpe-files/vocab.json");
    let merges = read("bert-bpe-files/merges.txt");
    for (vocab, merges, expected) in [
        (vocab.as_str(), "#version: 0.2\nĠ a\nin\n", "line 3: expected two tokens"),
        (vocab.as_str(), "Ġ a\ni  n\n", "line 2: expected two tokens"),
        (vocab.as_str(), "#version: 0.2\nq z\n", "line 2: \"qz\""),
        ("[1]", merges.as_str(), "JSON object"),
        ("{\"a\": -1}", merges.as_str(), "token \"a\": the id must be an integer"),
        ("{\"a\": 1.5}", merges.as_str(), "token \"a\": the id must be an integer"),
        ("{\"a\": 1, \"b\": 1}", "", "same id 1"),
        ("{\"a\": ", "", "not valid JSON"),
        ("{}", "", "\"[UNK]\" (unk_token) is not in the vocabulary"),
    ] {
        let err = bpe(vocab, merges, &options).unwrap_err();
        assert!(err.contains(expected), "{err} (expected {expected})");
    }
    // CRLF merges and no #version line are fine.
    let crlf = bpe(&vocab, &merges.replace('\n', "\r\n"), &options).unwrap();
    let plain = bpe(&vocab, merges.split_once('\n').unwrap().1, &options).unwrap();
    assert_eq!(crlf.encode("another patient", true).unwrap().get_ids(), plain.encode("another patient", true).unwrap().get_ids());
}

#[test]
fn odd_inputs_do_not_panic() {
    let options = FileTokenizerOptions::default();
    for vocab in ["", "\n", "\r\n\r\n", "[UNK]\n[UNK]", "\u{0}\n[CLS]", "[UNK]\n[CLS]\n[SEP]\n[PAD]\n[MASK]"] {
        if let Ok(tokenizer) = wordpiece(vocab, &options) {
            for text in ["", "\u{0}", "héllo wörld 你好 [MASK][MASK]", &"x".repeat(1000)] {
                tokenizer.encode(text, true).unwrap();
                tokenizer.encode((text, text), true).unwrap();
            }
        }
    }
    let specials = r#"{"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "[MASK]": 4}"#;
    for (vocab, merges) in [("", ""), ("{}", "#version"), (specials, ""), (specials, "\n\n"), ("null", "x y")] {
        if let Ok(tokenizer) = bpe(vocab, merges, &options) {
            // No byte is in this vocabulary: every character is dropped, nothing panics.
            let encoding = tokenizer.encode(("héllo [MASK] 你好", "x"), true).unwrap();
            assert_eq!(encoding.get_ids(), &[1, 4, 2, 2]);
        }
    }
}
