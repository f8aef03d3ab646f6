//! The combined PHI detector (issue 21): the model's spans, the pattern rules
//! ([`crate::phi_rules`]) and the dictionaries ([`crate::phi_dict`]) merged into one set of
//! non-overlapping spans. `runtime-cli deid`, the server's routes, the browser page and
//! `trainer eval-deid` all call [`detect`] through `deid::deidentify`.
//!
//! 1. **Model**: words whose P(PHI) reaches the threshold; a word on a name or city list (not a
//!    common word) needs only [`DICTIONARY_THRESHOLD_FACTOR`] of it.
//! 2. **Guards**: a model span inside an eponym (Parkinson's disease, Glasgow Coma Scale), a drug
//!    name or a listed abbreviation, a model span of common words only, and a model span without
//!    letters after a vital sign or score (`BP 158/84`, `heart rate 92`) are dropped. Rule spans
//!    are never dropped: a title makes "Dr. Parkinson" a name.
//! 3. **Rules**: every span of the shape rules and the lexicon rules.
//! 4. **Union**: overlapping spans become one span over all of them. Its category is that of the
//!    highest-ranked span in it: shape rules (dates, contacts, ids, ages, addresses) first, then
//!    lexicon rules (titles, fields, facilities, listed places), then the model; within a rank,
//!    the longest, then [`PRECEDENCE`]. Its score is the highest of its parts; its source lists
//!    them all.
//! 5. **Names**: a NAME span takes in adjacent initials and name words, and loses the titles,
//!    credentials and greetings at its ends.
//! 6. **Propagation**: every other mention of an identifying word of a NAME or LOCATION span (a
//!    surname written once with a title and once without) becomes a span too; the union runs
//!    again over the result.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use regex::Regex;

use crate::deid::{decode_with, LabelScheme, Span};
use crate::phi_dict::{self, lexicon};
use crate::phi_rules::{self, RuleSpan};
use crate::tokenize::Encoded;

/// A dictionary word is PHI at this fraction of the threshold (0.1 at the default 0.3).
pub const DICTIONARY_THRESHOLD_FACTOR: f32 = 1.0 / 3.0;

/// Category order within a rank, first wins.
pub const PRECEDENCE: [&str; 8] = ["ID", "CONTACT", "DATE", "AGE", "NAME", "LOCATION", "PROFESSION", "OTHER"];

/// The combined spans of one document (see the module's documentation), sorted and disjoint.
pub fn detect(text: &str, enc: &Encoded, probs: &[f32], scheme: &LabelScheme, threshold: f32) -> Vec<Span> {
    let lex = lexicon();
    let lowered = threshold * DICTIONARY_THRESHOLD_FACTOR;
    let model = decode_with(text, enc, probs, scheme, |w| if !w.is_empty() && lex.lowers_threshold(w) { lowered } else { threshold });
    let shape = phi_rules::find(text);
    let lexical = phi_dict::find(text);
    combine(text, model, &shape, &lexical)
}

/// Steps 2 to 6 of [`detect`] over the model's spans and the rules' spans.
pub fn combine(text: &str, model: Vec<Span>, shape: &[RuleSpan], lexical: &[RuleSpan]) -> Vec<Span> {
    let chars: Vec<char> = text.chars().collect();
    let guards = phi_dict::guards(text);
    // Each span with its rank; 0 is the strongest.
    let mut parts: Vec<(Span, u8)> = model.into_iter().filter(|s| !guarded(&chars, s, &guards)).map(|s| (s, 2)).collect();
    for (rank, rules) in [(0u8, shape), (1, lexical)] {
        for r in rules {
            let span = Span { start: r.start, end: r.end, label: r.category.to_string(), text: String::new(), score: 1.0, source: format!("rule:{}", r.rule) };
            parts.push((span, rank));
        }
    }
    let mut spans = union(&chars, parts);
    extend_names(&chars, &mut spans, &guards);
    trim_names(&chars, &mut spans);
    propagate(&chars, &mut spans, &guards);
    // Other mentions found by propagation get their initials too ("A. HUEY").
    extend_names(&chars, &mut spans, &guards);
    // Sorted and disjoint, whatever the name steps did.
    union(&chars, spans.into_iter().map(|s| (s, 0)).collect())
}

/// Whether the characters `[a, b)` lie inside one guard range.
fn in_guard(guards: &[(usize, usize)], (a, b): (usize, usize)) -> bool {
    guards.iter().any(|&(g0, g1)| g0 <= a && b <= g1)
}

