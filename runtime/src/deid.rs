//! De-identification: BIO token-classification predictions decoded into PHI spans at word level,
//! with character offsets into the original text, and the text redacted with placeholders or
//! keyed, consistent surrogates (`surrogate.rs`). A label set that is not a tagging scheme is
//! refused before any note is read: a model whose labels cannot be read finds no PHI.

use crate::tokenize::Encoded;
use crate::{Error, Result};

pub use crate::surrogate::{SurrogateKey, Surrogates};

/// The default decision threshold: P(PHI) ≥ 0.3 marks a word, favouring recall (a missed name is
/// a leak; an extra redaction is an inconvenience). `runtime-cli deid` and the web page share it.
pub const DEFAULT_THRESHOLD: f32 = 0.3;

/// A span of protected health information.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Character (Unicode scalar) offsets into the original text, end exclusive.
    pub start: usize,
    pub end: usize,
    /// Category, e.g. `NAME`, `DATE`.
    pub label: String,
    pub text: String,
    /// Mean probability that the span's words are PHI (the model's), 1 where only rules found it.
    pub score: f32,
    /// What found it, `+`-joined: `model`, `dictionary` (a model word kept at the dictionaries'
    /// lower threshold), `rule:NAME` (a pattern of `phi_rules` or `phi_dict`), `propagated`
    /// (another mention of a name found elsewhere in the note).
    pub source: String,
}

/// How each label index reads: outside, or beginning / inside of a category.
#[derive(Clone, Debug)]
pub struct LabelScheme {
    pub categories: Vec<String>,
    /// Per label: None for `O`, else (category index, is_begin).
    tags: Vec<Option<(usize, bool)>>,
}

impl LabelScheme {
    /// Read `id2label` names (`source` names the config in messages): exactly one `O`, and the
    /// other labels either all prefixed, `B-X` / `I-X` (also `S-`/`U-` as begin, `E-`/`L-` as
    /// inside: BIOES, BILOU), or all bare `X` (IO tagging, read as inside). Refused: no labels,
    /// transformers' placeholder names `LABEL_0`…, no `O` or more than one, an empty or malformed
    /// category, a tag given twice (`B-NAME` and `B_NAME`), bare and prefixed labels mixed.
    pub fn from_labels(source: &str, labels: &[String]) -> Result<Self> {
        let refuse = |what: String| Err(Error::Input(format!("{source}: field \"id2label\": {what}; a de-identification model needs \"O\" and its PHI categories as BIO tags (\"B-NAME\", \"I-NAME\", …)")));
        if labels.is_empty() {
            return refuse("the model has no token-classification labels".into());
        }
        if labels.iter().all(|l| l.strip_prefix("LABEL_").is_some_and(|n| n.parse::<usize>().is_ok())) {
            return refuse(format!("the labels are transformers' placeholders {}…{} (config.json names no categories)", labels[0], labels[labels.len() - 1]));
        }
        let mut categories: Vec<String> = Vec::new();
        let mut tags = Vec::new();
        let (mut outside, mut prefixed, mut bare) = (Vec::new(), Vec::new(), Vec::new());
        // (category, prefix, label id) of every tag so far.
        let mut seen: Vec<(usize, &str, usize)> = Vec::new();
        for (id, l) in labels.iter().enumerate() {
            if l == "O" || l == "o" {
                outside.push(id);
                tags.push(None);
                continue;
            }
            let (begin, cat, prefix) = match l.split_once(['-', '_']) {
                Some((p, c)) if ["B", "S", "U"].contains(&p) => {
                    prefixed.push(id);
                    (true, c, p)
                }
                Some((p, c)) if ["I", "E", "L"].contains(&p) => {
                    prefixed.push(id);
                    (false, c, p)
                }
                _ => {
                    bare.push(id);
                    (false, l.as_str(), "")
                }
            };
            let valid = !cat.is_empty() && cat.trim() == cat && cat.chars().all(|c| c.is_alphanumeric() || "_-./ ".contains(c));
            if !valid {
                return refuse(format!("label {id} \"{l}\" has no category name of letters, digits, '_', '-', '.', '/' or spaces"));
            }
            let idx = match categories.iter().position(|c| c == cat) {
                Some(i) => i,
                None => {
                    categories.push(cat.to_string());
                    categories.len() - 1
                }
            };
            if let Some(&(_, _, other)) = seen.iter().find(|(c, p, _)| *c == idx && *p == prefix) {
                return refuse(format!("labels {other} \"{}\" and {id} \"{l}\" are the same tag", labels[other]));
            }
            seen.push((idx, prefix, id));
            tags.push(Some((idx, begin)));
        }
        match outside.len() {
            0 => return refuse(format!("no \"O\" label among {}, so no token could be read as not PHI", labels.join(", "))),
            1 => {}
            _ => return refuse(format!("{} \"O\" labels (ids {:?}); expected one", outside.len(), outside)),
        }
        if categories.is_empty() {
            return refuse("the labels are all \"O\": nothing to de-identify".into());
        }
        if !prefixed.is_empty() && !bare.is_empty() {
            return refuse(format!("prefixed labels (\"{}\") and bare ones (\"{}\") are mixed; expected one tagging scheme", labels[prefixed[0]], labels[bare[0]]));
        }
        Ok(LabelScheme { categories, tags })
    }

