//! Scores of a de-identification model on span-annotated notes (JSONL `{"text", "spans"}`),
//! through the same path as `runtime-cli deid`: windows, per-token probabilities, the decoder at
//! a threshold. Per category: exact-span precision, recall and F1 (same start, end and
//! category), and the fraction of the category's characters covered by any predicted span;
//! overall: the fraction of PHI characters left unredacted.
//!
//! And the strict count a privacy officer asks for: a PHI value *leaks* when any identifying
//! word of it (a run of letters or digits that is not a title or a generic word such as "Dr" or
//! "Hospital", [`GENERIC_WORDS`]) is not wholly inside a predicted span: one surviving word can
//! re-identify, whatever share of the characters was redacted. Over-redaction is the share of
//! the word characters outside every PHI value that a predicted span covers.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use kernels::Backend;
use runtime::deid::{decode, deidentify, LabelScheme, Operator};
use runtime::folder::ModelFolder;
use runtime::pipeline::Engine;
use runtime::Model;
use serde::Serialize;

use crate::finetune::{span_docs, SpanDoc};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CategoryScore {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Gold spans of the category.
    pub support: usize,
    /// Characters of the category's gold spans inside some predicted span (of any category).
    pub char_recall: f64,
    /// Gold values with an identifying word not wholly redacted (the strict count).
    pub leaked: usize,
    /// `leaked` over `support`.
    pub leak_rate: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeidReport {
    pub notes: usize,
    pub threshold: f32,
    /// `model + rules + dictionaries` (what `runtime-cli deid` runs) or `model only`.
    pub detector: String,
    pub categories: Vec<CategoryScore>,
    /// Over all categories (exact spans).
    pub micro: CategoryScore,
    pub phi_chars: usize,
    /// PHI characters not inside any predicted span, over all PHI characters.
    pub unredacted_fraction: f64,
    /// Word characters (letters and digits) outside every gold span.
    pub non_phi_word_chars: usize,
    /// The share of them inside a predicted span: what redaction took that was not PHI.
    pub over_redaction: f64,
}

/// Words that identify nobody on their own: titles, honorifics and the generic parts of
/// facility names. A value whose other words are all redacted does not leak through these.
pub const GENERIC_WORDS: &[&str] = &[
    "dr",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "prof",
    "professor",
    "sir",
    "madam",
    "md",
    "do",
    "rn",
    "np",
    "pa",
    "phd",
    "jr",
    "sr",
    "ii",
    "iii",
    "the",
    "of",
    "and",
    "at",
    "on",
    "in",
    "for",
    "to",
    "by",
    "from",
    "with",
    // Field names and generic places and titles: "MRN 55-10-293", "ED Bay 4", "Baby Girl Lindqvist".
    "mrn",
    "ed",
    "er",
    "icu",
    "baby",
    "girl",
    "boy",
    "hospital",
    "hospitals",
    "clinic",
    "clinics",
    "center",
    "centre",
    "medical",
    "health",
    "healthcare",
    "system",
    "systems",
    "university",
    "memorial",
    "general",
    "regional",
    "community",
    "county",
    "institute",
    "practice",
    "care",
    "unit",
    "ward",
    "department",
    "dept",
    "room",
    "suite",
    "floor",
];

/// The identifying words of a value: (start, end) character offsets within `chars`, runs of
/// letters or digits that are not [`GENERIC_WORDS`].
fn identifying_words(chars: &[char], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut words = Vec::new();
    let mut i = start;
    while i < end {
        if !chars[i].is_alphanumeric() {
            i += 1;
            continue;
        }
        let j = (i..end).find(|&k| !chars[k].is_alphanumeric()).unwrap_or(end);
        let word: String = chars[i..j].iter().collect::<String>().to_lowercase();
        if !GENERIC_WORDS.contains(&word.as_str()) {
            words.push((i, j));
        }
        i = j;
    }
    words
}

fn f1(p: f64, r: f64) -> f64 {
    if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// Spans of a note: (start, end, category), character offsets.
pub type Gold = Vec<(usize, usize, String)>;

/// The categories a marked test file may use (spec/RECIPES.md).
const CATEGORIES: [&str; 8] = ["NAME", "DATE", "AGE", "LOCATION", "CONTACT", "ID", "PROFESSION", "OTHER"];

/// Notes written by hand with their PHI marked in place (`data/deid-eval/handwritten.txt`):
/// documents separated by lines holding only `---`, each value written `[[CATEGORY|text]]`,
/// lines starting with `#` ignored. Offsets count characters, as the span files' do.
pub fn marked_docs(path: &Path) -> Result<Vec<SpanDoc>> {
    let file = path.display().to_string();
    let text = runtime::files::read_text(path)?;
    let mut docs = Vec::new();
    let mut block: Vec<(usize, &str)> = Vec::new();
    let lines: Vec<(usize, &str)> = text.lines().enumerate().filter(|(_, l)| !l.starts_with('#')).collect();
    for chunk in lines.split(|(_, l)| l.trim() == "---") {
        block.clear();
        block.extend(chunk.iter().copied());
        while block.first().is_some_and(|(_, l)| l.trim().is_empty()) {
            block.remove(0);
        }
        while block.last().is_some_and(|(_, l)| l.trim().is_empty()) {
            block.pop();
        }
        if block.is_empty() {
            continue;
        }
        let (mut out, mut spans, mut n) = (String::new(), Vec::new(), 0usize);
        for (k, (line_no, line)) in block.iter().enumerate() {
            if k > 0 {
                out.push('\n');
                n += 1;
            }
            let mut rest = *line;
            while let Some(open) = rest.find("[[") {
                let before = &rest[..open];
                out.push_str(before);
                n += before.chars().count();
                let close = rest[open..].find("]]").ok_or_else(|| Error::file(&file, format!("line {}: [[ without ]]", line_no + 1)))? + open;
                let inner = &rest[open + 2..close];
                let (category, value) =
                    inner.split_once('|').ok_or_else(|| Error::file(&file, format!("line {}: expected [[CATEGORY|text]], found [[{inner}]]", line_no + 1)))?;
                if !CATEGORIES.contains(&category) {
                    return Err(Error::file(&file, format!("line {}: unknown category {category:?}; expected one of {}", line_no + 1, CATEGORIES.join(", "))));
                }
                if value.trim().is_empty() || value.trim() != value {
                    return Err(Error::file(&file, format!("line {}: the value of [[{inner}]] must be non-empty without surrounding spaces", line_no + 1)));
                }
                let len = value.chars().count();
                spans.push((n, n + len, category.to_string()));
                out.push_str(value);
                n += len;
                rest = &rest[close + 2..];
            }
            out.push_str(rest);
            n += rest.chars().count();
        }
        docs.push(SpanDoc { text: out, spans });
    }
    if docs.is_empty() {
        return Err(Error::file(&file, "no documents"));
    }
    Ok(docs)
}

/// Which spans are scored: the combined detector every tool runs, or the model's spans alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detector {
    Combined,
    ModelOnly,
}

impl Detector {
    fn describe(self) -> &'static str {
        match self {
            Detector::Combined => "model + rules + dictionaries",
            Detector::ModelOnly => "model only",
        }
    }
}

