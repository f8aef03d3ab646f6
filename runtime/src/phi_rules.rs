//! Pattern recognizers for the PHI that has a shape (issue 21): dates (numeric, ISO, with month
//! names, day-MON-year, a weekday with an ordinal, partial dates after a date word; a time after
//! a date is recognised and left out of the span), phone and fax numbers (extensions,
//! international forms), emails, URLs, IPv4 and IPv6 addresses, SSNs, record, account, plan,
//! licence, device and vehicle ids (prefixed, or introduced by a context word), ZIP codes after a
//! state, street addresses with unit numbers, units, rooms and beds, and ages over 89. Each finds
//! spans in character offsets with the category of spec/RECIPES.md and the rule's name.
//!
//! What looks like PHI but is not is left alone by construction: blood pressures and scores
//! (`158/84`, `3/10`: a slash date needs a year, or a date word before it), doses and lab values
//! (no rule takes a bare decimal), ICD and CPT codes (excluded prefixes), version numbers
//! (`v.6.14.02`), times of day without a date, and ages up to 89.
//!
//! `detect.rs` merges these spans with the model's and the lexicon's (`phi_dict.rs`); here they
//! are tested on their own.

use std::sync::OnceLock;

use regex::Regex;

use crate::deid::CharIndex;

/// One span found by a rule: character offsets `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpan {
    pub start: usize,
    pub end: usize,
    pub category: &'static str,
    pub rule: &'static str,
}

const MONTH: &str =
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)";
/// A time after a date is recognised with it and left out of the span: a time of day is not PHI.
const TIME: &str = r"(?:,?\s+(?:at\s+)?\d{1,2}:\d{2}(?::\d{2})?(?:\s*[AaPp]\.?[Mm]\.?)?)?";
/// Words after which a day and month without a year are a date (`seen on 3/14`), where elsewhere
/// `3/10` is a pain score.
const DATE_WORDS: &str = r"(?i:on|since|from|dated|dob|d\.o\.b\.|until|till|by|before|after|date|seen|admitted|discharged|born|b\.)";
const STATES: &str = r"(?:A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY])";
const STREET: &str =
    r"(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Dr|Drive|Ln|Lane|Way|Ct|Court|Pl|Place|Ter|Terrace|Pkwy|Parkway|Hwy|Highway|Sq|Square|Cir|Circle)";
const ID_WORDS: &str = r"(?i:mrn|medical\s+record(?:\s+(?:number|no\.?))?|hospital\s+(?:number|no\.?)|acct|account(?:\s+(?:number|no\.?))?|member\s+id|policy(?:\s+(?:number|no\.?))?|plan\s+(?:id|number)|claim(?:\s+(?:number|no\.?))?|licen[cs]e(?:\s+(?:number|no\.?))?|serial(?:\s+(?:number|no\.?))?|sn|device\s+(?:id|number)|plate|vin|ssn|record\s+(?:number|no\.?)|id)";
/// Code systems whose codes look like prefixed ids but identify no one.
const CODE_PREFIXES: [&str; 9] = ["ICD", "CPT", "LOINC", "SNOMED", "NDC", "HCPCS", "DRG", "RXNORM", "ATC"];