    /// For one token's probabilities: P(PHI), the most likely category and whether it begins.
    fn read(&self, probs: &[f32]) -> (f32, usize, bool) {
        let mut by_cat = vec![0f32; self.categories.len()];
        let mut begin = vec![0f32; self.categories.len()];
        let mut outside = 0f32;
        for (p, tag) in probs.iter().zip(&self.tags) {
            match tag {
                None => outside += p,
                Some((c, b)) => {
                    by_cat[*c] += p;
                    if *b {
                        begin[*c] += p;
                    }
                }
            }
        }
        let cat = (0..by_cat.len()).max_by(|&a, &b| by_cat[a].total_cmp(&by_cat[b]).then(b.cmp(&a))).expect("a scheme has at least one category");
        (1.0 - outside, cat, begin[cat] * 2.0 >= by_cat[cat])
    }
}

/// Byte offset → character index, rounding inside a multi-byte character down (`floor`) or up;
/// `starts[k]` is the byte where character k begins (and `starts[n]` the text's length).
pub struct CharIndex {
    pub starts: Vec<usize>,
}

impl CharIndex {
    pub fn new(text: &str) -> Self {
        CharIndex { starts: text.char_indices().map(|(b, _)| b).chain(std::iter::once(text.len())).collect() }
    }
    fn floor(&self, byte: usize) -> usize {
        self.starts.partition_point(|&b| b <= byte).saturating_sub(1)
    }
    fn ceil(&self, byte: usize) -> usize {
        self.starts.partition_point(|&b| b < byte)
    }
}

/// Decode spans from per-token probabilities [n, C] of `enc` (a plain encoding of `text`).
/// Each word takes the prediction of its first sub-token; a word is PHI when P(PHI) ≥
/// `threshold` (below 0.5 favours recall). Consecutive PHI words of one category form a span
/// unless the later one begins a new entity (B-).
pub fn decode(text: &str, enc: &Encoded, probs: &[f32], scheme: &LabelScheme, threshold: f32) -> Vec<Span> {
    decode_with(text, enc, probs, scheme, |_| threshold)
}