/// A word's end without a possessive "'s": "Ødegaard's" is "Ødegaard".
fn without_possessive(chars: &[char], (a, b): (usize, usize)) -> usize {
    if b - a > 2 && matches!(chars[b - 2], '\'' | '’') && chars[b - 1] == 's' {
        b - 2
    } else {
        b
    }
}

/// Whether a model span is dropped by a guard (step 2).
fn guarded(chars: &[char], s: &Span, guards: &[(usize, usize)]) -> bool {
    let lex = lexicon();
    let words: Vec<(usize, usize)> = word_ranges(chars, s.start, s.end);
    let value: String = chars[s.start..s.end].iter().collect();
    // An age is a number from 90 to 120 (younger ones are not PHI): "LDL 131" is no age.
    if s.label == "AGE" {
        let n: String = value.chars().filter(char::is_ascii_digit).collect();
        if n.parse::<u32>().is_ok_and(|a| !(90..=120).contains(&a)) {
            return true;
        }
    }
    if words.is_empty() {
        // No letters: a number the rules did not take. A measurement after a vital sign or
        // score, a fragment of a ratio ("/84" of a blood pressure), or a short number read as a
        // date, contact or id (a time "0215", a lab value "131") is not PHI; rooms (LOCATION) and
        // ages (AGE) are left to the model.
        let digits = value.chars().filter(char::is_ascii_digit).count();
        let fragment = value.starts_with('/') || value.ends_with('/');
        let short = digits <= 4 && !value.contains(['/', '-', '.']) && ["DATE", "ID", "CONTACT"].contains(&s.label.as_str());
        return fragment || short || vital_sign_before(chars, s.start);
    }
    // A lone letter ("K" of potassium, "J" of a lead) is no name.
    if words.len() == 1 && words[0].1 - words[0].0 == 1 && value.trim_end_matches('.').chars().count() == 1 {
        return true;
    }
    if words.iter().all(|&w| in_guard(guards, w)) {
        return true;
    }
    let text: Vec<String> = words.iter().map(|&(a, b)| chars[a..b].iter().collect()).collect();
    text.iter().all(|w| lex.is_common(w) && !lex.is_name(w) && !lex.is_city(w))
}

/// Letter runs (with inner apostrophes and hyphens) inside `[start, end)`.
fn word_ranges(chars: &[char], start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = start;
    while i < end {
        if chars[i].is_alphabetic() {
            let s = i;
            while i < end && (chars[i].is_alphabetic() || (matches!(chars[i], '\'' | '’' | '-') && i + 1 < end && chars[i + 1].is_alphabetic())) {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// A vital sign, score or measurement name just before `at`: `BP 158/`, `heart rate `, `GCS `.
fn vital_sign_before(chars: &[char], at: usize) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?i)\b(?:bp|blood\s+pressure|heart\s+rate|hr|pulse|p|rr|resp(?:iratory)?\s+rate|resp|temp(?:erature)?|t|spo2|sp02|o2\s+sat(?:uration)?s?|sat(?:uration)?s?|weight|wt|height|ht|bmi|glucose|bg|a1c|hba1c|ef|score|scale|gcs|pain|map|cvp|fio2|peep|etco2|inr|k|na|cr|hgb|plt|wbc)\s*(?:was|is|of|at|:|=|-)?\s*(?:\d+(?:\.\d+)?\s*/?\s*)?$")
            .expect("valid")
    });
    let before: String = chars[at.saturating_sub(32)..at].iter().collect();
    re.is_match(&before)
}

fn rank_of(category: &str) -> usize {
    PRECEDENCE.iter().position(|c| *c == category).unwrap_or(PRECEDENCE.len())
}

