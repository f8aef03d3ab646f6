//! De-identification: BIO token-classification predictions decoded into PHI spans at word level,
//! with character offsets into the original text, and the text redacted with placeholders or
//! consistent surrogates.

use std::collections::HashMap;

use crate::init::Rng;
use crate::tokenize::Encoded;
use crate::{Error, Result};

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
    /// Mean probability that the span's words are PHI.
    pub score: f32,
}

/// How each label index reads: outside, or beginning / inside of a category.
#[derive(Clone, Debug)]
pub struct LabelScheme {
    pub categories: Vec<String>,
    /// Per label: None for `O`, else (category index, is_begin).
    tags: Vec<Option<(usize, bool)>>,
}

impl LabelScheme {
    /// Read `id2label` names: `O`, `B-X` / `I-X` (also `S-`/`U-` as begin, `E-`/`L-` as inside),
    /// or bare `X` (IO tagging, read as inside).
    pub fn from_labels(labels: &[String]) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::Input("the model has no token-classification labels".into()));
        }
        let mut categories: Vec<String> = Vec::new();
        let mut tags = Vec::new();
        for l in labels {
            if l == "O" || l == "o" {
                tags.push(None);
                continue;
            }
            let (begin, cat) = match l.split_once(['-', '_']) {
                Some((p, c)) if ["B", "S", "U"].contains(&p) => (true, c),
                Some((p, c)) if ["I", "E", "L"].contains(&p) => (false, c),
                _ => (false, l.as_str()),
            };
            let idx = match categories.iter().position(|c| c == cat) {
                Some(i) => i,
                None => {
                    categories.push(cat.to_string());
                    categories.len() - 1
                }
            };
            tags.push(Some((idx, begin)));
        }
        if categories.is_empty() {
            return Err(Error::Input("the model's labels are all \"O\": nothing to de-identify".into()));
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
        let cat = (0..by_cat.len()).max_by(|&a, &b| by_cat[a].total_cmp(&by_cat[b]).then(b.cmp(&a))).unwrap();
        (1.0 - outside, cat, begin[cat] * 2.0 >= by_cat[cat])
    }
}

/// Byte offset → character index, rounding inside a multi-byte character down (`floor`) or up.
struct CharIndex {
    starts: Vec<usize>,
}