/// Score `model_dir` on the notes of `data` (span JSONL, or a marked `.txt` file) at `threshold`.
/// Also returns [`errors`].
pub fn evaluate<B: Backend>(be: &B, model_dir: &Path, data: &Path, threshold: f32, detector: Detector) -> Result<(DeidReport, Vec<serde_json::Value>)> {
    let notes = if data.extension().is_some_and(|e| e == "txt") { marked_docs(data)? } else { span_docs(data)? };
    let folder = ModelFolder::open(model_dir)?;
    let tokenizer = folder
        .tokenizer
        .ok_or_else(|| Error::Input(format!("{}: no tokenizer in the model folder (tokenizer.json, vocab.txt or vocab.json)", model_dir.display())))?;
    let model = Model::load(be, folder.config, &folder.checkpoint)?;
    if !model.has_classifier() {
        return Err(Error::Input(format!("{}: not a token-classification model (no classifier)", model_dir.display())));
    }
    let scheme = LabelScheme::from_labels(model.source(), model.labels())?;
    let engine = Engine::new(be, &model, &tokenizer);
    let texts: Vec<&str> = notes.iter().map(|d| d.text.as_str()).collect();
    let encs = engine.tokenize(&texts)?;
    let probs = kernels::block_on(engine.token_probabilities(&encs, &mut |_| {}))?;
    let predicted: Vec<Gold> = notes
        .iter()
        .zip(encs.iter().zip(&probs))
        .map(|(d, (enc, p))| {
            let spans = match detector {
                Detector::Combined => deidentify(&d.text, enc, p, &scheme, threshold, Operator::Placeholder).0,
                Detector::ModelOnly => decode(&d.text, enc, p, &scheme, threshold),
            };
            spans.into_iter().map(|s| (s.start, s.end, s.label)).collect()
        })
        .collect();
    let mut report = score(&notes, &predicted, threshold);
    report.detector = detector.describe().into();
    Ok((report, errors(&notes, &predicted)))
}

