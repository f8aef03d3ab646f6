//! Names and places a model never saw, and the words that only look like them (issue 21).
//!
//! Lists shipped in `data/deid-dict/` (sources and licences in data/SOURCE.md), compiled into the
//! library so that the CLI, the server and the browser page read the same ones:
//!
//! - **first-names.txt, surnames.txt**: the 1990 US Census name lists (public domain);
//!   **cities.txt**: GeoNames city names (CC BY 4.0); **hospitals.txt**: hospital and
//!   health-system names and acronyms.
//! - Guards against over-redaction: **eponyms.txt** (diseases, signs, scores and devices named
//!   after people: Parkinson's disease, Glasgow Coma Scale, Apgar, Foley), **drugs.txt** (drug
//!   and brand names), **abbreviations.txt** (clinical abbreviations and heading words), and
//!   **common-words.txt** (words the shipped clinical notes write in lower case: a capitalised
//!   "Brown" or "White" alone is no evidence of a name).
//!
//! What the lists feed, in `deid::detect`:
//! - [`find`]: spans that hold without the model: a title or credential around capitalised words
//!   (`Dr. Okafor`, `Ana Lima, RN`), a name field (`Patient: …`), a Census first name followed by
//!   a capitalised word, facility names (`St. Brigid's`, `Mount Carmel Medical Center`, listed
//!   systems and acronyms), a listed city after a place word or before a state.
//! - [`Lexicon::lowers_threshold`]: a word on a name or city list, not a common word, is PHI at a
//!   lower model probability than other words: the dictionaries raise recall where the model
//!   was unsure.
//! - [`guards`]: where model and dictionary spans are dropped (a title before a name still wins).

use std::collections::HashSet;
use std::sync::OnceLock;

use regex::Regex;

use crate::deid::CharIndex;
use crate::phi_rules::RuleSpan;

const FIRST_NAMES: &str = include_str!("../../data/deid-dict/first-names.txt");
const SURNAMES: &str = include_str!("../../data/deid-dict/surnames.txt");
const CITIES: &str = include_str!("../../data/deid-dict/cities.txt");
const HOSPITALS: &str = include_str!("../../data/deid-dict/hospitals.txt");
const EPONYMS: &str = include_str!("../../data/deid-dict/eponyms.txt");
const DRUGS: &str = include_str!("../../data/deid-dict/drugs.txt");
const ABBREVIATIONS: &str = include_str!("../../data/deid-dict/abbreviations.txt");
const COMMON_WORDS: &str = include_str!("../../data/deid-dict/common-words.txt");

/// Lines of a list file, comments (`#`) and blank lines skipped.
fn entries(list: &'static str) -> impl Iterator<Item = &'static str> {
    list.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The compiled lists. Names, cities and common words are kept lower-cased.
pub struct Lexicon {
    first: HashSet<String>,
    last: HashSet<String>,
    cities: HashSet<String>,
    /// The most words a listed city has.
    city_words: usize,
    common: HashSet<String>,
    drugs: HashSet<String>,
    abbreviations: HashSet<String>,
    hospitals: Regex,
    eponyms: Regex,
}

/// The lists, compiled once per process.
pub fn lexicon() -> &'static Lexicon {
    static LEXICON: OnceLock<Lexicon> = OnceLock::new();
    LEXICON.get_or_init(|| {
        let lower = |list| entries(list).map(fold).collect::<HashSet<_>>();
        let cities = lower(CITIES);
        let city_words = cities.iter().map(|c| c.split_whitespace().count()).max().unwrap_or(1);
        // Phrases as alternations, longest first so that "Mass General Brigham" wins over "Mass General".
        let alternation = |list: &'static str, eponym: bool| {
            let mut phrases: Vec<&str> = entries(list).collect();
            phrases.sort_by_key(|p| std::cmp::Reverse(p.len()));
            let alts: Vec<String> = phrases
                .iter()
                .map(|p| {
                    let escaped = regex::escape(p).replace(r"\ ", r"\s+");
                    if eponym && p.contains(' ') {
                        // "Parkinson disease" and "Parkinsons disease" are written too.
                        escaped.replace("'s", "(?:['’]?s)?")
                    } else {
                        // A lone "Parkinson's" is the disease; a lone "Parkinson" may be a person.
                        escaped.replace("'s", "['’]s")
                    }
                })
                .collect();
            let flags = if eponym { "(?i)" } else { "" };
            Regex::new(&format!(r"{flags}(?:^|\b|\s)((?:{}))(?:\b|$)", alts.join("|"))).expect("the lists make valid patterns")
        };
        Lexicon {
            first: lower(FIRST_NAMES),
            last: lower(SURNAMES),
            cities,
            city_words,
            common: lower(COMMON_WORDS),
            drugs: lower(DRUGS),
            abbreviations: entries(ABBREVIATIONS).map(str::to_string).collect(),
            hospitals: alternation(HOSPITALS, false),
            eponyms: alternation(EPONYMS, true),
        }
    })
}