/// Step 4: overlapping spans (each with its rank) become one span, sorted and disjoint.
fn union(chars: &[char], mut parts: Vec<(Span, u8)>) -> Vec<Span> {
    parts.sort_by_key(|(s, _)| (s.start, std::cmp::Reverse(s.end)));
    let mut spans: Vec<Span> = Vec::new();
    let mut group: Vec<(Span, u8)> = Vec::new();
    let flush = |group: &mut Vec<(Span, u8)>, spans: &mut Vec<Span>| {
        // A span that overlaps nothing stays as it is.
        if group.len() == 1 {
            let (mut s, _) = group.pop().expect("one span");
            s.text = chars[s.start..s.end].iter().collect();
            spans.push(s);
            return;
        }
        let (Some(start), Some(end)) = (group.iter().map(|(s, _)| s.start).min(), group.iter().map(|(s, _)| s.end).max()) else { return };
        // The strongest rank; within it the longest span ("Ann Arbor, MI" is a place, though
        // "Ann Arbor" alone reads as a first name and a surname); then category precedence.
        let (best, _) = group.iter().min_by_key(|(s, rank)| (*rank, std::cmp::Reverse(s.end - s.start), rank_of(&s.label))).expect("a group is not empty");
        let score = group.iter().map(|(s, _)| s.score).fold(0f32, f32::max);
        let sources: BTreeSet<&str> = group.iter().flat_map(|(s, _)| s.source.split('+')).collect();
        spans.push(Span {
            start,
            end,
            label: best.label.clone(),
            text: chars[start..end].iter().collect(),
            score,
            source: sources.into_iter().collect::<Vec<_>>().join("+"),
        });
        group.clear();
    };
    let mut group_end = 0;
    for p in parts {
        if p.0.end <= p.0.start {
            continue;
        }
        if !group.is_empty() && p.0.start >= group_end {
            flush(&mut group, &mut spans);
        }
        group_end = if group.is_empty() { p.0.end } else { group_end.max(p.0.end) };
        group.push(p);
    }
    flush(&mut group, &mut spans);
    spans
}

/// A NAME span takes in the name words beside it that neither the model nor a rule marked: an
/// initial or a capitalised word that is not a common word before it or after it ("Arjun" of
/// "Arjun Mehta", "L." of "L. Mills", "A" of "Larry A Moore"), a capitalised word after an
/// initial ("Jeramy C. Hunt"), and a listed first name after "Last, ".
fn extend_names(chars: &[char], spans: &mut Vec<Span>, guards: &[(usize, usize)]) {
    let lex = lexicon();
    let words = word_ranges(chars, 0, chars.len());
    let text_of = |(a, b): (usize, usize)| chars[a..b].iter().collect::<String>();
    let name_word = |w: (usize, usize)| {
        let t = text_of(w);
        let initial = t.chars().count() == 1 && t.chars().all(char::is_uppercase);
        let lower = t.to_lowercase();
        let capitalised = crate::phi_dict::is_capitalised(&t)
            && !lex.is_common(&t)
            && !lex.is_abbreviation(&t)
            && !GENERIC.contains(&lower.as_str())
            && !CREDENTIALS.contains(&lower.as_str());
        (initial || capitalised) && !in_guard(guards, w)
    };
    let free = |spans: &[Span], w: (usize, usize)| !spans.iter().any(|s| s.start < w.1 && w.0 < s.end);
    for i in 0..spans.len() {
        if spans[i].label != "NAME" {
            continue;
        }
        // Up to two words each way, separated by one space (or ". " after an initial).
        for _ in 0..2 {
            let (start, end) = (spans[i].start, spans[i].end);
            // Words are sorted: the last one ending by `start`, the first one starting at `end`.
            let before = words[..words.partition_point(|w| w.1 <= start)].last().copied();
            if let Some(w) = before {
                let gap: String = chars[w.1..start].iter().collect();
                if (gap == " " || gap == ". ") && name_word(w) && free(spans, w) {
                    spans[i].start = w.0;
                }
            }
            let after = words.get(words.partition_point(|w| w.0 < end)).copied();
            if let Some(w) = after {
                let gap: String = chars[end..w.0].iter().collect();
                let next_is_first = gap == ", " && lex.is_first_name(&text_of(w)) && name_word(w);
                // After an initial ("Jeramy C."), a capitalised word is the surname even when it
                // is also a word ("Hunt", "Price").
                let after_initial = end >= 2 && chars[end - 1] == '.' && chars[end - 2].is_uppercase() && (end < 3 || !chars[end - 3].is_alphabetic());
                let surname = after_initial && gap == " " && {
                    let t = text_of(w);
                    crate::phi_dict::is_capitalised(&t) && !lex.is_abbreviation(&t) && !in_guard(guards, w)
                };
                if (gap == " " && name_word(w) || next_is_first || surname) && free(spans, w) {
                    spans[i].end = w.1;
                }
            }
        }
        let s = &mut spans[i];
        let text: String = chars[s.start..s.end].iter().collect();
        if text != s.text {
            s.text = text;
            if !s.source.contains("extended") {
                s.source.push_str("+extended");
            }
        }
    }
}