/// [`decode`] with a threshold per word (`threshold_of` sees the word's text; `threshold_of("")`
/// is the base threshold): a span holding a word that passed only under a lower threshold than
/// the base says `model+dictionary`.
pub fn decode_with(text: &str, enc: &Encoded, probs: &[f32], scheme: &LabelScheme, threshold_of: impl Fn(&str) -> f32) -> Vec<Span> {
    let base = threshold_of("");
    let c = scheme.tags.len();
    let chars = CharIndex::new(text);
    let mut spans = Vec::new();
    // (category, byte start, byte end, scores)
    let mut current: Option<(usize, usize, usize, Vec<f32>)> = None;
    let close = |cur: &mut Option<(usize, usize, usize, Vec<f32>)>, spans: &mut Vec<Span>| {
        if let Some((cat, s, e, scores)) = cur.take() {
            let lowered = scores.iter().any(|&p| p < base);
            let (start, end) = (chars.floor(s), chars.ceil(e));
            spans.push(Span {
                start,
                end,
                label: scheme.categories[cat].clone(),
                text: text[chars.starts[start]..chars.starts[end]].to_string(),
                score: scores.iter().sum::<f32>() / scores.len() as f32,
                source: if lowered { "model+dictionary" } else { "model" }.into(),
            });
        }
    };
    let mut t = 0;
    while t < enc.len() {
        // The word: consecutive tokens with the same word id (a token without one is its own word).
        let mut end_tok = t + 1;
        while end_tok < enc.len() && enc.words[t].is_some() && enc.words[end_tok] == enc.words[t] {
            end_tok += 1;
        }
        // Byte-level tokenizers attach the preceding space to a word: trim it from the span.
        let (mut b0, mut b1) = (enc.offsets[t].0, enc.offsets[end_tok - 1].1);
        if b0 < b1 && b1 <= text.len() && text.is_char_boundary(b0) && text.is_char_boundary(b1) {
            let word = &text[b0..b1];
            b0 += word.len() - word.trim_start().len();
            b1 -= word.len() - word.trim_end().len();
        }
        let (phi, cat, begin) = scheme.read(&probs[t * c..(t + 1) * c]);
        if b1 <= b0 {
            // Whitespace-only tokens neither start nor break a span.
        } else if phi >= threshold_of(text.get(b0..b1).unwrap_or("")) {
            match &mut current {
                Some((cur_cat, _, e, scores)) if *cur_cat == cat && !begin => {
                    *e = b1;
                    scores.push(phi);
                }
                _ => {
                    close(&mut current, &mut spans);
                    current = Some((cat, b0, b1, vec![phi]));
                }
            }
        } else {
            close(&mut current, &mut spans);
        }
        t = end_tok;
    }
    close(&mut current, &mut spans);
    spans
}

impl Span {
    /// `{"start", "end", "label", "text", "score"}`, as `runtime-cli deid` and the web page write it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"start": self.start, "end": self.end, "label": self.label, "text": self.text, "score": self.score, "source": self.source})
    }
}