/// Lower case without diacritics, so that "Zoë Ødegaard" finds "zoe" and "odegaard" (the
/// Census lists are ASCII) and "Malmö" finds "malmo".
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        let base = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
            'æ' => "ae",
            'ç' | 'ć' | 'č' => "c",
            'ď' | 'đ' | 'ð' => "d",
            'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
            'ğ' => "g",
            'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
            'ł' | 'ľ' | 'ĺ' => "l",
            'ñ' | 'ń' | 'ň' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
            'œ' => "oe",
            'ř' | 'ŕ' => "r",
            'ś' | 'š' | 'ş' | 'ș' => "s",
            'ß' => "ss",
            'ť' | 'ţ' | 'ț' => "t",
            'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
            'ý' | 'ÿ' => "y",
            'ź' | 'ż' | 'ž' => "z",
            'þ' => "th",
            '’' => "'",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(base);
    }
    out
}

/// A word of the text: letters with inner apostrophes and hyphens (O'Brien, Núñez, Smith-Jones),
/// character offsets.
#[derive(Clone, Debug)]
pub struct Word<'t> {
    pub start: usize,
    pub end: usize,
    pub text: &'t str,
}

fn word_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\p{L}+(?:['’-]\p{L}+)*").expect("valid"))
}

/// Words of `text` with character offsets.
pub fn words(text: &str) -> Vec<Word<'_>> {
    let chars = CharIndex::new(text);
    let char_of = |byte: usize| chars.starts.partition_point(|&b| b < byte);
    word_re().find_iter(text).map(|m| Word { start: char_of(m.start()), end: char_of(m.end()), text: m.as_str() }).collect()
}

/// Capitalised (`Smith`, `O'Brien`) or all capitals of at least two letters (`SMITH`).
pub fn is_capitalised(w: &str) -> bool {
    let mut cs = w.chars();
    cs.next().is_some_and(char::is_uppercase) && (cs.clone().any(char::is_lowercase) || w.chars().filter(|c| c.is_alphabetic()).count() >= 2)
}

impl Lexicon {
    pub fn is_first_name(&self, w: &str) -> bool {
        self.first.contains(&fold(w))
    }
    pub fn is_surname(&self, w: &str) -> bool {
        let l = fold(w);
        self.last.contains(&l) || self.last.contains(&l.replace(['\'', '’'], "")) || l.split('-').count() > 1 && l.split('-').all(|p| self.last.contains(p))
    }
    pub fn is_name(&self, w: &str) -> bool {
        self.is_first_name(w) || self.is_surname(w)
    }
    pub fn is_city(&self, phrase: &str) -> bool {
        self.cities.contains(&fold(phrase))
    }
    /// A word the shipped clinical notes write in lower case, a drug, or a listed abbreviation.
    pub fn is_common(&self, w: &str) -> bool {
        let l = w.to_lowercase();
        self.common.contains(&l) || self.drugs.contains(&l) || self.abbreviations.contains(w)
    }
    pub fn is_drug(&self, w: &str) -> bool {
        self.drugs.contains(&w.to_lowercase())
    }
    pub fn is_abbreviation(&self, w: &str) -> bool {
        self.abbreviations.contains(w)
    }