impl CharIndex {
    fn new(text: &str) -> Self {
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
    let c = scheme.tags.len();
    let chars = CharIndex::new(text);
    let mut spans = Vec::new();
    // (category, byte start, byte end, scores)
    let mut current: Option<(usize, usize, usize, Vec<f32>)> = None;
    let close = |cur: &mut Option<(usize, usize, usize, Vec<f32>)>, spans: &mut Vec<Span>| {
        if let Some((cat, s, e, scores)) = cur.take() {
            let (start, end) = (chars.floor(s), chars.ceil(e));
            spans.push(Span {
                start,
                end,
                label: scheme.categories[cat].clone(),
                text: text[chars.starts[start]..chars.starts[end]].to_string(),
                score: scores.iter().sum::<f32>() / scores.len() as f32,
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
        } else if phi >= threshold {
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
        serde_json::json!({"start": self.start, "end": self.end, "label": self.label, "text": self.text, "score": self.score})
    }
}

/// Spans and redacted text of one document, from its per-token probabilities: the one decision
/// path of `runtime-cli deid` and the browser page.
pub fn deidentify(text: &str, enc: &Encoded, probs: &[f32], scheme: &LabelScheme, threshold: f32, surrogates: Option<&mut Surrogates>) -> (Vec<Span>, String) {
    let spans = decode(text, enc, probs, scheme, threshold);
    let redacted = match surrogates {
        Some(s) => s.redact(text, &spans),
        None => redact_placeholders(text, &spans),
    };
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

const FIRST_NAMES: &[&str] = &[
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth", "William", "Barbara",
    "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa",
    "Anthony", "Betty", "Mark", "Sandra", "Paul", "Ashley", "Steven", "Dorothy", "Andrew", "Kimberly", "Kenneth", "Emily",
    "Joshua", "Donna", "Kevin", "Michelle", "Brian", "Carol", "George", "Amanda", "Edward", "Melissa", "Ronald", "Deborah",
];
const LAST_NAMES: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez",
    "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
];
const TITLES: &[&str] = &["Dr", "Dr.", "Mr", "Mr.", "Mrs", "Mrs.", "Ms", "Ms.", "Miss", "Prof", "Prof.", "MD", "RN", "PhD"];

/// Consistent fake values: the same original (per category) always gets the same surrogate, and
/// the choice is a deterministic function of the original, so runs are reproducible.
#[derive(Default)]
pub struct Surrogates {
    seen: HashMap<(String, String), String>,
}

fn seed_of(parts: &[&str]) -> u64 {
    // FNV-1a, stable across platforms and runs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0xff)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn keep_case(like: &str, word: &str) -> String {
    if like.len() > 1 && like.chars().all(|c| !c.is_lowercase()) {
        word.to_uppercase()
    } else {
        word.to_string()
    }
}

/// Digits → random digits, letters → random letters of the same case, the rest kept.
fn format_preserving(original: &str, rng: &mut Rng) -> String {
    original
        .chars()
        .map(|ch| {
            let r = rng.next_u64();
            if ch.is_ascii_digit() {
                char::from(b'0' + (r % 10) as u8)
            } else if ch.is_ascii_uppercase() {
                char::from(b'A' + (r % 26) as u8)
            } else if ch.is_ascii_lowercase() {
                char::from(b'a' + (r % 26) as u8)
            } else {
                ch
            }
        })
        .collect()
}

fn fake_name(original: &str, rng: &mut Rng) -> String {
    let words: Vec<&str> = original.split_whitespace().collect();
    let n_names = words.iter().filter(|w| !TITLES.contains(&w.trim_end_matches(','))).count();
    let mut k = 0;
    words
        .iter()
        .map(|w| {
            let bare = w.trim_end_matches([',', '.']);
            let tail = &w[bare.len()..];
            if TITLES.contains(&w.trim_end_matches(',')) {
                return w.to_string();
            }
            k += 1;
            let r = rng.next_u64() as usize;
            let name = if bare.chars().count() == 1 {
                char::from(b'A' + (r % 26) as u8).to_string()
            } else if k == n_names && n_names > 1 || (n_names == 1) {
                LAST_NAMES[r % LAST_NAMES.len()].to_string()
            } else {
                FIRST_NAMES[r % FIRST_NAMES.len()].to_string()
            };
            format!("{}{tail}", keep_case(bare, &name))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A date in the same numeric layout (M/D/Y, Y-M-D, …) with a valid random day, else
/// format-preserving.
fn fake_date(original: &str, rng: &mut Rng) -> String {
    let parts: Vec<&str> = original.split(['/', '-', '.']).collect();
    if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        let seps: Vec<char> = original.chars().filter(|c| ['/', '-', '.'].contains(c)).collect();
        let month = 1 + rng.next_u64() % 12;
        let day = 1 + rng.next_u64() % 28;
        let year = 1950 + rng.next_u64() % 70;
        let fields: Vec<String> = if parts[0].len() == 4 {
            vec![format!("{year}"), format!("{month:0w$}", w = parts[1].len()), format!("{day:0w$}", w = parts[2].len())]
        } else {
            let y = if parts[2].len() == 2 { format!("{:02}", year % 100) } else { format!("{year}") };
            vec![format!("{month:0w$}", w = parts[0].len()), format!("{day:0w$}", w = parts[1].len()), y]
        };
        return format!("{}{}{}{}{}", fields[0], seps[0], fields[1], seps[1], fields[2]);
    }
    format_preserving(original, rng)
}

impl Surrogates {
    pub fn new() -> Self {
        Self::default()
    }

    /// The surrogate of one span.
    pub fn get(&mut self, span: &Span) -> String {
        let key = (span.label.to_uppercase(), span.text.trim().to_string());
        if let Some(s) = self.seen.get(&key) {
            return s.clone();
        }
        let mut rng = Rng::new(seed_of(&[&key.0, &key.1]));
        let cat = key.0.as_str();
        let value = if cat.contains("NAME") || ["PATIENT", "DOCTOR", "STAFF", "PERSON", "PER"].contains(&cat) {
            fake_name(&key.1, &mut rng)
        } else if cat.contains("DATE") {
            fake_date(&key.1, &mut rng)
        } else {
            format_preserving(&key.1, &mut rng)
        };
        self.seen.insert(key, value.clone());
        value
    }

    /// Redact with surrogates; whitespace around a span's text is kept.
    pub fn redact(&mut self, text: &str, spans: &[Span]) -> String {
        redact_with(text, spans, |s| {
            let lead = &s.text[..s.text.len() - s.text.trim_start().len()];
            let trail = &s.text[s.text.trim_end().len()..];
            format!("{lead}{}{trail}", self.get(s))
        })
    }
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
        let scheme = LabelScheme::from_labels(&labels(&["O", "B-NAME", "I-NAME", "B-DATE", "I-DATE"])).unwrap();
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
        let scheme = LabelScheme::from_labels(&labels(&["O", "B-NAME", "I-NAME"])).unwrap();
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
        let scheme = LabelScheme::from_labels(&labels(&["O", "B-NAME", "I-NAME"])).unwrap();
        let (text, enc) = example();
        let probs: Vec<f32> = [[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.0, 0.9, 0.1], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]].concat();
        let spans = decode(&text, &enc, &probs, &scheme, 0.5);
        assert_eq!(spans.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(), vec!["John", "Smith"]);
    }

    #[test]
    fn offsets_are_characters_not_bytes() {
        let scheme = LabelScheme::from_labels(&labels(&["O", "NAME"])).unwrap();
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
    fn surrogates_are_consistent_and_keep_format() {
        let mut s = Surrogates::new();
        let span = |label: &str, text: &str| Span { start: 0, end: 0, label: label.into(), text: text.into(), score: 1.0 };
        let a = s.get(&span("NAME", "John Smith"));
        assert_eq!(a, s.get(&span("NAME", "John Smith")));
        assert_eq!(a, Surrogates::new().get(&span("NAME", "John Smith")), "deterministic across runs");
        assert_ne!(a, "John Smith");
        assert_eq!(a.split(' ').count(), 2);
        assert!(s.get(&span("NAME", "Dr. Wilson")).starts_with("Dr. "));
        let d = s.get(&span("DATE", "10/12/1982"));
        let parts: Vec<&str> = d.split('/').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![2, 2, 4]);
        assert!((1..=12).contains(&parts[0].parse::<u32>().unwrap()));
        let phone = s.get(&span("CONTACT", "(634)743-5135"));
        assert_eq!(phone.len(), 13);
        assert_eq!(&phone[..1], "(");
        assert_eq!(&phone[4..5], ")");
        assert!(phone.chars().filter(|c| c.is_ascii_digit()).count() == 10);
    }

    #[test]
    fn schemes() {
        let s = LabelScheme::from_labels(&labels(&["O", "B-PROBLEM", "I-PROBLEM", "B-DRUG", "I-DRUG"])).unwrap();
        assert_eq!(s.categories, vec!["PROBLEM", "DRUG"]);
        assert!(LabelScheme::from_labels(&labels(&["O"])).is_err());
        assert!(LabelScheme::from_labels(&[]).is_err());
    }
}