/// A NAME span does not begin or end with a title, a credential, a greeting or another common
/// word that is not a name ("Dear Dr. Mills" is redacted as "Dear Dr. [NAME]", "Ana Lima, MD"
/// keeps its ", MD").
fn trim_names(chars: &[char], spans: &mut Vec<Span>) {
    let lex = lexicon();
    let droppable = |w: &str| {
        let lower = w.to_lowercase();
        GENERIC.contains(&lower.as_str())
            || CREDENTIALS.contains(&lower.as_str())
            || lex.is_abbreviation(w)
            || (w.chars().count() > 1 && lex.is_common(w) && !lex.is_name(w))
    };
    for s in spans.iter_mut().filter(|s| s.label == "NAME") {
        let words = word_ranges(chars, s.start, s.end);
        let text_of = |&(a, b): &(usize, usize)| chars[a..b].iter().collect::<String>();
        // From the left: droppable words. From the right: droppable words, and a lone letter
        // after one ("Novak, MD I was present").
        let lo = words.iter().position(|w| !droppable(&text_of(w)));
        let mut hi = words.len();
        while hi > 0 {
            let w = &words[hi - 1];
            let letter_after_dropped = w.1 - w.0 == 1 && hi >= 2 && droppable(&text_of(&words[hi - 2])) && chars.get(w.1) != Some(&'.');
            if droppable(&text_of(w)) || letter_after_dropped {
                hi -= 1;
            } else {
                break;
            }
        }
        let keep: Vec<&(usize, usize)> = match lo {
            Some(lo) if lo < hi => words[lo..hi].iter().collect(),
            _ => Vec::new(),
        };
        let (Some(first), Some(last)) = (keep.first(), keep.last()) else { continue };
        let (a, mut b) = (first.0, last.1);
        // Keep the period of a final initial ("Larry S.").
        if b < s.end && chars[b] == '.' && last.1 - last.0 == 1 {
            b += 1;
        }
        if (a, b) != (s.start, s.end) {
            s.start = a;
            s.end = b;
            s.text = chars[a..b].iter().collect();
        }
    }
    spans.retain(|s| s.end > s.start);
}