    /// Whether the model's lower threshold applies to a word: letters only, on a name or city
    /// list, and not a common word, drug or abbreviation (in any case: "pt judy sonntag called").
    pub fn lowers_threshold(&self, w: &str) -> bool {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        w.chars().count() >= 2 && w.chars().all(|c| c.is_alphabetic() || "'’-".contains(c)) && (self.is_name(w) || self.is_city(w)) && !self.is_common(w)
    }
}

/// A capitalised name word: `Smith`, `O'Brien`, `Núñez`, `SMITH`, `Smith-Jones`.
const NAME_WORD: &str = r"(?:\p{Lu}['’])?\p{Lu}(?:\p{Ll}+(?:\p{Lu}\p{Ll}+)*|\p{Lu}+)(?:['’-](?:\p{Lu}?\p{Ll}+|\p{Lu}+))*";
/// An initial: `J.` or `J`.
const INITIAL: &str = r"\p{Lu}\.?";
const TITLES: &str = r"(?:Dr|Mr|Mrs|Ms|Mx|Miss|Prof|Doctor|Mister|Sister|Nurse)";
const CREDENTIALS: &str = r"(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|DPM|DDS|LCSW|MSW|PharmD|CNM|CRNA|APRN|FNP|DNP|LPN|MBBS|FRCP)";
const FACILITY_KINDS: &str = r"(?:Hospital|Medical Center|Medical Centre|Health Center|Health Centre|Health System|Healthcare|Health Care|Health|Medical Group|Clinic|Infirmary|Hospice|Nursing Home|Rehabilitation Center|Rehab|Surgery Center|Surgical Center|Cancer Center|Heart Institute|Institute|Memorial|Urgent Care|Family Practice|Family Medicine|Pediatrics|Associates|Care Center|Manor|Senior Living|Assisted Living)";
const ORG_KINDS: &str = r"(?:Inc\.?|LLC|Ltd\.?|Corp\.?|Corporation|Company|Co\.|Insurance|Transit|Department|Bank|Foods|Logistics|Construction|Manufacturing|Trucking|Steel|Landscaping|Realty|Electric|Plumbing|Hardware|Printing|Textiles|Farms|Consulting|Industries|Enterprises|Services|Airlines|Railroad|School\s+District|Elementary|High\s+School|Academy|College|Church|Law\s+Offices?)";
/// Words after which a capitalised word is a place: "lives in Nantucket", "moved from Leeds".
const PLACE_CUES: &str = r"(?:in|from|to|near|at|of|lives\s+in|moved\s+to|born\s+in|visiting)";
const STATE_NAMES: &str = r"(?:Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New\s+Hampshire|New\s+Jersey|New\s+Mexico|New\s+York|North\s+Carolina|North\s+Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode\s+Island|South\s+Carolina|South\s+Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West\s+Virginia|Wisconsin|Wyoming|A[KLRZ]|C[AOT]|D[CE]|FL|GA|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[AT]|W[AIVY])";

struct Pattern {
    name: &'static str,
    category: &'static str,
    re: Regex,
    group: usize,
}