/// What went wrong, one JSON object per error: every gold value that leaks (`"leaked"`: its
/// category, text and the words left), and every run of non-PHI words that was redacted
/// (`"over-redacted"`), with the note's index. For the evaluation data only: it quotes the notes.
pub fn errors(notes: &[SpanDoc], predicted: &[Gold]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (i, (SpanDoc { text, spans: gold }, spans)) in notes.iter().zip(predicted).enumerate() {
        let chars: Vec<char> = text.chars().collect();
        let covered = mask(chars.len(), spans);
        let phi = mask(chars.len(), gold);
        for (start, end, label) in gold {
            let left: Vec<String> = leaked_words(&chars, &covered, *start, *end).iter().map(|&(a, b)| chars[a..b].iter().collect()).collect();
            if !left.is_empty() {
                out.push(
                    serde_json::json!({"note": i, "kind": "leaked", "category": label, "text": chars[*start..*end].iter().collect::<String>(), "left": left}),
                );
            }
        }
        for (start, end, label) in spans {
            let n = chars.len();
            let (a, b) = ((*start).min(n), (*end).min(n));
            let extra: String = (a..b).filter(|&k| !phi[k]).map(|k| chars[k]).collect();
            if extra.chars().any(char::is_alphanumeric) {
                out.push(serde_json::json!({"note": i, "kind": "over-redacted", "category": label, "text": chars[a..b].iter().collect::<String>(), "not_phi": extra.trim()}));
            }
        }
    }
    out
}

/// Which of `len` characters some span covers (spans past the end are cut).
fn mask(len: usize, spans: &[(usize, usize, String)]) -> Vec<bool> {
    let mut m = vec![false; len];
    for (start, end, _) in spans {
        m[(*start).min(len)..(*end).min(len)].iter_mut().for_each(|c| *c = true);
    }
    m
}

/// The identifying words of the value `[start, end)` that `covered` does not wholly redact: the
/// value leaks when there is one.
fn leaked_words(chars: &[char], covered: &[bool], start: usize, end: usize) -> Vec<(usize, usize)> {
    identifying_words(chars, start, end).into_iter().filter(|&(a, b)| covered[a..b].iter().any(|&x| !x)).collect()
}

/// Scores of predicted spans against the gold spans of each note (character offsets).
pub fn score(notes: &[SpanDoc], predicted: &[Gold], threshold: f32) -> DeidReport {
    // (tp, predicted, gold, gold chars, covered chars, leaked values) per category.
    let mut counts: BTreeMap<String, [usize; 6]> = BTreeMap::new();
    let (mut outside, mut outside_redacted) = (0usize, 0usize);
    for (SpanDoc { text, spans: gold }, spans) in notes.iter().zip(predicted) {
        let exact: HashSet<(usize, usize, &str)> = spans.iter().map(|(s, e, l)| (*s, *e, l.as_str())).collect();
        let chars: Vec<char> = text.chars().collect();
        let covered = mask(chars.len(), spans);
        let phi = mask(chars.len(), gold);
        for (_, _, label) in spans {
            counts.entry(label.clone()).or_default()[1] += 1;
        }
        for (start, end, label) in gold {
            let c = counts.entry(label.clone()).or_default();
            c[2] += 1;
            c[0] += exact.contains(&(*start, *end, label.as_str())) as usize;
            c[3] += end - start;
            c[4] += covered[*start..*end].iter().filter(|&&x| x).count();
            c[5] += !leaked_words(&chars, &covered, *start, *end).is_empty() as usize;
        }
        for ((ch, is_phi), red) in chars.iter().zip(&phi).zip(&covered) {
            if !is_phi && ch.is_alphanumeric() {
                outside += 1;
                outside_redacted += *red as usize;
            }
        }
    }
    let score = |label: &str, c: &[usize; 6]| {
        let precision = if c[1] > 0 { c[0] as f64 / c[1] as f64 } else { 0.0 };
        let recall = if c[2] > 0 { c[0] as f64 / c[2] as f64 } else { 0.0 };
        CategoryScore {
            label: label.to_string(),
            precision,
            recall,
            f1: f1(precision, recall),
            support: c[2],
            char_recall: if c[3] > 0 { c[4] as f64 / c[3] as f64 } else { 0.0 },
            leaked: c[5],
            leak_rate: if c[2] > 0 { c[5] as f64 / c[2] as f64 } else { 0.0 },
        }
    };
    let mut total = [0usize; 6];
    let categories: Vec<CategoryScore> = counts
        .iter()
        .map(|(l, c)| {
            for (t, x) in total.iter_mut().zip(c) {
                *t += x;
            }
            score(l, c)
        })
        .collect();
    DeidReport {
        notes: notes.len(),
        threshold,
        detector: Detector::Combined.describe().into(),
        categories,
        micro: score("micro", &total),
        phi_chars: total[3],
        unredacted_fraction: if total[3] > 0 { 1.0 - total[4] as f64 / total[3] as f64 } else { 0.0 },
        non_phi_word_chars: outside,
        over_redaction: if outside > 0 { outside_redacted as f64 / outside as f64 } else { 0.0 },
    }
}

