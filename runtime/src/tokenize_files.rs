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