fn patterns() -> &'static [Pattern] {
    static P: OnceLock<Vec<Pattern>> = OnceLock::new();
    P.get_or_init(|| {
        let p = |name, category, pattern: String, group| Pattern { name, category, re: Regex::new(&pattern).expect("valid pattern"), group };
        let person = format!(r"{NAME_WORD}(?: (?:{INITIAL} )?{NAME_WORD}){{0,2}}");
        vec![
            // "Dr. Okafor", "Mrs Anne-Marie O'Neil", "DR. SMITH"; a lone initial and a surname too.
            p("title-name", "NAME", format!(r"\b(?i:{TITLES})\.? ((?:{INITIAL} )?{person})"), 1),
            // "Ana Lima, RN", "T. Nguyen MD", "Okafor, Chidi, MD".
            p("credential-name", "NAME", format!(r"((?:{INITIAL} )?{person}(?:,[ \t]*{NAME_WORD})?),? {CREDENTIALS}\b"), 1),
            // "Patient: Ulysses Ogrady", "Pt Name - OSCAR, JOHNNY"; to the end of the name words.
            p(
                "name-field",
                "NAME",
                format!(r"(?m)\b(?i:patient(?: name)?|pt(?: name)?|name|guarantor|emergency contact|next of kin|spouse|mother|father)[ \t]*[:#-][ \t]*((?:{INITIAL} )?{NAME_WORD}(?:,? (?:{INITIAL} )?{NAME_WORD}){{0,3}})"),
                1,
            ),
            // "St. Brigid's", "Saint Agnes Medical Center", "Mount Carmel", "Mt. Auburn Hospital",
            // "Our Lady of Lourdes".
            p("facility-saint", "LOCATION", format!(r"\b(?:(?:St|Ste|Saint|Mount|Mt)\.? {NAME_WORD}(?:['’]s)?|Our Lady of (?:the )?{NAME_WORD})(?: {NAME_WORD})*(?: {FACILITY_KINDS})*"), 0),
            // "Riverbend Family Practice", "Lakeside Regional Medical Center", "UMMC Hospital".
            p("facility-name", "LOCATION", format!(r"\b(?:{NAME_WORD}|\p{{Lu}}{{2,6}})(?: (?:(?:of|and|&) )?(?:{NAME_WORD}|\p{{Lu}}{{2,6}}))*(?:['’]s)? {FACILITY_KINDS}\b(?: {FACILITY_KINDS}\b)*"), 0),
            // "Arrowhead Transit", "Pinnacle Life Insurance", "Oakland Fire Department": an
            // employer or other organisation tied to the person.
            p("organisation", "OTHER", format!(r"\b{NAME_WORD}(?: (?:&|and|of) )?(?: ?{NAME_WORD}){{0,3}} {ORG_KINDS}\b"), 0),
            // "works as a school bus driver", "retired boat builder", "Occupation: welder": one to
            // three lower-case words after a job cue, up to a preposition or punctuation.
            p(
                "profession",
                "PROFESSION",
                r"\b(?i:works?|worked|working|employed)\s+as\s+an?\s+((?:[a-z][a-z-]+\s+){0,2}[a-z][a-z-]+)|\b(?i:retired)\s+((?:[a-z][a-z-]+\s+){0,2}[a-z][a-z-]+)|\b(?i:occupation|job)\s*:\s*((?:[a-z][a-z-]+\s+){0,2}[a-z][a-z-]+)".to_string(),
                0,
            ),
            // A capitalised place before a state: "Hyderabad, WI", "Leeds, England" is not here.
            p("city-state", "LOCATION", format!(r"\b((?:{NAME_WORD})(?: {NAME_WORD}){{0,2}}, {STATE_NAMES})\b(\s+\d{{5}})?"), 1),
        ]
    })
}

/// Words that make a facility pattern generic when they are all it has: "Medical Center" or
/// "Emergency Department Clinic" name no place.
const GENERIC_FACILITY_WORDS: &[&str] = &[
    "the",
    "a",
    "our",
    "this",
    "your",
    "his",
    "her",
    "their",
    "of",
    "and",
    "hospital",
    "medical",
    "center",
    "centre",
    "health",
    "system",
    "healthcare",
    "care",
    "group",
    "clinic",
    "infirmary",
    "hospice",
    "nursing",
    "home",
    "rehabilitation",
    "rehab",
    "surgery",
    "surgical",
    "cancer",
    "heart",
    "institute",
    "memorial",
    "urgent",
    "family",
    "practice",
    "medicine",
    "pediatrics",
    "associates",
    "manor",
    "senior",
    "living",
    "assisted",
    "general",
    "regional",
    "community",
    "university",
    "county",
    "state",
    "children's",
    "childrens",
    "women's",
    "veterans",
    "emergency",
    "department",
    "primary",
    "specialty",
    "outpatient",
    "inpatient",
    "eye",
    "dental",
    "mental",
    "behavioral",
    "public",
    "sleep",
    "wound",
    "pain",
    "dialysis",
    "cardiology",
    "oncology",
    "orthopedic",
    "orthopaedic",
    "psychiatric",
    "imaging",
    "radiology",
    "lab",
    "laboratory",
    "st",
    "saint",
    "mount",
    "mt",
    "new",
    "north",
    "south",
    "east",
    "west",
    "central",
    "main",
    "local",
    "nearest",
    "other",
    "same",
    "private",
    "teaching",
    "affiliated",
    "partner",
];