impl DeidReport {
    /// A Markdown table.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} notes, threshold {}, {}\n\n| category | precision | recall | F1 | gold spans | PHI characters redacted | values leaked (strict) |\n|---|---|---|---|---|---|---|\n",
            self.notes, self.threshold, self.detector
        );
        for c in self.categories.iter().chain(std::iter::once(&self.micro)) {
            s += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.2}% ({}) |\n",
                c.label,
                c.precision,
                c.recall,
                c.f1,
                c.support,
                c.char_recall,
                100.0 * c.leak_rate,
                c.leaked
            );
        }
        s += &format!(
            "\nPHI characters left unredacted: {:.4} ({} of {})\n",
            self.unredacted_fraction,
            (self.unredacted_fraction * self.phi_chars as f64).round(),
            self.phi_chars
        );
        s += &format!(
            "PHI values leaking an identifying word (strict): {:.2}% ({} of {})\n",
            100.0 * self.micro.leak_rate,
            self.micro.leaked,
            self.micro.support
        );
        s += &format!("Over-redaction: {:.2}% of the {} word characters outside PHI were redacted\n", 100.0 * self.over_redaction, self.non_phi_word_chars);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(s: usize, e: usize, l: &str) -> (usize, usize, String) {
        (s, e, l.to_string())
    }

    #[test]
    fn exact_spans_and_covered_characters() {
        // "Seen by John Smith on 03/04/2020 at Mercy."
        let text = "Seen by John Smith on 03/04/2020 at Mercy.".to_string();
        let gold = vec![span(8, 18, "NAME"), span(22, 32, "DATE"), span(36, 41, "LOCATION")];
        // NAME exact; DATE cut short (8 of 10 characters covered); LOCATION missed; an extra
        // prediction on "Seen".
        let pred = vec![span(0, 4, "NAME"), span(8, 18, "NAME"), span(22, 30, "DATE")];
        let r = score(&[SpanDoc { text, spans: gold }], &[pred], 0.3);
        let get = |l: &str| r.categories.iter().find(|c| c.label == l).unwrap().clone();
        assert_eq!((get("NAME").precision, get("NAME").recall), (0.5, 1.0));
        assert_eq!((get("DATE").precision, get("DATE").recall, get("DATE").char_recall), (0.0, 0.0, 0.8));
        assert_eq!((get("LOCATION").recall, get("LOCATION").char_recall, get("LOCATION").support), (0.0, 0.0, 1));
        assert_eq!(r.phi_chars, 25);
        assert!((r.unredacted_fraction - 7.0 / 25.0).abs() < 1e-12);
        assert!((r.micro.precision - 1.0 / 3.0).abs() < 1e-12 && (r.micro.recall - 1.0 / 3.0).abs() < 1e-12);
        // Strict: the DATE's "2020" keeps two characters, the LOCATION is whole: both leak.
        assert_eq!((get("NAME").leaked, get("DATE").leaked, get("LOCATION").leaked), (0, 1, 1));
        assert_eq!(r.micro.leaked, 2);
        // Over-redaction: "Seen" (4 of the 10 word characters outside PHI: Seen, by, on, at).
        assert_eq!(r.non_phi_word_chars, 10);
        assert!((r.over_redaction - 0.4).abs() < 1e-12);
    }

    #[test]
    fn errors_name_the_leaked_values_and_the_over_redacted_words() {
        let text = "Seen by John Smith on 03/04/2020 at Mercy.".to_string();
        let gold = vec![span(8, 18, "NAME"), span(22, 32, "DATE"), span(36, 41, "LOCATION")];
        let pred = vec![span(0, 4, "NAME"), span(8, 18, "NAME"), span(22, 30, "DATE")];
        let e = errors(&[SpanDoc { text, spans: gold }], &[pred]);
        let leaked: Vec<(&str, &str)> =
            e.iter().filter(|x| x["kind"] == "leaked").map(|x| (x["category"].as_str().unwrap(), x["text"].as_str().unwrap())).collect();
        assert_eq!(leaked, vec![("DATE", "03/04/2020"), ("LOCATION", "Mercy")]);
        assert_eq!(e.iter().find(|x| x["category"] == "DATE").unwrap()["left"], serde_json::json!(["2020"]));
        let over: Vec<&str> = e.iter().filter(|x| x["kind"] == "over-redacted").map(|x| x["not_phi"].as_str().unwrap()).collect();
        assert_eq!(over, vec!["Seen"]);
    }

    #[test]
    fn marked_notes_give_character_offsets() {
        let dir = std::env::temp_dir().join(format!("marked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.txt");
        std::fs::write(&p, "# comment\n---\nSeen [[NAME|Zoë Brown]] on [[DATE|3/4]].\nBP 120/80.\n---\n\nNo PHI here.\n").unwrap();
        let docs = marked_docs(&p).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].text, "Seen Zoë Brown on 3/4.\nBP 120/80.");
        assert_eq!(docs[0].spans, vec![span(5, 14, "NAME"), span(18, 21, "DATE")]);
        let chars: Vec<char> = docs[0].text.chars().collect();
        assert_eq!(chars[5..14].iter().collect::<String>(), "Zoë Brown");
        assert_eq!((docs[1].text.as_str(), docs[1].spans.len()), ("No PHI here.", 0));
        for bad in ["[[NAME|x", "[[NAMEx]]", "[[PERSON|x]]", "[[NAME| x]]"] {
            std::fs::write(&p, bad).unwrap();
            let e = marked_docs(&p).unwrap_err().to_string();
            assert!(e.contains("m.txt") && e.contains("line 1"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The hand-written test set parses, and its values are where its markup put them.
    #[test]
    fn the_handwritten_test_set_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/deid-eval/handwritten.txt");
        let docs = marked_docs(&p).unwrap();
        // Counted by hand from the file: a cut or mangled file shows here.
        assert_eq!(docs.len(), 25);
        let values: usize = docs.iter().map(|d| d.spans.len()).sum();
        assert_eq!(values, 105);
        for d in &docs {
            assert!(!d.text.contains("[[") && !d.text.contains("]]"));
        }
    }

    #[test]
    fn a_value_leaks_through_one_identifying_word_not_through_generic_ones() {
        let text = "Dr. Maria Lopez at Saint Agnes Hospital, MRN AB-12-345.".to_string();
        let gold = vec![span(0, 15, "NAME"), span(19, 39, "LOCATION"), span(45, 54, "ID")];
        // The name without its title: no leak. "Hospital" alone redacted: "Saint Agnes" leaks.
        // The id with its letter prefix left: leaks.
        let pred = vec![span(4, 15, "NAME"), span(31, 39, "LOCATION"), span(48, 54, "ID")];
        let r = score(&[SpanDoc { text, spans: gold }], &[pred], 0.5);
        let get = |l: &str| r.categories.iter().find(|c| c.label == l).unwrap().clone();
        assert_eq!((get("NAME").leaked, get("LOCATION").leaked, get("ID").leaked), (0, 1, 1));
        // "Saint" identifies (Saint Agnes, not any hospital); "Hospital" and "Dr" do not.
        assert!(identifying_words(&"Saint Agnes Hospital".chars().collect::<Vec<_>>(), 0, 20).len() == 2);
        assert!(identifying_words(&"Dr. Smith".chars().collect::<Vec<_>>(), 0, 9) == vec![(4, 9)]);
    }
}