struct Rule {
    name: &'static str,
    category: &'static str,
    re: Regex,
    /// The capture group that is the span (0: the whole match).
    group: usize,
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |name, category, pattern: &str, group| Rule { name, category, re: Regex::new(pattern).expect("the rules are valid patterns"), group };
        vec![
            r("email", "CONTACT", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", 0),
            r("url", "CONTACT", r#"\b(?:https?://|www\.)[^\s<>"']+[^\s<>"'.,;:!?)]"#, 0),
            r("ipv4", "CONTACT", r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b", 0),
            // Eight groups, or "::" with at least two groups, and a hex letter or five groups:
            // never a time of day (14:30:00).
            r("ipv6", "CONTACT", r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}:?){1,6}\b", 0),
            r("ssn", "ID", r"\b\d{3}-\d{2}-\d{4}\b", 0),
            r(
                "phone",
                "CONTACT",
                r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b(?:\s*(?:ext\.?|x|extension)\s*\d{1,5})?",
                0,
            ),
            r("phone-international", "CONTACT", r"\+\d{1,3}(?:[\s.-]\d{1,4}){3,6}\b", 0),
            r("date-numeric", "DATE", &format!(r"\b(\d{{1,2}}[/.-]\d{{1,2}}[/.-](?:\d{{4}}|\d{{2}})){TIME}(?:\b|$)"), 1),
            r("date-iso", "DATE", &format!(r"\b(\d{{4}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01]))(?:[T ]\d{{2}}:\d{{2}}(?::\d{{2}})?)?{TIME}"), 1),
            r("date-month-day", "DATE", &format!(r"\b({MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?){TIME}\b"), 1),
            r("date-day-month", "DATE", &format!(r"\b(\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{MONTH}\.?(?:,?\s+\d{{4}})?){TIME}\b"), 1),
            r("date-day-mon-year", "DATE", r"(?i)\b\d{1,2}[-/ ](?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*[-/ ]\d{2,4}\b", 0),
            r("date-weekday", "DATE", r"\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday),?\s+(?:the\s+)?\d{1,2}(?:st|nd|rd|th)\b", 0),
            r("date-month-year", "DATE", &format!(r"\b{MONTH}\.?\s+\d{{4}}\b"), 0),
            r("date-partial", "DATE", &format!(r"\b{DATE_WORDS}\s+((?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])){TIME}\b"), 1),
            r("zip", "LOCATION", &format!(r"\b{STATES},?\s+(\d{{5}}(?:-\d{{4}})?)\b"), 1),
            r(
                "street-address",
                "LOCATION",
                &format!(r"\b\d{{1,6}}[ \t]+(?:[NSEW]\.?[ \t]+)?(?:[A-Z][a-z]+\.?[ \t]+){{1,3}}{STREET}\b\.?(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?[ \t]*[A-Za-z0-9-]+)?"),
                0,
            ),
            r("age-over-89", "AGE", r"(?i)\b((?:9\d|1[01]\d))(?:\s*-?\s*(?:years?|yrs?|y)[\s-]*(?:old|/o|o)?\b|\s*y/o|\s*yo\b)", 1),
            r("age-over-89", "AGE", r"(?i)\b(?:age[ds]?|aged)\s+((?:9\d|1[01]\d))\b", 1),
            r("id-after-word", "ID", &format!(r"\b{ID_WORDS}(?:\s+(?:is|was|of|reads))?\s*(?:#|:|no\.?|number)?\s*[:#]?\s*((?:[A-Z]{{1,5}}[\s/-]?)?\d[A-Za-z0-9]*(?:[/-][A-Za-z0-9]+)*(?:\s[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[/-][A-Za-z0-9]+)*)*)"), 1),
            // A unit on its own line or after a line break: "Apt. 268", "Suite 210".
            r("unit-number", "LOCATION", r"\b(?:Apt|Apartment|Suite|Ste|Unit|Flat)\.?[ \t]*#?[ \t]*(\d{1,5}[A-Za-z]?)\b", 1),
            // Rooms and beds: "room 328", "ED Bay 4", "Rm. 12B".
            r("room-number", "LOCATION", r"(?i)\b(?:room|rm|bed|bay)\.?\s*#?\s*(\d{1,4}[A-Za-z]?)\b", 1),
            r("id-prefixed", "ID", r"\b[A-Z]{1,5}[-/]\d{3,}(?:[-/][A-Z0-9]+)*\b", 0),
            r("id-vin", "ID", r"\b[A-HJ-NPR-Z0-9]{17}\b", 0),
        ]
    })
}

