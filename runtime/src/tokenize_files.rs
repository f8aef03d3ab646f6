//! Tokenizers for classic BERT-layout folders that ship no `tokenizer.json`, built the way
//! transformers' `BertTokenizerFast` (and its converters) build them from the older files:
//!
//! * [`wordpiece`]: `vocab.txt` → BertNormalizer, BertPreTokenizer, WordPiece (`##`, 100 characters
//!   per word), WordPiece decoder;
//! * [`bpe`]: `vocab.json` + `merges.txt` → byte-level BPE (ByteLevel pre-tokenizer, decoder and
//!   offset trimming);
//!
//! both with BERT's template (`[CLS] A [SEP]`, pair `[CLS] A [SEP] B [SEP]` with type ids 0 / 1) and
//! the five special tokens registered as special added tokens, so `[MASK]` written in a text is
//! matched before lowercasing and never split. [`FileTokenizerOptions`] carries what
//! `tokenizer_config.json` / `special_tokens_map.json` say.
//!
//! Errors are plain strings that name the line or field and what was expected, without file paths:
//! the caller prefixes the file.

use serde_json::{json, Value};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::sequence::Sequence;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper, Tokenizer};

/// Options read from `tokenizer_config.json` (and `special_tokens_map.json`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTokenizerOptions {
    /// Lowercase the text (WordPiece only).
    pub do_lower_case: bool,
    /// Strip accents; `None` follows `do_lower_case`, as in the original BERT (WordPiece only).
    pub strip_accents: Option<bool>,
    /// Put spaces around CJK ideographs so each becomes a word (WordPiece only).
    pub tokenize_chinese_chars: bool,
    /// Add a space before the text, so its first word is tokenized like the others (BPE only).
    pub add_prefix_space: bool,
    /// Classification token, first of every sequence.
    pub cls: String,
    /// Separator token, after each text.
    pub sep: String,
    /// Padding token.
    pub pad: String,
    /// Mask token of masked-language modelling.
    pub mask: String,
    /// Unknown token (WordPiece gives it to words it cannot split).
    pub unk: String,
}

impl Default for FileTokenizerOptions {
    /// transformers' defaults: `do_lower_case` true (BertTokenizer's default when
    /// `tokenizer_config.json` is absent), `strip_accents` None, `tokenize_chinese_chars` true,
    /// `add_prefix_space` false, `[CLS]` `[SEP]` `[PAD]` `[MASK]` `[UNK]`.
    fn default() -> Self {
        FileTokenizerOptions {
            do_lower_case: true,
            strip_accents: None,
            tokenize_chinese_chars: true,
            add_prefix_space: false,
            cls: "[CLS]".into(),
            sep: "[SEP]".into(),
            pad: "[PAD]".into(),
            mask: "[MASK]".into(),
            unk: "[UNK]".into(),
        }
    }
}

/// What kind of JSON value this is, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl FileTokenizerOptions {
    /// Update from the text of a `tokenizer_config.json` or `special_tokens_map.json` (`source`
    /// names the file in errors). Reads `do_lower_case`, `strip_accents` (true, false or null),
    /// `tokenize_chinese_chars`, `add_prefix_space` and the special tokens `cls_token`, `sep_token`,
    /// `pad_token`, `mask_token`, `unk_token` (strings or `{"content": …}` objects). Unknown keys
    /// are ignored, and so is a null where null means nothing (every field but `strip_accents`).
    /// A field of the wrong type is an error naming the field and `source`; on error nothing is
    /// changed.
    pub fn update_from_json(&mut self, source: &str, text: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("{source} is not valid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err(format!("{source} must hold a JSON object, found {}", kind(&value)));
        };
        let mut next = self.clone();
        for (key, slot) in [
            ("do_lower_case", &mut next.do_lower_case),
            ("tokenize_chinese_chars", &mut next.tokenize_chinese_chars),
            ("add_prefix_space", &mut next.add_prefix_space),
        ] {
            match map.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => *slot = *b,
                Some(other) => return Err(format!("{source}: field \"{key}\" must be true or false, found {}", kind(other))),
            }
        }
        match map.get("strip_accents") {
            None => {}
            Some(Value::Null) => next.strip_accents = None,
            Some(Value::Bool(b)) => next.strip_accents = Some(*b),
            Some(other) => return Err(format!("{source}: field \"strip_accents\" must be true, false or null, found {}", kind(other))),
        }
        for (key, slot) in [
            ("cls_token", &mut next.cls),
            ("sep_token", &mut next.sep),
            ("pad_token", &mut next.pad),
            ("mask_token", &mut next.mask),
            ("unk_token", &mut next.unk),
        ] {
            match map.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => *slot = s.clone(),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => *slot = s.clone(),
                    Some(other) => return Err(format!("{source}: field \"{key}\" has a \"content\" that must be a string, found {}", kind(other))),
                    None => return Err(format!("{source}: field \"{key}\" is an object without \"content\"")),
                },
                Some(other) => {
                    return Err(format!("{source}: field \"{key}\" must be a string or an object with \"content\", found {}", kind(other)))
                }
            }
        }
        *self = next;
        Ok(())
    }

    /// The five special tokens with the name of their field, in the order they are registered.
    fn specials(&self) -> [(&'static str, &str); 5] {
        [("unk_token", &self.unk), ("cls_token", &self.cls), ("sep_token", &self.sep), ("pad_token", &self.pad), ("mask_token", &self.mask)]
    }
}