/// Step 6: other mentions of the identifying words of NAME and LOCATION spans.
fn propagate(chars: &[char], spans: &mut Vec<Span>, guards: &[(usize, usize)]) {
    let lex = lexicon();
    // Lower-cased word → the category and score of the first span holding it.
    let mut wanted: HashMap<String, (String, f32)> = HashMap::new();
    for s in spans.iter().filter(|s| s.label == "NAME" || s.label == "LOCATION") {
        for (a, b) in word_ranges(chars, s.start, s.end) {
            let w: String = chars[a..without_possessive(chars, (a, b))].iter().collect();
            let lower = w.to_lowercase();
            let identifying = w.chars().count() >= 3 && !lex.is_common(&w) && !GENERIC.contains(&lower.as_str());
            if identifying {
                wanted.entry(lower).or_insert_with(|| (s.label.clone(), s.score));
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let mut added = Vec::new();
    for (a, b) in word_ranges(chars, 0, chars.len()) {
        if spans.iter().any(|s| s.start < b && a < s.end) || in_guard(guards, (a, b)) {
            continue;
        }
        // A possessive is the same word: "Ødegaard's".
        let b = without_possessive(chars, (a, b));
        let w: String = chars[a..b].iter().collect();
        if let Some((label, score)) = wanted.get(&w.to_lowercase()) {
            added.push(Span { start: a, end: b, label: label.clone(), text: w, score: *score, source: "propagated".into() });
        }
    }
    spans.extend(added);
    spans.sort_by_key(|s| s.start);
}

/// Degrees and roles written after names.
const CREDENTIALS: &[&str] =
    &["md", "do", "rn", "np", "pa", "phd", "dds", "dpm", "lpn", "cnm", "crna", "aprn", "fnp", "dnp", "mbbs", "lcsw", "msw", "pharmd", "esq"];

/// Words of names and places that identify no one: titles and the generic words of facilities.
const GENERIC: &[&str] = &[
    "dr",
    "mr",
    "mrs",
    "ms",
    "miss",
    "prof",
    "hospital",
    "medical",
    "center",
    "centre",
    "clinic",
    "health",
    "healthcare",
    "system",
    "care",
    "group",
    "memorial",
    "general",
    "regional",
    "community",
    "university",
    "county",
    "saint",
    "mount",
    "street",
    "avenue",
    "road",
    "lane",
    "drive",
    "court",
    "apt",
    "suite",
    "unit",
    "north",
    "south",
    "east",
    "west",
    "the",
    "and",
    "institute",
    "practice",
    "family",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn span(text: &str, value: &str, label: &str, score: f32) -> Span {
        let b = text.find(value).expect("value in text");
        let start = text[..b].chars().count();
        Span { start, end: start + value.chars().count(), label: label.into(), text: value.into(), score, source: "model".into() }
    }

    fn combined(text: &str, model: Vec<Span>) -> Vec<(String, String, String)> {
        let spans = combine(text, model, &phi_rules::find(text), &phi_dict::find(text));
        let chars: Vec<char> = text.chars().collect();
        for s in &spans {
            assert_eq!(s.text, chars[s.start..s.end].iter().collect::<String>());
        }
        for w in spans.windows(2) {
            assert!(w[0].end <= w[1].start, "{spans:?}");
        }
        spans.into_iter().map(|s| (s.text, s.label, s.source)).collect()
    }

    #[test]
    fn union_takes_the_strongest_category_and_every_source() {
        let text = "Call Jane Roe at 617-555-0143 today.";
        // The model reads part of the phone as a date and the name right.
        let model = vec![span(text, "Jane Roe", "NAME", 0.9), span(text, "617-555", "DATE", 0.4)];
        let got = combined(text, model);
        assert_eq!(got[0], ("Jane Roe".into(), "NAME".into(), "model+rule:dictionary-name".into()));
        assert_eq!(got[1], ("617-555-0143".into(), "CONTACT".into(), "model+rule:phone".into()));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn guards_drop_model_spans_but_not_rules() {
        let text = "CLINIC NOTE. BP 158/84, heart rate 92. Parkinson's disease; Dr. Parkinson saw her on Lasix.";
        let model = vec![
            span(text, "NOTE", "NAME", 0.6),
            span(text, "84", "DATE", 0.5),
            span(text, "92", "LOCATION", 0.5),
            span(text, "Parkinson's", "NAME", 0.5),
            span(text, "Lasix", "NAME", 0.4),
        ];
        let mut model = model;
        let text2 = text.to_string() + " LDL 131.";
        model.push(span(&text2, "131", "AGE", 0.6));
        let text = text2.as_str();
        let got = combined(text, model);
        assert_eq!(got, vec![("Parkinson".into(), "NAME".into(), "rule:title-name".into())]);
    }

    #[test]
    fn any_model_spans_give_sorted_disjoint_spans() {
        let text = "pt Johnny W. Stockwell-Andersen (93 y/o) at Our Lady of Mercy Cancer Center, MRN X1304892 - ok to restart apixaban after the fall on 21.10.1978? Call back Sarah 689-731-6941 Dr. Ödegaard";
        let n = text.chars().count();
        let mut rng = crate::init::Rng::new(7);
        for _ in 0..300 {
            let model: Vec<Span> = (0..rng.next_u64() % 12)
                .map(|_| {
                    let a = (rng.next_u64() % n as u64) as usize;
                    let b = (a + 1 + (rng.next_u64() % 30) as usize).min(n);
                    let label = PRECEDENCE[(rng.next_u64() % 8) as usize];
                    Span { start: a, end: b, label: label.into(), text: text.chars().skip(a).take(b - a).collect(), score: 0.5, source: "model".into() }
                })
                .collect();
            // combined() checks each span's text and that they are sorted and disjoint.
            let got = combined(text, model.clone());
            assert!(!got.is_empty());
            let spans = combine(text, model, &phi_rules::find(text), &phi_dict::find(text));
            crate::deid::redact_placeholders(text, &spans);
        }
    }

    #[test]
    fn names_take_in_their_initials_and_surnames() {
        let text = "RR commenter Jeramy C. Hunt points out; have you heard A. HUEY speak? Mr. Huey agreed.";
        let model = vec![span(text, "Jeramy C.", "NAME", 0.8)];
        let got = combined(text, model);
        let names: Vec<&str> = got.iter().filter(|g| g.1 == "NAME").map(|g| g.0.as_str()).collect();
        assert_eq!(names, vec!["Jeramy C. Hunt", "A. HUEY", "Huey"], "{got:?}");
    }

    #[test]
    fn another_mention_of_a_name_is_redacted_too() {
        let text = "Mrs. Ødegaard was seen. ØDEGAARD reports pain; ødegaard's son called.";
        let got = combined(text, vec![]);
        assert_eq!(got.iter().filter(|g| g.1 == "NAME").count(), 3, "{got:?}");
        assert_eq!(got[1].2, "propagated");
    }
}