/// What replaces each span.
#[derive(Clone, Copy, Debug)]
pub enum Operator<'a> {
    /// `[NAME]`, `[DATE]`, …
    Placeholder,
    /// Keyed surrogates of the category's form (`surrogate.rs`).
    Surrogate(&'a Surrogates),
    /// Keyed surrogates, the dates of one document (named by its id) all moved by the same
    /// number of days, so that intervals survive.
    ShiftDates(&'a Surrogates, &'a str),
    /// `[NAME:0123456789abcdef]`: a keyed hash of the value (the key is the salt).
    Hash(&'a Surrogates),
}

/// The text with `spans` replaced as `op` says.
pub fn redact(text: &str, spans: &[Span], op: Operator<'_>) -> String {
    match op {
        Operator::Placeholder => redact_placeholders(text, spans),
        Operator::Surrogate(s) => s.redact(text, spans),
        Operator::ShiftDates(s, document) => s.redact_shifting_dates(text, spans, document),
        Operator::Hash(s) => s.redact_hashing(text, spans),
    }
}

/// Spans and redacted text of one document, from its per-token probabilities: the one decision
/// path of `runtime-cli deid`, the server and the browser page (the combined detector of
/// `detect.rs`).
pub fn deidentify(text: &str, enc: &Encoded, probs: &[f32], scheme: &LabelScheme, threshold: f32, op: Operator<'_>) -> (Vec<Span>, String) {
    let spans = crate::detect::detect(text, enc, probs, scheme, threshold);
    let redacted = redact(text, &spans, op);
    (spans, redacted)
}

/// Replace every span by `[LABEL]`.
pub fn redact_placeholders(text: &str, spans: &[Span]) -> String {
    redact_with(text, spans, |s| format!("[{}]", s.label))
}

/// Replace every span with what `f` gives, spans sorted and non-overlapping.
pub fn redact_with(text: &str, spans: &[Span], mut f: impl FnMut(&Span) -> String) -> String {
    let chars = CharIndex::new(text);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for s in spans {
        let (b0, b1) = (chars.starts[s.start], chars.starts[s.end]);
        out.push_str(&text[last..b0]);
        out.push_str(&f(s));
        last = b1;
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Hand-made encoding of "Dr. John Smith seen 10/12/1982 ok": one token per word.
    fn example() -> (String, Encoded) {
        let text = "Dr. John Smith seen 10/12/1982 ok".to_string();
        let mut enc = Encoded::default();
        let mut word = 0;
        for (s, e) in [(0, 3), (4, 8), (9, 14), (15, 19), (20, 30), (31, 33)] {
            enc.ids.push(0);
            enc.offsets.push((s, e));
            enc.special.push(false);
            enc.words.push(Some(word));
            word += 1;
        }
        (text, enc)
    }

    #[test]
    fn bio_words_become_spans() {
        let scheme = LabelScheme::from_labels("config.json", &labels(&["O", "B-NAME", "I-NAME", "B-DATE", "I-DATE"])).unwrap();
        let (text, enc) = example();
        let p = |o: f32, bn: f32, in_: f32, bd: f32, id: f32| vec![o, bn, in_, bd, id];
        let probs: Vec<f32> = [
            p(0.9, 0.1, 0.0, 0.0, 0.0),  // Dr.
            p(0.1, 0.8, 0.1, 0.0, 0.0),  // John: B-NAME
            p(0.2, 0.1, 0.7, 0.0, 0.0),  // Smith: I-NAME
            p(0.95, 0.0, 0.0, 0.05, 0.0), // seen
            p(0.6, 0.0, 0.0, 0.35, 0.05), // date: P(PHI) 0.4, kept at threshold 0.3
            p(0.99, 0.0, 0.0, 0.0, 0.01),
        ]
        .concat();
        let spans = decode(&text, &enc, &probs, &scheme, 0.3);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert_eq!((spans[0].start, spans[0].end, spans[0].label.as_str(), spans[0].text.as_str()), (4, 14, "NAME", "John Smith"));
        assert_eq!((spans[1].start, spans[1].end, spans[1].label.as_str(), spans[1].text.as_str()), (20, 30, "DATE", "10/12/1982"));
        assert!((spans[0].score - 0.85).abs() < 1e-6);
        // At 0.5 the uncertain date is not redacted: the threshold trades precision for recall.
        assert_eq!(decode(&text, &enc, &probs, &scheme, 0.5).len(), 1);
        assert_eq!(redact_placeholders(&text, &spans), "Dr. [NAME] seen [DATE] ok");
    }

    #[test]
    fn leading_spaces_are_not_part_of_a_span() {
        let scheme = LabelScheme::from_labels("config.json", &labels(&["O", "B-NAME", "I-NAME"])).unwrap();
        let text = "seen by  John Smith today";
        // Byte-level offsets: each word carries the space(s) before it.
        let offsets = [(0, 4), (4, 7), (7, 13), (13, 19), (19, 25)];
        let enc = Encoded { ids: vec![0; 5], offsets: offsets.to_vec(), special: vec![false; 5], type_ids: vec![0; 5], words: (0..5).map(Some).collect() };
        let probs: Vec<f32> = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]].concat();
        let spans = decode(text, &enc, &probs, &scheme, 0.5);
        assert_eq!((spans[0].start, spans[0].end, spans[0].text.as_str()), (9, 19, "John Smith"));
        assert_eq!(redact_placeholders(text, &spans), "seen by  [NAME] today");
    }

    #[test]
    fn begin_starts_a_new_span() {
        let scheme = LabelScheme::from_labels("config.json", &labels(&["O", "B-NAME", "I-NAME"])).unwrap();
        let (text, enc) = example();
        let probs: Vec<f32> = [[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.9, 0.1], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]].concat();
        let spans = decode(&text, &enc, &probs, &scheme, 0.5);
        assert_eq!(spans.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(), vec!["John", "Smith"]);
    }

    #[test]
    fn offsets_are_characters_not_bytes() {
        let scheme = LabelScheme::from_labels("config.json", &labels(&["O", "NAME"])).unwrap();
        let text = "Ça va, Zoë Ödegaard?";
        // words: "Ça"(0..3 bytes) "va"(4..6) ","(6..7) "Zoë"(8..12) "Ödegaard"(13..22) "?"(22..23)
        let offsets = [(0, 3), (4, 6), (6, 7), (8, 12), (13, 22), (22, 23)];
        let enc = Encoded { ids: vec![0; 6], offsets: offsets.to_vec(), special: vec![false; 6], type_ids: vec![0; 6], words: (0..6).map(Some).collect() };
        let probs: Vec<f32> = [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]].concat();
        let spans = decode(text, &enc, &probs, &scheme, 0.5);
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!((s.start, s.end, s.text.as_str()), (7, 19, "Zoë Ödegaard"));
        assert_eq!(text.chars().skip(s.start).take(s.end - s.start).collect::<String>(), s.text);
        assert_eq!(redact_placeholders(text, &spans), "Ça va, [NAME]?");
    }

    #[test]
    fn schemes() {
        let s = LabelScheme::from_labels("config.json", &labels(&["O", "B-PROBLEM", "I-PROBLEM", "B-DRUG", "I-DRUG"])).unwrap();
        assert_eq!(s.categories, vec!["PROBLEM", "DRUG"]);
        let refused = |names: &[&str], needle: &str| {
            let m = LabelScheme::from_labels("m/config.json", &labels(names)).unwrap_err().to_string();
            assert!(m.starts_with("m/config.json: field \"id2label\": ") && m.contains(needle), "{names:?}: {m}");
        };
        refused(&[], "no token-classification labels");
        refused(&["O"], "all \"O\"");
        refused(&["LABEL_0", "LABEL_1", "LABEL_2"], "transformers' placeholders LABEL_0…LABEL_2");
        refused(&["", "B-NAME"], "label 0 \"\" has no category");
        refused(&["O", "B-", "I-NAME"], "label 1 \"B-\" has no category");
        refused(&["O", "B-NAME", "B_NAME"], "labels 1 \"B-NAME\" and 2 \"B_NAME\" are the same tag");
        refused(&["B-NAME", "I-NAME"], "no \"O\" label");
        refused(&["O", "o", "B-NAME"], "2 \"O\" labels");
        refused(&["O", "B-NAME", "DATE"], "are mixed");
        refused(&["O", "B-NA[ME"], "has no category");
        // BIOES, BILOU and IO are tagging schemes too.
        assert_eq!(LabelScheme::from_labels("c", &labels(&["O", "B-AGE", "I-AGE", "E-AGE", "S-AGE"])).unwrap().categories, vec!["AGE"]);
        assert_eq!(LabelScheme::from_labels("c", &labels(&["O", "PATIENT", "MEDICAL_RECORD"])).unwrap().categories, vec!["PATIENT", "MEDICAL_RECORD"]);
    }
}