/// Ids of `[CLS]` and `[SEP]` after checking that every special token is named and in `vocab`.
fn special_ids(vocab: &Vocab, options: &FileTokenizerOptions) -> Result<(u32, u32), String> {
    for (field, name) in options.specials() {
        if name.is_empty() {
            return Err(format!("the special token {field} is empty"));
        }
        if !vocab.contains_key(name) {
            return Err(format!("the special token \"{name}\" ({field}) is not in the vocabulary"));
        }
    }
    let id = |name: &str| vocab.get(name).copied().ok_or_else(|| format!("the special token \"{name}\" is not in the vocabulary"));
    Ok((id(&options.cls)?, id(&options.sep)?))
}

/// BERT's template: `[CLS]:0 $A:0 [SEP]:0`, pair `[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1`. Built from
/// its JSON form, so names with spaces or colons need no escaping.
fn bert_template(cls: (&str, u32), sep: (&str, u32)) -> Result<TemplateProcessing, String> {
    let special = |name: &str, type_id: u32| json!({"SpecialToken": {"id": name, "type_id": type_id}});
    let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut tokens = serde_json::Map::new();
    for (name, id) in [cls, sep] {
        tokens.insert(name.to_string(), json!({"id": name, "ids": [id], "tokens": [name]}));
    }
    let spec = json!({
        "type": "TemplateProcessing",
        "single": [special(cls.0, 0), sequence("A", 0), special(sep.0, 0)],
        "pair": [special(cls.0, 0), sequence("A", 0), special(sep.0, 0), sequence("B", 1), special(sep.0, 1)],
        "special_tokens": tokens,
    });
    serde_json::from_value(spec).map_err(|e| format!("cannot build the [CLS]/[SEP] template: {e}"))
}

/// Register the five special tokens: matched in the raw text (not normalized), never split,
/// skipped when decoding.
fn add_specials(tokenizer: &mut Tokenizer, options: &FileTokenizerOptions) {
    let tokens: Vec<AddedToken> = options.specials().iter().map(|(_, name)| AddedToken::from(*name, true)).collect();
    tokenizer.add_special_tokens(&tokens);
}

/// Lines of a text file without their `\n` / `\r\n` ends, numbered from 1, without the empty
/// lines at the end (the newline that ends the last line).
fn numbered_lines(text: &str) -> Vec<(usize, &str)> {
    let mut lines: Vec<(usize, &str)> =
        text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).enumerate().map(|(i, line)| (i + 1, line)).collect();
    while lines.last().is_some_and(|(_, line)| line.is_empty()) {
        lines.pop();
    }
    lines
}

/// `vocab.txt`: line i (from 0) is the token of id i.
fn read_vocab_txt(vocab_txt: &str) -> Result<Vocab, String> {
    let mut vocab = Vocab::default();
    for (number, token) in numbered_lines(vocab_txt) {
        if token.is_empty() {
            // An empty line keeps its id, but no word can ever be the empty token.
            continue;
        }
        let id = u32::try_from(number - 1).map_err(|_| format!("line {number}: more lines than 32-bit token ids can number"))?;
        if let Some(first) = vocab.insert(token.to_string(), id) {
            return Err(format!("line {number}: token \"{token}\" is a duplicate of line {}", first as usize + 1));
        }
    }
    Ok(vocab)
}