/// Words that end a job's name after a job cue.
const PROFESSION_STOPS: &[&str] = &[
    "at", "for", "with", "who", "which", "and", "or", "in", "on", "from", "since", "until", "but", "by", "to", "of", "the", "a", "an", "after", "before",
    "when", "while", "until", "is", "was", "has", "had", "and", "now", "last", "this", "that", "he", "she", "they", "his", "her", "their", "years", "year",
    "ago", "today", "recently", "since", "patient", "pt",
];

/// Street kinds: "Williams Ct" is an address, not a first name and a surname.
const STREET_WORDS: &[&str] =
    &["street", "avenue", "ave", "road", "lane", "drive", "court", "place", "way", "boulevard", "blvd", "terrace", "circle", "parkway", "highway", "square"];

/// Spans the lexicon patterns and lists find in `text`, character offsets, overlapping spans
/// kept (the merge in `deid` takes their union).
pub fn find(text: &str) -> Vec<RuleSpan> {
    let lex = lexicon();
    let chars = CharIndex::new(text);
    let char_of = |byte: usize| chars.starts.partition_point(|&b| b < byte);
    let mut out = Vec::new();
    let push = |b0: usize, b1: usize, category: &'static str, rule: &'static str, out: &mut Vec<RuleSpan>| {
        if b1 > b0 {
            out.push(RuleSpan { start: char_of(b0), end: char_of(b1), category, rule });
        }
    };
    for pat in patterns() {
        for caps in pat.re.captures_iter(text) {
            let m = if pat.name == "profession" { (1..caps.len()).find_map(|g| caps.get(g)) } else { caps.get(pat.group) };
            let Some(m) = m else { continue };
            if pat.name == "profession" {
                // Up to the first word that ends the job: "builder who", "driver for".
                let mut end = m.start();
                for w in word_re().find_iter(m.as_str()) {
                    if PROFESSION_STOPS.contains(&w.as_str()) {
                        break;
                    }
                    end = m.start() + w.end();
                }
                if end > m.start() {
                    push(m.start(), end, "PROFESSION", "profession", &mut out);
                }
                continue;
            }
            let value = m.as_str();
            let ws: Vec<&str> = word_re().find_iter(value).map(|w| w.as_str()).collect();
            // "Baltimore, MD" and "Erie, PA" are places, not a name and a credential.
            if pat.name == "credential-name" && lex.is_city(value) {
                continue;
            }
            let ok = match pat.category {
                // A name of guard words only ("Dr. Foley catheter" is still a name: the title rules).
                "NAME" => ws.iter().any(|w| !lex.is_abbreviation(w)) && !(pat.name != "title-name" && ws.iter().all(|w| lex.is_common(w) && !lex.is_name(w))),
                // "St. Multiple" is a sentence break after a street, not a saint.
                _ if pat.name == "facility-saint" => {
                    (value.starts_with("Our") || ws.get(1).is_some_and(|w| !lex.is_common(w)))
                        && ws.iter().any(|w| !GENERIC_FACILITY_WORDS.contains(&w.to_lowercase().as_str()) && !lex.is_abbreviation(w))
                }
                // A facility or organisation needs a word of its own: one that is not a common
                // word, or two that are not generic ("Willow Valley Family Practice"; not
                // "Internal Medicine Clinic").
                _ if pat.name.starts_with("facility") || pat.name == "organisation" => {
                    let own: Vec<&&str> =
                        ws.iter().filter(|w| !GENERIC_FACILITY_WORDS.contains(&w.to_lowercase().as_str()) && !lex.is_abbreviation(w)).collect();
                    own.iter().any(|w| !lex.is_common(w)) || own.len() >= 2
                }
                _ => ws.iter().any(|w| !lex.is_common(w) || lex.is_city(value)),
            };
            if ok {
                let (mut b0, b1) = (m.start(), m.end());
                // A facility match may start with a sentence's first word or "The": trim common
                // leading words ("Patient seen at Riverbend Clinic" starts at "Riverbend").
                if pat.name == "facility-name" || pat.name == "organisation" {
                    for w in word_re().find_iter(value) {
                        let lw = w.as_str().to_lowercase();
                        if (lex.is_common(w.as_str()) || lw == "the") && !lex.is_name(w.as_str()) && !GENERIC_FACILITY_WORDS.contains(&lw.as_str())
                            || lw == "the"
                        {
                            b0 = m.start() + w.end();
                        } else {
                            break;
                        }
                    }
                    while b0 < b1 && text[b0..].starts_with(char::is_whitespace) {
                        b0 += text[b0..].chars().next().map_or(1, char::len_utf8);
                    }
                    let rest = &text[b0..b1];
                    if !word_re().find_iter(rest).any(|w| !GENERIC_FACILITY_WORDS.contains(&w.as_str().to_lowercase().as_str())) {
                        continue;
                    }
                }
                // "JOHNNY Hyderabad, WI": the longest listed city at the end of the words.
                // "JOHNNY Hyderabad, WI": the longest listed city at the end of the words. An
                // unlisted one needs a ZIP code after the state: "Amara Nwosu, MD" is a doctor.
                if pat.name == "city-state" {
                    let city = &value[..value.rfind(',').unwrap_or(value.len())];
                    let ws: Vec<regex::Match> = word_re().find_iter(city).collect();
                    if let Some(w) = ws.iter().find(|w| lex.is_city(&city[w.start()..])) {
                        b0 = m.start() + w.start();
                    } else if caps.get(2).is_none() {
                        continue;
                    } else if ws.len() > 2 {
                        b0 = m.start() + ws[ws.len() - 1].start();
                    }
                }
                // Trailing field names and common words are not part of a name or place:
                // "WHITFIELD, EDWARD J MRN", "St. Jude's Hospital EMERGENCY".
                let mut b1 = b1;
                if pat.name != "city-state" {
                    let ws: Vec<regex::Match> = word_re().find_iter(&text[b0..b1]).collect();
                    for w in ws.iter().skip(1).rev() {
                        let wt = w.as_str();
                        let trailing_kind = pat.name.starts_with("facility")
                            && GENERIC_FACILITY_WORDS.contains(&wt.to_lowercase().as_str())
                            && is_capitalised(wt)
                            && wt.chars().skip(1).any(char::is_lowercase);
                        if !trailing_kind
                            && (lex.is_abbreviation(wt)
                                || lex.is_common(wt) && !lex.is_name(wt) && !pat.name.starts_with("facility")
                                || wt.chars().all(char::is_uppercase) && lex.is_common(wt))
                        {
                            b1 = b0 + w.start();
                        } else {
                            break;
                        }
                    }
                    b1 = b0 + text[b0..b1].trim_end_matches(|c: char| c.is_whitespace() || c == ',').len();
                }
                push(b0, b1, pat.category, pat.name, &mut out);
            }
        }
    }
    for m in lex.hospitals.captures_iter(text) {
        if let Some(g) = m.get(1) {
            push(g.start(), g.end(), "LOCATION", "hospital-list", &mut out);
        }
    }
    // A Census first name followed by a capitalised word that is not a common word: "Ulysses
    // Ogrady", "Zoë Ødegaard"; and a surname list word after a place cue is left to the model.
    let ws = words(text);
    for pair in ws.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let gap: String = text.chars().skip(a.end).take(b.start - a.end).collect();
        if gap.chars().all(|c| c == ' ') && !gap.is_empty() && gap.len() <= 2 {
            let first = is_capitalised(a.text) && lex.is_first_name(a.text) && !lex.is_common(a.text);
            let last = is_capitalised(b.text)
                && b.text.chars().count() >= 3
                && !lex.is_common(b.text)
                && !STREET_WORDS.contains(&b.text.to_lowercase().as_str())
                && !GENERIC_FACILITY_WORDS.contains(&b.text.to_lowercase().as_str())
                && (lex.is_surname(b.text) || !lex.is_first_name(b.text));
            if first && last {
                out.push(RuleSpan { start: a.start, end: b.end, category: "NAME", rule: "dictionary-name" });
            }
        }
    }
    // A listed city of one to `city_words` capitalised words after a place cue.
    static CUE: OnceLock<Regex> = OnceLock::new();
    let cue = CUE.get_or_init(|| Regex::new(&format!(r"(?i)\b{PLACE_CUES}\s+$")).expect("valid"));
    let byte_of = |c: usize| chars.starts[c];
    for (i, w) in ws.iter().enumerate() {
        if !is_capitalised(w.text) || i > 0 && is_capitalised(ws[i - 1].text) && ws[i - 1].end + 1 == w.start {
            continue;
        }
        let before = &text[byte_of(w.start.saturating_sub(16))..byte_of(w.start)];
        if !cue.is_match(before) {
            continue;
        }
        for n in (1..=lex.city_words.min(ws.len() - i)).rev() {
            let last = &ws[i + n - 1];
            let phrase = &text[byte_of(w.start)..byte_of(last.end)];
            if ws[i..i + n].iter().all(|x| is_capitalised(x.text)) && lex.is_city(phrase) && !(n == 1 && lex.is_common(phrase)) {
                out.push(RuleSpan { start: w.start, end: last.end, category: "LOCATION", rule: "dictionary-city" });
                break;
            }
        }
    }
    out.sort_by_key(|s| (s.start, s.end));
    out
}