/// Every span the rules find in `text`, sorted by start; where spans overlap the longer is kept.
pub fn find(text: &str) -> Vec<RuleSpan> {
    let chars = CharIndex::new(text);
    let char_of = |byte: usize| chars.starts.partition_point(|&b| b < byte);
    let mut found: Vec<RuleSpan> = Vec::new();
    for rule in rules() {
        for caps in rule.re.captures_iter(text) {
            let Some(m) = caps.get(rule.group) else { continue };
            let value = m.as_str();
            if rule.name == "id-prefixed" && CODE_PREFIXES.iter().any(|p| value.to_ascii_uppercase().starts_with(p)) {
                continue;
            }
            if rule.name == "id-vin" && !(value.chars().any(|c| c.is_ascii_digit()) && value.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 2) {
                continue;
            }
            // A numeric date inside a longer dotted token is a version or an address: "v.6.14.02".
            if rule.name == "date-numeric" {
                let before = text[..m.start()].chars().next_back();
                let after: String = text[m.end()..].chars().take(2).collect();
                if before.is_some_and(|c| c == '.' || c.is_alphanumeric()) || after.starts_with('.') && after.chars().nth(1).is_some_and(|c| c.is_ascii_digit())
                {
                    continue;
                }
            }
            found.push(RuleSpan { start: char_of(m.start()), end: char_of(m.end()), category: rule.category, rule: rule.name });
        }
    }
    // Longest first; a span inside or across an earlier (longer) one is dropped.
    found.sort_by(|a, b| (b.end - b.start).cmp(&(a.end - a.start)).then(a.start.cmp(&b.start)));
    let mut kept: Vec<RuleSpan> = Vec::new();
    for s in found {
        if kept.iter().all(|k| s.end <= k.start || s.start >= k.end) {
            kept.push(s);
        }
    }
    kept.sort_by_key(|s| s.start);
    kept
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What `finder` finds in `text`: (text, category, rule) of each span.
    pub(crate) fn found_by(finder: fn(&str) -> Vec<RuleSpan>, text: &str) -> Vec<(String, &'static str, &'static str)> {
        let chars: Vec<char> = text.chars().collect();
        finder(text).into_iter().map(|s| (chars[s.start..s.end].iter().collect(), s.category, s.rule)).collect()
    }

    /// `finder` finds `value` in `text` as `category`.
    pub(crate) fn finds_by(finder: fn(&str) -> Vec<RuleSpan>, text: &str, value: &str, category: &str) {
        let f = found_by(finder, text);
        assert!(f.iter().any(|(v, c, _)| v == value && *c == category), "{text:?}: expected {value:?} as {category}, found {f:?}");
    }

    /// `finder` finds nothing in `text`.
    pub(crate) fn nothing_by(finder: fn(&str) -> Vec<RuleSpan>, text: &str) {
        let f = found_by(finder, text);
        assert!(f.is_empty(), "{text:?}: expected no PHI, found {f:?}");
    }

    fn found(text: &str) -> Vec<(String, &'static str, &'static str)> {
        found_by(find, text)
    }
    fn finds(text: &str, value: &str, category: &str) {
        finds_by(find, text, value, category)
    }
    fn nothing(text: &str) {
        nothing_by(find, text)
    }

    #[test]
    fn dates_in_clinical_formats() {
        finds("DOB 07/02/1961.", "07/02/1961", "DATE");
        finds("seen 10/3/23 in clinic", "10/3/23", "DATE");
        finds("Admitted: 2023-11-02 via ED", "2023-11-02", "DATE");
        finds("on 22.09.2023 she", "22.09.2023", "DATE");
        finds("Consult note Jun 5, 2022 14:30. 67 yo", "Jun 5, 2022", "DATE");
        finds("admitted 11-APR-2019 from home", "11-APR-2019", "DATE");
        finds("call back Tuesday the 4th please", "Tuesday the 4th", "DATE");
        finds("admitted on 12 January 2024 with", "12 January 2024", "DATE");
        finds("signed on March 3rd, 2020, claim", "March 3rd, 2020", "DATE");
        finds("sleep study dated February 2023)", "February 2023", "DATE");
        finds("She was seen on 3/14 and", "3/14", "DATE");
        finds("from 3/14 to 3/18", "3/14", "DATE");
    }

    #[test]
    fn clinical_numbers_are_not_dates() {
        nothing("BP 158/84, heart rate 92");
        nothing("pain 3/10 on acetaminophen 1 g q6h");
        nothing("MoCA 18/30. A1c 7.9%, LDL 131. K 6.4");
        nothing("Repeat in 2 h. Notified at 0215. Meet at 14:30:00.");
        nothing("Apgar 8 and 9, GCS 14, EF 35%, AHI 38/h");
    }

    #[test]
    fn phones_emails_urls_and_addresses() {
        finds("cb (617) 555-0143 ext. 22.", "(617) 555-0143 ext. 22", "CONTACT");
        finds("Home phone 555.201.8832.", "555.201.8832", "CONTACT");
        finds("Fax to +44 20 7946 0321 attn", "+44 20 7946 0321", "CONTACT");
        finds("contact me at +33 1 44 55 66 77.", "+33 1 44 55 66 77", "CONTACT");
        finds("email priya.mehta81@examplemail.com", "priya.mehta81@examplemail.com", "CONTACT");
        finds("see https://portal.riverbend-clinic.org/billing for statement.", "https://portal.riverbend-clinic.org/billing", "CONTACT");
        finds("IP 10.14.22.87 flagged", "10.14.22.87", "CONTACT");
        finds("from 2001:db8:85a3::8a2e:370:7334 at", "2001:db8:85a3::8a2e:370:7334", "CONTACT");
        nothing("version 1.2.3 of the form; 300.4 mg");
        nothing("by De-ID v.6.14.02] Mt Hope");
    }

    #[test]
    fn ids_with_prefixes_separators_and_context_words() {
        finds("SSN on file is 078-05-1120 and", "078-05-1120", "ID");
        finds("His hospital number is MCR-448812.", "MCR-448812", "ID");
        finds("plan member id is HX-2231-0098-A.", "HX-2231-0098-A", "ID");
        finds("claim no. PLI/2020/004417.", "PLI/2020/004417", "ID");
        finds("MRN: 00791234 Admitted", "00791234", "ID");
        finds("Acct # A0042-77819 - visit", "A0042-77819", "ID");
        finds("member ID ZQW884411203, group GRP-77120", "ZQW884411203", "ID");
        finds("VIN 1HGCM82633A004352 on the form", "1HGCM82633A004352", "ID");
        finds("Device serial SN 4471-AB-09.", "SN 4471-AB-09", "ID");
        finds("insurance policy number UHC 9981 44721.", "UHC 9981 44721", "ID");
        nothing("pneumonia (ICD-10 J18.9), CPT-99213, COVID-19");
    }

    #[test]
    fn zip_codes_streets_and_old_ages() {
        finds("Evanston, IL 60201.", "60201", "LOCATION");
        finds("at 1420 N. Maple Ave, Suite 210, Evanston", "1420 N. Maple Ave, Suite 210", "LOCATION");
        finds("a 92-year-old retired boat builder", "92", "AGE");
        finds("Margarethe Olsson (97 y/o) reports", "97", "AGE");
        finds("aged 101, nursing home resident", "101", "AGE");
        nothing("a 67-year-old man; 89 yo F; aged 45");
        finds("Seen in room 328 of the ED", "328", "LOCATION");
        finds("6214 Hampton Ln\n> Apt. 268\n> Worcester", "268", "LOCATION");
        finds("moved to ED Bay 4 overnight", "4", "LOCATION");
        nothing("on room air, bed rest, 2 beds free");
        nothing("received 60201 units; took 40 mg");
    }

    #[test]
    fn offsets_are_characters() {
        let text = "Zoë Müller, DOB 07/02/1961";
        let s = &find(text)[0];
        assert_eq!((s.start, s.end, s.rule), (16, 26, "date-numeric"));
    }

    #[test]
    fn a_street_does_not_run_over_a_line_break() {
        let t = "Marion, IN 92341\n\n04-27-1987\n\nDear Dr. Mills,";
        finds(t, "04-27-1987", "DATE");
        assert!(!found(t).iter().any(|(v, _, _)| v.contains("Dear")), "{:?}", found(t));
    }
}