/// WordPiece tokenizer from the text of `vocab.txt` (line i, counted from 0, is the token of id i;
/// lines end with `\n` or `\r\n`; empty lines at the end are ignored; a duplicate token is an
/// error naming its line): BertNormalizer (clean_text, `tokenize_chinese_chars`, `strip_accents`,
/// `do_lower_case`), BertPreTokenizer, WordPiece (unknown token `options.unk`, prefix `##`, at
/// most 100 characters per word), template `[CLS]:0 $A:0 [SEP]:0` / pair
/// `[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1` with the configured names, WordPiece decoder, and the five
/// special tokens registered as special added tokens. Each special token must be in the
/// vocabulary (an error names the one that is not).
pub fn wordpiece(vocab_txt: &str, options: &FileTokenizerOptions) -> Result<Tokenizer, String> {
    let vocab = read_vocab_txt(vocab_txt)?;
    let (cls, sep) = special_ids(&vocab, options)?;
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(options.unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| format!("cannot build the WordPiece model: {e}"))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, options.tokenize_chinese_chars, options.strip_accents, options.do_lower_case)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(bert_template((&options.cls, cls), (&options.sep, sep))?))
        .with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    add_specials(&mut tokenizer, options);
    Ok(tokenizer)
}

/// `vocab.json`: an object of token → id.
fn read_vocab_json(vocab_json: &str) -> Result<Vocab, String> {
    let value: Value = serde_json::from_str(vocab_json).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!("must hold a JSON object of token → id, found {}", kind(&value)));
    };
    let mut vocab = Vocab::default();
    let mut by_id = std::collections::HashMap::new();
    for (token, id) in &map {
        let id = id
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| format!("token \"{token}\": the id must be an integer from 0 to {}, found {id}", u32::MAX))?;
        if let Some(other) = by_id.insert(id, token) {
            return Err(format!("tokens \"{other}\" and \"{token}\" have the same id {id}"));
        }
        vocab.insert(token.clone(), id);
    }
    Ok(vocab)
}

/// `merges.txt`: "left right" per line, by rank, after an optional `#version` first line; each
/// part and their concatenation must be in `vocab`.
fn read_merges(merges_txt: &str, vocab: &Vocab) -> Result<Vec<(String, String)>, String> {
    let mut merges = Vec::new();
    for (number, line) in numbered_lines(merges_txt) {
        if number == 1 && line.starts_with("#version") {
            continue;
        }
        let (left, right) = match line.split_once(' ') {
            Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => (l, r),
            _ => return Err(format!("line {number}: expected two tokens separated by one space, found \"{line}\"")),
        };
        for token in [left.to_string(), right.to_string(), format!("{left}{right}")] {
            if !vocab.contains_key(&token) {
                return Err(format!("line {number}: \"{token}\" (merge \"{line}\") is not in the vocabulary"));
            }
        }
        merges.push((left.to_string(), right.to_string()));
    }
    Ok(merges)
}

/// Byte-level BPE tokenizer from the texts of `vocab.json` (token → id) and `merges.txt` (one
/// "left right" merge per line by rank, a leading `#version` line skipped; every part and merged
/// token must be in the vocabulary): ByteLevel pre-tokenizer (`add_prefix_space` from `options`,
/// GPT-2's regex) and decoder, no unknown token, ByteLevel post-processing that trims the spaces
/// off token offsets, then the same BERT template with the configured `cls` / `sep`, and the five
/// special tokens registered as special added tokens. Each special token must be in `vocab.json`
/// (an error names the one that is not); no normalizer is applied (tokenizer.json files of this
/// kind sometimes add NFC, which changes nothing on ASCII text).
pub fn bpe(vocab_json: &str, merges_txt: &str, options: &FileTokenizerOptions) -> Result<Tokenizer, String> {
    let vocab = read_vocab_json(vocab_json)?;
    let merges = read_merges(merges_txt, &vocab)?;
    let (cls, sep) = special_ids(&vocab, options)?;
    let model = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| format!("cannot build the BPE model: {e}"))?;
    let byte_level = ByteLevel::new(options.add_prefix_space, true, true);
    let template = bert_template((&options.cls, cls), (&options.sep, sep))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(byte_level))
        .with_post_processor(Some(Sequence::new(vec![PostProcessorWrapper::ByteLevel(byte_level), PostProcessorWrapper::Template(template)])))
        .with_decoder(Some(byte_level));
    add_specials(&mut tokenizer, options);
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