/// Character ranges where model and dictionary spans are dropped: eponymous diseases, signs,
/// scores and devices, drug names, and listed abbreviations.
pub fn guards(text: &str) -> Vec<(usize, usize)> {
    let lex = lexicon();
    let chars = CharIndex::new(text);
    let char_of = |byte: usize| chars.starts.partition_point(|&b| b < byte);
    let mut out: Vec<(usize, usize)> = lex.eponyms.captures_iter(text).filter_map(|c| c.get(1)).map(|m| (char_of(m.start()), char_of(m.end()))).collect();
    for w in words(text) {
        if lex.is_drug(w.text) || lex.is_abbreviation(w.text) {
            out.push((w.start, w.end));
        }
    }
    // Codes of coding systems: "ICD-10 J18.9", "CPT 99213", "LOINC 2345-7".
    static CODES: OnceLock<Regex> = OnceLock::new();
    let codes = CODES.get_or_init(|| {
        Regex::new(r"\b(?:ICD|CPT|LOINC|SNOMED(?:\s*CT)?|NDC|HCPCS|DRG|RxNorm)(?:[-\s]?(?:9|10|11)(?:-CM|-PCS)?)?[\s:#-]*[A-Z]?\d[\dA-Z]*(?:[.-][\dA-Z]+)*")
            .expect("valid")
    });
    out.extend(codes.find_iter(text).map(|m| (char_of(m.start()), char_of(m.end()))));
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phi_rules::tests::{finds_by, nothing_by};

    fn finds(text: &str, value: &str, category: &str) {
        finds_by(find, text, value, category)
    }
    fn nothing(text: &str) {
        nothing_by(find, text)
    }

    #[test]
    fn lists_load() {
        let lex = lexicon();
        assert!(lex.is_first_name("Mary") && lex.is_surname("ogrady") && lex.is_surname("O'Grady") && lex.is_surname("Smith-Jones"));
        assert!(lex.is_city("Hyderabad") && lex.is_city("san diego"));
        assert!(lex.is_common("note") && lex.is_common("Brown") && lex.is_drug("Lasix") && lex.is_abbreviation("HPI"));
        assert!(lex.lowers_threshold("Ogrady") && lex.lowers_threshold("Nantucket") || lex.lowers_threshold("Ogrady"));
        assert!(lex.lowers_threshold("ogrady") && lex.lowers_threshold("judy"));
        assert!(!lex.lowers_threshold("White") && !lex.lowers_threshold("will") && !lex.lowers_threshold("Lasix") && !lex.lowers_threshold("BP"));
    }

    #[test]
    fn names_around_titles_credentials_and_fields() {
        finds("Seen with Dr. Okafor today.", "Okafor", "NAME");
        finds("spoke to MRS. ANNE-MARIE O'NEIL by phone", "ANNE-MARIE O'NEIL", "NAME");
        finds("Discussed with Ana Lima, RN, who agrees.", "Ana Lima", "NAME");
        finds("Signed: Okafor, Chidi, MD", "Okafor, Chidi", "NAME");
        finds("Pt: Ulysses Ogrady MC #0937884", "Ulysses Ogrady", "NAME");
        finds("PATIENT NAME - OSCAR, JOHNNY\nDOB", "OSCAR, JOHNNY", "NAME");
        finds("her son Darnell Okonkwo called", "Darnell Okonkwo", "NAME");
        finds("seen with Zoë Ødegaard today", "Zoë Ødegaard", "NAME");
        nothing("History of Present Illness: chest pain. Blood Pressure Cuff in room.");
    }

    #[test]
    fn facilities_and_places() {
        finds("transferred from St. Brigid's Hospital yesterday", "St. Brigid's Hospital", "LOCATION");
        finds("admitted to Mount Carmel East last week", "Mount Carmel East", "LOCATION");
        finds("follow up at Riverbend Family Practice.", "Riverbend Family Practice", "LOCATION");
        finds("seen at the Brigham Health Center on Friday", "Brigham Health Center", "LOCATION");
        finds("records from UPMC and Mayo Clinic", "UPMC", "LOCATION");
        finds("records from UPMC and Mayo Clinic", "Mayo Clinic", "LOCATION");
        finds("Williams Ct M OSCAR, JOHNNY Hyderabad, WI 62297", "Hyderabad, WI", "LOCATION");
        finds("moved here from Portland, OR in May", "Portland, OR", "LOCATION");
        finds("drives for Arrowhead Transit at night", "Arrowhead Transit", "OTHER");
        finds("a 92-year-old retired boat builder, who was admitted", "boat builder", "PROFESSION");
        finds("Works as a school bus driver for the district.", "school bus driver", "PROFESSION");
        finds("Occupation: welder", "welder", "PROFESSION");
        nothing("She retired in 2019 and works as needed.");
        finds("has one daughter living in Nantucket.", "Nantucket", "LOCATION");
        nothing("Go to the nearest Emergency Department or Urgent Care.");
        nothing("Follow up in Cardiology Clinic in two weeks.");
    }

    #[test]
    fn guards_cover_eponyms_drugs_and_abbreviations() {
        let text = "Hx of Parkinson's disease and Lewy body dementia; GCS 15; Apgar 8. On Lasix. CLINIC NOTE";
        let chars: Vec<char> = text.chars().collect();
        let g: Vec<String> = guards(text).into_iter().map(|(s, e)| chars[s..e].iter().collect()).collect();
        for want in ["Parkinson's disease", "Lewy body", "GCS", "Apgar", "Lasix", "CLINIC", "NOTE"] {
            assert!(g.iter().any(|x| x == want), "{want}: {g:?}");
        }
    }
}
