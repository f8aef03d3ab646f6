//! Surrogates: fake values put where PHI was, so that a de-identified note still reads like a
//! note. Two promises:
//!
//! - **Keyed.** Every choice is drawn from HMAC-SHA256 under a secret key: a fresh random key per
//!   run (or per page in the browser), or a key file the user keeps to get the same surrogates
//!   across runs. The same original gets the same surrogate under one key (a patient stays one
//!   person through a note and a run), and without the key nobody can test candidate originals
//!   against a surrogate (an unkeyed hash would let them: try 100 names, keep the one that maps
//!   to what they see).
//! - **The category's form.** Names become names (titles kept, "Last, First" kept), dates become
//!   valid dates in the same layout (numeric or with month names, weekday recomputed), ages over
//!   89 stay over 89 (HIPAA), phone numbers and identifiers keep their digits-and-letters pattern,
//!   emails, URLs and IP addresses stay well formed, places become places. A value that cannot
//!   be given a surrogate of its form (a date written as "last Tuesday", a category this module
//!   does not know) becomes its `[CATEGORY]` placeholder: never the original, never nonsense.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::deid::{redact_with, Span};
use crate::init::Rng;
use crate::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// The secret every surrogate is drawn under (32 bytes).
#[derive(Clone)]
pub struct SurrogateKey([u8; 32]);

impl std::fmt::Debug for SurrogateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SurrogateKey(…)")
    }
}

/// The fewest bytes a key file may hold.
pub const MIN_KEY_FILE_BYTES: usize = 16;

impl SurrogateKey {
    /// A fresh key from the operating system's random source (the browser's crypto API in wasm).
    pub fn random() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::Input(format!("cannot draw a random surrogate key from the operating system: {e}")))?;
        Ok(SurrogateKey(k))
    }

    /// A key derived from the contents of a key file (`source` names it in messages): any bytes,
    /// at least 16 of them (e.g. `head -c 32 /dev/urandom > deid.key`).
    pub fn from_file_bytes(source: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MIN_KEY_FILE_BYTES {
            return Err(Error::Input(format!(
                "{source}: {} bytes; a surrogate key file must hold at least {MIN_KEY_FILE_BYTES} secret bytes (e.g. `head -c 32 /dev/urandom > {source}`)",
                bytes.len()
            )));
        }
        let mut mac = HmacSha256::new_from_slice(b"runtime surrogate key v1").expect("HMAC takes keys of any length");
        mac.update(bytes);
        Ok(SurrogateKey(mac.finalize().into_bytes().into()))
    }

    /// HMAC(key, parts), parts separated unambiguously.
    fn mac(&self, parts: &[&str]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for p in parts {
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p.as_bytes());
        }
        mac.finalize().into_bytes().into()
    }

    /// A generator seeded by HMAC(key, parts).
    fn rng(&self, parts: &[&str]) -> Rng {
        let digest = self.mac(parts);
        Rng::new(u64::from_le_bytes(digest[..8].try_into().expect("32-byte digest")))
    }
}

/// What kind of value a category holds, from its name (this project's categories, i2b2's and
/// Presidio's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Name,
    Date,
    Age,
    Contact,
    Id,
    Location,
    Profession,
    Organization,
    Unknown,
}

fn kind_of(category: &str) -> Kind {
    let c = category.to_ascii_uppercase();
    let has = |words: &[&str]| words.iter().any(|w| c.contains(w));
    if has(&["USERNAME"]) {
        Kind::Id
    } else if has(&["NAME", "PATIENT", "DOCTOR", "STAFF", "PERSON", "HCW"]) || c == "PER" {
        Kind::Name
    } else if has(&["DATE", "TIME"]) {
        Kind::Date
    } else if has(&["AGE"]) {
        Kind::Age
    } else if has(&["CONTACT", "PHONE", "FAX", "EMAIL", "URL", "WEB", "IP_ADDRESS", "IPADDRESS"]) || c == "IP" {
        Kind::Contact
    } else if has(&["ID", "MRN", "SSN", "RECORD", "ACCOUNT", "LICENSE", "LICENCE", "DEVICE", "PLATE", "VIN", "VEHICLE", "HEALTHPLAN", "PLAN", "CARD", "NUMBER", "BANK", "IBAN"]) {
        Kind::Id
    } else if has(&["LOC", "ADDRESS", "STREET", "CITY", "STATE", "ZIP", "COUNTRY", "HOSPITAL", "FACILITY", "GPE"]) {
        Kind::Location
    } else if has(&["PROFESSION", "OCCUPATION", "JOB"]) {
        Kind::Profession
    } else if has(&["ORG", "EMPLOYER", "COMPANY", "OTHER", "VENDOR", "NRP"]) {
        Kind::Organization
    } else {
        Kind::Unknown
    }
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
const TITLES: &[&str] = &["dr", "mr", "mrs", "ms", "miss", "mx", "prof", "md", "do", "rn", "np", "pa", "phd", "jr", "sr", "ii", "iii"];
const CITIES: &[&str] = &[
    "Springfield", "Riverton", "Fairview", "Greenville", "Kingston", "Milton", "Clinton", "Georgetown", "Franklin", "Salem",
    "Madison", "Oakdale", "Ashland", "Burlington", "Dover", "Lakewood", "Marion", "Newport", "Oxford", "Winchester",
];
const STREETS: &[&str] = &["Maple", "Oak", "Cedar", "Elm", "Pine", "Lincoln", "Washington", "Lake", "Hill", "Park", "Sunset", "Willow", "Chestnut", "Walnut"];
const STREET_SUFFIXES: &[&str] = &["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Boulevard", "Way"];
const STATES: &[(&str, &str)] = &[
    ("AL", "Alabama"), ("AZ", "Arizona"), ("CA", "California"), ("CO", "Colorado"), ("CT", "Connecticut"), ("FL", "Florida"),
    ("GA", "Georgia"), ("IL", "Illinois"), ("IN", "Indiana"), ("IA", "Iowa"), ("KS", "Kansas"), ("KY", "Kentucky"), ("MA", "Massachusetts"),
    ("MD", "Maryland"), ("MI", "Michigan"), ("MN", "Minnesota"), ("MO", "Missouri"), ("NC", "North Carolina"), ("NJ", "New Jersey"),
    ("NY", "New York"), ("OH", "Ohio"), ("OR", "Oregon"), ("PA", "Pennsylvania"), ("TN", "Tennessee"), ("TX", "Texas"),
    ("VA", "Virginia"), ("WA", "Washington"), ("WI", "Wisconsin"),
];
const HOSPITALS: &[&str] = &[
    "Riverside General Hospital", "Saint Mary Medical Center", "Lakeview Community Hospital", "Mercy Regional Medical Center",
    "Valley Memorial Hospital", "Northside Clinic", "Good Samaritan Hospital", "Hillcrest Medical Center",
];
const PROFESSIONS: &[&str] = &["teacher", "engineer", "accountant", "electrician", "carpenter", "librarian", "pharmacist", "mechanic", "chef", "farmer", "architect", "cashier"];
const ORGANIZATIONS: &[&str] = &["Northwind Traders", "Contoso Ltd", "Fabrikam Inc", "Acme Logistics", "Blue Harbor Foods", "Summit Printing", "Granite Insurance", "Pioneer Textiles"];
const MONTHS: &[&str] = &["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const WEEKDAYS: &[&str] = &["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Consistent, keyed fake values for PHI spans.
#[derive(Debug)]
pub struct Surrogates {
    key: SurrogateKey,
}

impl Surrogates {
    pub fn new(key: SurrogateKey) -> Self {
        Surrogates { key }
    }

    /// The surrogate of one span's text (whitespace around it is the caller's).
    pub fn get(&self, span: &Span) -> String {
        let category = span.label.to_ascii_uppercase();
        let original = span.text.trim();
        let placeholder = || format!("[{}]", span.label);
        let value = match kind_of(&category) {
            Kind::Name => self.name(original),
            Kind::Date => self.date(original),
            Kind::Age => self.age(original),
            Kind::Contact => Some(self.contact(original)),
            Kind::Id => Some(self.different(original, |rng| format_preserving(original, rng), &["ID"])),
            Kind::Location => Some(self.location(original)),
            Kind::Profession => Some(self.pick_keep_case(original, "PROFESSION", PROFESSIONS)),
            Kind::Organization => Some(self.pick_keep_case(original, "ORGANIZATION", ORGANIZATIONS)),
            Kind::Unknown if has_digits_only_pattern(original) => Some(self.different(original, |rng| format_preserving(original, rng), &[&category])),
            Kind::Unknown => None,
        };
        value.filter(|v| !v.trim().eq_ignore_ascii_case(original) && !v.trim().is_empty()).unwrap_or_else(placeholder)
    }

    /// The number of days every date of one document moves by, under `--shift-dates`: drawn from
    /// the key and the document's id, between 1 and 365 days back or forward, never 0. One
    /// offset per document keeps the intervals between its dates (admitted on day 0, discharged
    /// on day 5, seen again at 6 weeks) while the dates themselves are gone.
    pub fn date_offset(&self, document: &str) -> i64 {
        let mut rng = self.key.rng(&["DATE-SHIFT", document]);
        let days = 1 + (rng.next_u64() % 365) as i64;
        if rng.next_u64() % 2 == 0 { days } else { -days }
    }

    /// A date moved by `days`, in its own layout: `None` for what cannot be read as a date with
    /// a month (a lone year, "last Tuesday"), which gets its placeholder instead. A date without a
    /// year moves within a common year; one without a day ("March 2019") moves from its 15th.
    pub fn shift_date(original: &str, days: i64) -> Option<String> {
        let p = ParsedDate::parse(original.trim())?;
        let month = p.month?;
        let (year, day) = (p.year.unwrap_or(2001), p.day.unwrap_or(15));
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let (y, m, d) = civil_from_days(days_from_civil(year, month, day) + days);
        let (hour, minute) = p.time.unwrap_or((0, 0));
        Some(p.render(p.year.map(|_| y), m, d, hour, minute))
    }

    /// `[LABEL:0123456789abcdef]`: the first 8 bytes of HMAC-SHA256 under the key (the salt) of
    /// the category and the value in lower case with its spaces collapsed. The same value gets
    /// the same hash under one key, so records can still be linked; without the key a hash
    /// cannot be checked against a guessed value.
    pub fn hash(&self, span: &Span) -> String {
        let value = span.text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        let digest = self.key.mac(&["HASH", &span.label.to_ascii_uppercase(), &value]);
        format!("[{}:{}]", span.label, digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// Redact with surrogates, dates moved by one offset for the whole document (see
    /// [`Surrogates::date_offset`]); other categories as [`Surrogates::redact`].
    pub fn redact_shifting_dates(&self, text: &str, spans: &[Span], document: &str) -> String {
        let offset = self.date_offset(document);
        redact_keeping_space(text, spans, |s| {
            if kind_of(&s.label) == Kind::Date {
                Self::shift_date(&s.text, offset).unwrap_or_else(|| format!("[{}]", s.label))
            } else {
                self.get(s)
            }
        })
    }

    /// Redact every span with its keyed hash ([`Surrogates::hash`]).
    pub fn redact_hashing(&self, text: &str, spans: &[Span]) -> String {
        redact_with(text, spans, |s| self.hash(s))
    }

    /// Redact with surrogates; whitespace around a span's text is kept.
    pub fn redact(&self, text: &str, spans: &[Span]) -> String {
        redact_keeping_space(text, spans, |s| self.get(s))
    }

    /// `make` under HMAC(key, parts, original), drawn again (a few times) if it happens to equal
    /// the original.
    fn different(&self, original: &str, make: impl Fn(&mut Rng) -> String, parts: &[&str]) -> String {
        let lower = original.to_lowercase();
        for attempt in 0..8u32 {
            let tag = attempt.to_string();
            let mut all: Vec<&str> = parts.to_vec();
            all.push(&lower);
            all.push(&tag);
            let v = make(&mut self.key.rng(&all));
            if !v.eq_ignore_ascii_case(original) {
                return v;
            }
        }
        String::new()
    }

    fn pick_keep_case(&self, original: &str, category: &str, list: &[&str]) -> String {
        self.different(original, |rng| keep_case(original, list[rng.next_u64() as usize % list.len()]), &[category])
    }

    /// Each name word on its own, keyed by its spelling and role (first or last name), so that
    /// "John Smith" and "Mr. Smith" share their "Smith". Titles and suffixes stay.
    fn name(&self, original: &str) -> Option<String> {
        let words: Vec<&str> = original.split_whitespace().collect();
        let is_title = |w: &str| TITLES.contains(&w.trim_end_matches([',', '.']).to_ascii_lowercase().as_str());
        let names: Vec<usize> = (0..words.len()).filter(|&i| !is_title(words[i]) && words[i].chars().any(char::is_alphabetic)).collect();
        if names.is_empty() {
            return None;
        }
        // "Smith, John": the word before the comma is the last name.
        let comma_first = names.len() > 1 && words[names[0]].ends_with(',');
        let mut out = Vec::with_capacity(words.len());
        for (i, w) in words.iter().enumerate() {
            if !names.contains(&i) {
                out.push(w.to_string());
                continue;
            }
            let bare = w.trim_end_matches([',', '.', ';', ':']);
            let tail = &w[bare.len()..];
            let last = if comma_first { i == names[0] } else { i == *names.last().expect("non-empty") };
            let replaced: Vec<String> = bare
                .split('-')
                .map(|part| {
                    if part.chars().count() <= 1 {
                        // An initial: another letter.
                        let mut rng = self.key.rng(&["NAME", "initial", &part.to_lowercase()]);
                        let letter = char::from(b'A' + (rng.next_u64() % 26) as u8).to_string();
                        if part.chars().all(char::is_lowercase) { letter.to_lowercase() } else { letter }
                    } else {
                        let (role, list) = if last { ("last", LAST_NAMES) } else { ("first", FIRST_NAMES) };
                        let picked = self.different(part, |rng| list[rng.next_u64() as usize % list.len()].to_string(), &["NAME", role]);
                        keep_case(part, &picked)
                    }
                })
                .collect();
            out.push(format!("{}{tail}", replaced.join("-")));
        }
        Some(out.join(" "))
    }

    /// A valid date in the original's layout, keyed by the original.
    fn date(&self, original: &str) -> Option<String> {
        let parsed = ParsedDate::parse(original)?;
        let mut rng = self.key.rng(&["DATE", &original.to_lowercase()]);
        for _ in 0..8 {
            let year = parsed.year.map(|y| y + (rng.next_u64() % 11) as i32 - 5);
            let month = 1 + (rng.next_u64() % 12) as u32;
            let day = 1 + (rng.next_u64() % days_in_month(year.unwrap_or(2001), month) as u64) as u32;
            let hour = (rng.next_u64() % 24) as u32;
            let minute = (rng.next_u64() % 60) as u32;
            let v = parsed.render(year, month, day, hour, minute);
            if v != original {
                return Some(v);
            }
        }
        None
    }

    /// Another age of the same side of 89: over 89 stays over 89 (HIPAA's "90 or older").
    fn age(&self, original: &str) -> Option<String> {
        let (start, end) = first_number(original)?;
        let n: u64 = original[start..end].parse().ok()?;
        let mut rng = self.key.rng(&["AGE", &original.to_lowercase()]);
        let fake = if n >= 90 {
            90 + rng.next_u64() % 15
        } else {
            let lo = n.saturating_sub(5);
            let hi = (n + 5).min(89);
            lo + rng.next_u64() % (hi - lo + 1)
        };
        let fake = if fake == n { if n >= 90 { 90 + (n - 89) % 15 } else { (n + 1).min(89) } } else { fake };
        Some(format!("{}{fake}{}", &original[..start], &original[end..]))
    }

    fn contact(&self, original: &str) -> String {
        let lower = original.to_lowercase();
        if original.contains('@') {
            let first = FIRST_NAMES;
            return self.different(original, |rng| format!("{}.{}@example.org", first[rng.next_u64() as usize % first.len()].to_lowercase(), LAST_NAMES[rng.next_u64() as usize % LAST_NAMES.len()].to_lowercase()), &["EMAIL"]);
        }
        if lower.starts_with("http") || lower.starts_with("www.") {
            let scheme = if lower.starts_with("http") { "https://" } else { "" };
            return self.different(original, |rng| format!("{scheme}www.example{}.org", rng.next_u64() % 1000), &["URL"]);
        }
        let parts: Vec<&str> = original.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit())) {
            // Documentation addresses (RFC 5737).
            return self.different(original, |rng| format!("192.0.2.{}", 1 + rng.next_u64() % 254), &["IP"]);
        }
        self.different(original, |rng| format_preserving(original, rng), &["CONTACT"])
    }

    fn location(&self, original: &str) -> String {
        let lower = original.to_lowercase();
        let digits = original.chars().filter(char::is_ascii_digit).count();
        let letters = original.chars().filter(|c| c.is_alphabetic()).count();
        if letters == 0 {
            // A ZIP code, a room number.
            return self.different(original, |rng| format_preserving(original, rng), &["LOCATION", "number"]);
        }
        if STATES.iter().any(|(a, n)| *a == original || n.eq_ignore_ascii_case(original)) {
            let full = original.len() > 2;
            return self.different(original, |rng| {
                let (a, n) = STATES[rng.next_u64() as usize % STATES.len()];
                if full { keep_case(original, n) } else { a.to_string() }
            }, &["LOCATION", "state"]);
        }
        if ["hospital", "medical center", "clinic", "health", "infirmary"].iter().any(|w| lower.contains(w)) {
            return self.pick_keep_case(original, "HOSPITAL", HOSPITALS);
        }
        if digits > 0 && original.split_whitespace().count() >= 2 {
            return self.different(original, |rng| {
                let number = 1 + rng.next_u64() % 9899;
                let street = STREETS[rng.next_u64() as usize % STREETS.len()];
                let suffix = STREET_SUFFIXES[rng.next_u64() as usize % STREET_SUFFIXES.len()];
                keep_case(original, &format!("{number} {street} {suffix}"))
            }, &["LOCATION", "street"]);
        }
        self.pick_keep_case(original, "CITY", CITIES)
    }
}

/// True when a value is made of digits and punctuation only (a number of some sort).
fn has_digits_only_pattern(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_digit()) && !s.chars().any(char::is_alphabetic)
}

/// The byte range of the first run of ASCII digits.
fn first_number(s: &str) -> Option<(usize, usize)> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let end = s[start..].find(|c: char| !c.is_ascii_digit()).map_or(s.len(), |e| start + e);
    Some((start, end))
}

fn keep_case(like: &str, word: &str) -> String {
    let letters: Vec<char> = like.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() > 1 && letters.iter().all(|c| c.is_uppercase()) {
        word.to_uppercase()
    } else if !letters.is_empty() && letters.iter().all(|c| c.is_lowercase()) {
        word.to_lowercase()
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

/// [`redact_with`], keeping the whitespace around each span's text outside what `f` gives.
fn redact_keeping_space(text: &str, spans: &[Span], f: impl Fn(&Span) -> String) -> String {
    redact_with(text, spans, |s| {
        let lead = &s.text[..s.text.len() - s.text.trim_start().len()];
        let trail = &s.text[s.text.trim_end().len()..];
        format!("{lead}{}{trail}", f(s))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((yoe + era * 400 + i64::from(m <= 2)) as i32, m, d)
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Day of the week, 0 = Monday (Sakamoto's method).
fn weekday(year: i32, month: u32, day: u32) -> usize {
    const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
    let y = if month < 3 { year - 1 } else { year };
    let sunday_first = (y + y / 4 - y / 100 + y / 400 + T[month as usize - 1] + day as i32).rem_euclid(7);
    ((sunday_first + 6) % 7) as usize
}

/// One piece of a date's layout.
#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Literal(String),
    /// Numeric day or month with its width (1: no padding, 2: zero-padded).
    Day(usize),
    Month(usize),
    /// Day with an English ordinal suffix ("3rd").
    DayOrdinal,
    /// Month name: full or abbreviated (3 letters), and its case (0 as written, 1 upper, 2 lower).
    MonthName { short: bool, case: u8 },
    Weekday { short: bool, case: u8 },
    /// Year with 2 or 4 digits.
    Year(usize),
    Hour(usize),
    Minute,
}

/// A date (or time) as written: its layout, and the year when it has one.
#[derive(Debug)]
struct ParsedDate {
    pieces: Vec<Piece>,
    year: Option<i32>,
    /// The values written, where the layout has them.
    month: Option<u32>,
    day: Option<u32>,
    time: Option<(u32, u32)>,
}

fn case_of(word: &str) -> u8 {
    if word.len() > 1 && word.chars().all(|c| !c.is_lowercase()) {
        1
    } else if word.chars().all(|c| !c.is_uppercase()) {
        2
    } else {
        0
    }
}

fn with_case(word: &str, case: u8) -> String {
    match case {
        1 => word.to_uppercase(),
        2 => word.to_lowercase(),
        _ => word.to_string(),
    }
}

fn ordinal(day: u32) -> String {
    let suffix = match (day % 10, day % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{day}{suffix}")
}

impl ParsedDate {
    /// Read a date or time written in one of the usual layouts: 3/14/2019, 2019-03-14, 14.03.19,
    /// 03/2019, 3/14, March 14, 2019, 14 Mar 2019, Thursday, March 14th, March 2019, 2019,
    /// 10:30, 10:30 am, 3/14/2019 10:30. Anything else: `None`.
    fn parse(s: &str) -> Option<Self> {
        // Tokens: runs of digits, runs of letters, single other characters.
        let mut tokens: Vec<String> = Vec::new();
        for ch in s.chars() {
            let same = tokens.last().is_some_and(|t: &String| {
                let last = t.chars().last().expect("non-empty");
                (last.is_ascii_digit() && ch.is_ascii_digit()) || (last.is_alphabetic() && ch.is_alphabetic())
            });
            if same {
                tokens.last_mut().expect("non-empty").push(ch);
            } else {
                tokens.push(ch.to_string());
            }
        }
        let mut pieces = Vec::new();
        let mut year = None;
        let mut numbers: Vec<(usize, String)> = Vec::new(); // (piece index, digits) still to assign
        let mut has_month_name = false;
        let (mut month, mut day, mut time) = (None, None, None);
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            let lower = t.to_lowercase();
            if t.chars().all(|c| c.is_ascii_digit()) {
                // A time: H:MM.
                if tokens.get(i + 1).is_some_and(|n| n == ":") && tokens.get(i + 2).is_some_and(|m| m.len() == 2 && m.chars().all(|c| c.is_ascii_digit())) && t.len() <= 2 {
                    time = Some((t.parse().unwrap_or(0), tokens[i + 2].parse().unwrap_or(0)));
                    pieces.push(Piece::Hour(t.len()));
                    pieces.push(Piece::Literal(":".into()));
                    pieces.push(Piece::Minute);
                    i += 3;
                    continue;
                }
                // An ordinal day: 14th.
                if let Some(next) = tokens.get(i + 1) {
                    if ["st", "nd", "rd", "th"].contains(&next.to_lowercase().as_str()) && t.len() <= 2 {
                        day = t.parse().ok();
                        pieces.push(Piece::DayOrdinal);
                        i += 2;
                        continue;
                    }
                }
                numbers.push((pieces.len(), t.clone()));
                pieces.push(Piece::Literal(String::new()));
            } else if t.chars().all(char::is_alphabetic) {
                if let Some(m) = MONTHS.iter().position(|m| m.to_lowercase() == lower || (lower.len() >= 3 && m.to_lowercase().starts_with(&lower) && (lower.len() == 3 || lower == "sept"))) {
                    month = Some(m as u32 + 1);
                    pieces.push(Piece::MonthName { short: lower.len() < MONTHS[m].len(), case: case_of(t) });
                    has_month_name = true;
                } else if let Some(d) = WEEKDAYS.iter().position(|d| d.to_lowercase() == lower || (lower.len() == 3 && d.to_lowercase().starts_with(&lower))) {
                    pieces.push(Piece::Weekday { short: lower.len() < WEEKDAYS[d].len(), case: case_of(t) });
                } else if ["am", "pm", "of", "at", "h", "hrs"].contains(&lower.as_str()) {
                    pieces.push(Piece::Literal(t.clone()));
                } else {
                    return None;
                }
            } else if [" ", "/", "-", ".", ",", ":", "'"].contains(&t.as_str()) {
                pieces.push(Piece::Literal(t.clone()));
            } else {
                return None;
            }
            i += 1;
        }
        // Give the bare numbers their roles.
        let width = |d: &str| if d.len() == 2 { 2 } else { 1 };
        let n = numbers;
        let value = |d: &str| d.parse::<i64>().unwrap_or(-1);
        let roles: Vec<Piece> = match (n.len(), has_month_name) {
            (0, _) if pieces.iter().any(|p| matches!(p, Piece::MonthName { .. } | Piece::DayOrdinal | Piece::Hour(_))) => vec![],
            // March 14, 2019 / 14 March 2019 / March 2019 / 14 March.
            (1, true) if n[0].1.len() == 4 => vec![Piece::Year(4)],
            (1, true) if n[0].1.len() <= 2 && (1..=31).contains(&value(&n[0].1)) => vec![Piece::Day(width(&n[0].1))],
            (2, true) if n[1].1.len() == 4 && n[0].1.len() <= 2 => vec![Piece::Day(width(&n[0].1)), Piece::Year(4)],
            (2, true) if n[0].1.len() == 4 && n[1].1.len() <= 2 => vec![Piece::Year(4), Piece::Day(width(&n[1].1))],
            (2, true) if n[1].1.len() == 2 && n[0].1.len() <= 2 => vec![Piece::Day(width(&n[0].1)), Piece::Year(2)],
            // A year alone.
            (1, false) if n[0].1.len() == 4 && (1800..=2200).contains(&value(&n[0].1)) && pieces.len() == 1 => vec![Piece::Year(4)],
            // 2019-03-14.
            (3, false) if n[0].1.len() == 4 && n[1].1.len() <= 2 && n[2].1.len() <= 2 => vec![Piece::Year(4), Piece::Month(width(&n[1].1)), Piece::Day(width(&n[2].1))],
            // 3/14/2019 (month first when it can be, as in US notes), 14.03.2019 otherwise.
            (3, false) if n[0].1.len() <= 2 && n[1].1.len() <= 2 && (n[2].1.len() == 4 || n[2].1.len() == 2) => {
                let y = Piece::Year(n[2].1.len());
                if value(&n[0].1) <= 12 {
                    vec![Piece::Month(width(&n[0].1)), Piece::Day(width(&n[1].1)), y]
                } else {
                    vec![Piece::Day(width(&n[0].1)), Piece::Month(width(&n[1].1)), y]
                }
            }
            // 03/2019.
            (2, false) if n[0].1.len() <= 2 && n[1].1.len() == 4 && (1..=12).contains(&value(&n[0].1)) => vec![Piece::Month(width(&n[0].1)), Piece::Year(4)],
            // 3/14.
            (2, false) if n[0].1.len() <= 2 && n[1].1.len() <= 2 && (1..=12).contains(&value(&n[0].1)) && pieces.iter().any(|p| *p == Piece::Literal("/".into())) => {
                vec![Piece::Month(width(&n[0].1)), Piece::Day(width(&n[1].1))]
            }
            _ => return None,
        };
        for ((idx, digits), role) in n.iter().zip(roles) {
            match role {
                Piece::Year(w) => {
                    let v = value(digits) as i32;
                    year = Some(if w == 2 { if v < 50 { 2000 + v } else { 1900 + v } } else { v });
                }
                Piece::Month(_) => month = Some(value(digits) as u32),
                Piece::Day(_) => day = Some(value(digits) as u32),
                _ => {}
            }
            pieces[*idx] = role;
        }
        if !pieces.iter().any(|p| !matches!(p, Piece::Literal(_))) {
            return None;
        }
        Some(ParsedDate { pieces, year, month, day, time })
    }

    fn render(&self, year: Option<i32>, month: u32, day: u32, hour: u32, minute: u32) -> String {
        let y = year.unwrap_or(2001);
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Day(w) => out.push_str(&format!("{day:0w$}")),
                Piece::Month(w) => out.push_str(&format!("{month:0w$}")),
                Piece::DayOrdinal => out.push_str(&ordinal(day)),
                Piece::MonthName { short, case } => {
                    let name = MONTHS[month as usize - 1];
                    out.push_str(&with_case(if *short { &name[..3] } else { name }, *case));
                }
                Piece::Weekday { short, case } => {
                    let name = WEEKDAYS[weekday(y, month, day)];
                    out.push_str(&with_case(if *short { &name[..3] } else { name }, *case));
                }
                Piece::Year(4) => out.push_str(&format!("{y:04}")),
                Piece::Year(_) => out.push_str(&format!("{:02}", y.rem_euclid(100))),
                Piece::Hour(w) => out.push_str(&format!("{:0w$}", if self.pieces.iter().any(|p| matches!(p, Piece::Literal(s) if s.eq_ignore_ascii_case("am") || s.eq_ignore_ascii_case("pm"))) { 1 + hour % 12 } else { hour })),
                Piece::Minute => out.push_str(&format!("{minute:02}")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(label: &str, text: &str) -> Span {
        Span { start: 0, end: 0, label: label.into(), text: text.into(), score: 1.0, source: "model".into() }
    }

    fn key(byte: u8) -> SurrogateKey {
        SurrogateKey::from_file_bytes("test.key", &[byte; 32]).unwrap()
    }

    #[test]
    fn date_shift_keeps_intervals_and_layouts() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28), 2);
        for z in [-800_000i64, -1, 0, 59, 11_016, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(Surrogates::shift_date("03/14/2019", 5).as_deref(), Some("03/19/2019"));
        assert_eq!(Surrogates::shift_date("2019-12-30", 3).as_deref(), Some("2020-01-02"));
        assert_eq!(Surrogates::shift_date("March 14, 2019", -14).as_deref(), Some("February 28, 2019"));
        assert_eq!(Surrogates::shift_date("14 Mar 2020", -14).as_deref(), Some("29 Feb 2020"));
        assert_eq!(Surrogates::shift_date("3/14", 1).as_deref(), Some("3/15"));
        assert_eq!(Surrogates::shift_date("2019", 30), None);
        assert_eq!(Surrogates::shift_date("last Tuesday", 30), None);
        // One document, one offset: admission to discharge stays 5 days apart.
        let s = Surrogates::new(key(3));
        let text = "Admitted 03/14/2019, discharged 03/19/2019.";
        let spans = vec![
            Span { start: 9, end: 19, label: "DATE".into(), text: "03/14/2019".into(), score: 1.0, source: "rule".into() },
            Span { start: 32, end: 42, label: "DATE".into(), text: "03/19/2019".into(), score: 1.0, source: "rule".into() },
        ];
        let out = s.redact_shifting_dates(text, &spans, "note-1");
        let dates: Vec<(i32, u32, u32)> = out
            .split(|c: char| !(c.is_ascii_digit() || c == '/'))
            .filter(|w| w.len() == 10)
            .map(|w| {
                let p: Vec<u32> = w.split('/').map(|x| x.parse().unwrap()).collect();
                (p[2] as i32, p[0], p[1])
            })
            .collect();
        assert_eq!(dates.len(), 2, "{out}");
        assert_eq!(days_from_civil(dates[1].0, dates[1].1, dates[1].2) - days_from_civil(dates[0].0, dates[0].1, dates[0].2), 5);
        assert_ne!(out, text);
        assert_ne!(s.date_offset("note-1"), 0);
        assert_eq!(s.date_offset("note-1"), s.date_offset("note-1"));
        assert!((0..20).map(|i| s.date_offset(&format!("n{i}"))).collect::<std::collections::HashSet<_>>().len() > 15);
    }

    #[test]
    fn hashes_are_keyed_and_consistent() {
        let (a, b) = (Surrogates::new(key(1)), Surrogates::new(key(2)));
        let h = a.hash(&span("NAME", "John  Smith"));
        assert!(h.starts_with("[NAME:") && h.len() == "[NAME:]".len() + 16, "{h}");
        assert_eq!(h, a.hash(&span("NAME", "john smith")));
        assert_ne!(h, b.hash(&span("NAME", "John Smith")));
        assert_ne!(h, a.hash(&span("LOCATION", "John Smith")));
    }

    #[test]
    fn consistent_under_a_key_and_different_across_keys() {
        let (a, b) = (Surrogates::new(key(1)), Surrogates::new(key(2)));
        let name = a.get(&span("NAME", "John Smith"));
        assert_eq!(name, a.get(&span("NAME", "John Smith")));
        assert_eq!(name, Surrogates::new(key(1)).get(&span("NAME", "John Smith")), "the same key file gives the same surrogates");
        assert_ne!(name, "John Smith");
        assert_eq!(name.split(' ').count(), 2);
        // "Mr. Smith" shares "Smith"'s surrogate with "John Smith".
        let last = name.split(' ').nth(1).unwrap();
        assert_eq!(a.get(&span("NAME", "Mr. Smith")), format!("Mr. {last}"));
        // Another key: different surrogates for most values.
        let names = ["John Smith", "Mary Jones", "Robert Brown", "Linda Davis", "Ahmed Khan", "Wei Chen"];
        let differ = names.iter().filter(|n| a.get(&span("NAME", n)) != b.get(&span("NAME", n))).count();
        assert!(differ >= 4, "{differ} of {} differ", names.len());
        assert!(SurrogateKey::from_file_bytes("k", b"short").unwrap_err().to_string().contains("at least 16"));
    }

    #[test]
    fn without_the_key_a_surrogate_does_not_single_out_the_original() {
        // The attack an unkeyed hash allows: an observer who knows the scheme maps 100 candidate
        // names through it and keeps those that give the surrogate they see. Under a key they do
        // not have (here: their own guess of one), the true name is no likelier than the others.
        let secret = Surrogates::new(SurrogateKey::random().unwrap());
        let candidates: Vec<String> = FIRST_NAMES.iter().flat_map(|f| LAST_NAMES.iter().take(3).map(move |l| format!("{f} {l}"))).take(100).collect();
        let truth = &candidates[37];
        let observed = secret.get(&span("NAME", truth));
        let guess = Surrogates::new(key(7));
        let matching: Vec<&String> = candidates.iter().filter(|c| guess.get(&span("NAME", c)) == observed).collect();
        assert!(!matching.iter().any(|c| *c == truth) || matching.len() > 1, "the true name alone reproduces the surrogate");
    }

    #[test]
    fn dates_stay_valid_dates_in_their_layout() {
        let s = Surrogates::new(key(3));
        for original in ["10/12/1982", "2019-03-04", "3/4/19", "14.03.2019", "03/2019", "3/14", "January 1, 2019", "Jan 1 2019", "1 January 2019", "March 3rd", "Thursday, March 14, 2019", "March 2019", "2019", "10:30", "10:30 am"] {
            let fake = s.get(&span("DATE", original));
            assert_ne!(fake, original);
            assert!(!fake.starts_with('['), "{original} → {fake}");
            let parsed = ParsedDate::parse(&fake).unwrap_or_else(|| panic!("{original} → {fake} does not read as a date"));
            assert_eq!(parsed.pieces.len(), ParsedDate::parse(original).unwrap().pieces.len(), "{original} → {fake}");
        }
        // Month and day in range, day valid for the month, the weekday right for the date.
        for i in 0..200 {
            let fake = Surrogates::new(key(i as u8)).get(&span("DATE", "Thursday, March 14, 2019"));
            let parts: Vec<&str> = fake.split([',', ' ']).filter(|p| !p.is_empty()).collect();
            let month = MONTHS.iter().position(|m| *m == parts[1]).unwrap() as u32 + 1;
            let (day, year): (u32, i32) = (parts[2].parse().unwrap(), parts[3].parse().unwrap());
            assert!(day >= 1 && day <= days_in_month(year, month), "{fake}");
            assert_eq!(WEEKDAYS[weekday(year, month, day)], parts[0], "{fake}");
            let numeric = Surrogates::new(key(i as u8)).get(&span("DATE", "02/29/2020"));
            let p: Vec<u32> = numeric.split('/').map(|x| x.parse().unwrap()).collect();
            assert!((1..=12).contains(&p[0]) && p[1] >= 1 && p[1] <= days_in_month(p[2] as i32, p[0]), "{numeric}");
        }
        assert_eq!(weekday(2019, 3, 14), 3, "14 March 2019 was a Thursday");
        // What is not a date in a known layout becomes the placeholder, never nonsense.
        assert_eq!(s.get(&span("DATE", "last Tuesday night")), "[DATE]");
    }

    #[test]
    fn ages_over_89_stay_over_89() {
        for i in 0..100 {
            let s = Surrogates::new(key(i));
            for (original, prefix, suffix) in [("93", "", ""), ("93-year-old", "", "-year-old"), ("aged 101", "aged ", "")] {
                let fake = s.get(&span("AGE", original));
                let n: u32 = fake.trim_start_matches(prefix).trim_end_matches(suffix).parse().unwrap_or_else(|_| panic!("{fake}"));
                assert!(n >= 90, "{original} → {fake}");
                assert!(fake.starts_with(prefix) && fake.ends_with(suffix));
            }
            let young: u32 = s.get(&span("AGE", "45")).parse().unwrap();
            assert!((40..=50).contains(&young) && young != 45);
        }
        assert_eq!(Surrogates::new(key(1)).get(&span("AGE", "ninety")), "[AGE]");
    }

    #[test]
    fn other_categories_keep_their_form() {
        let s = Surrogates::new(key(4));
        let phone = s.get(&span("CONTACT", "(634)743-5135"));
        assert_eq!(phone.len(), 13);
        assert_eq!((&phone[..1], &phone[4..5], &phone[8..9]), ("(", ")", "-"));
        assert_eq!(phone.chars().filter(|c| c.is_ascii_digit()).count(), 10);
        let email = s.get(&span("CONTACT", "jsmith@mgh.harvard.edu"));
        assert!(email.ends_with("@example.org") && email.contains('.'), "{email}");
        let ip = s.get(&span("CONTACT", "10.1.22.7"));
        assert!(ip.starts_with("192.0.2."), "{ip}");
        let mrn = s.get(&span("ID", "MRN-0042137"));
        assert!(mrn.starts_with("MRN-") || mrn.len() == 11, "{mrn}");
        assert_eq!(mrn.chars().filter(|c| c.is_ascii_digit()).count(), 7);
        assert!(STATES.iter().any(|(a, _)| *a == s.get(&span("LOCATION", "MA"))));
        assert!(CITIES.contains(&s.get(&span("LOCATION", "Boston")).as_str()));
        assert!(HOSPITALS.contains(&s.get(&span("LOCATION", "Massachusetts General Hospital")).as_str()));
        let street = s.get(&span("LOCATION", "221 Baker Street"));
        assert!(street.split(' ').next().unwrap().parse::<u32>().is_ok() && street.split(' ').count() == 3, "{street}");
        let zip = s.get(&span("LOCATION", "02114"));
        assert!(zip.len() == 5 && zip.chars().all(|c| c.is_ascii_digit()) && zip != "02114");
        assert!(PROFESSIONS.contains(&s.get(&span("PROFESSION", "plumber")).as_str()));
        assert!(ORGANIZATIONS.contains(&s.get(&span("OTHER", "Boeing")).as_str()));
        assert_eq!(s.get(&span("DIAGNOSIS", "diabetes")), "[DIAGNOSIS]", "no surrogate of its form: the placeholder");
        // Names: titles and "Last, First" kept, capitals kept, initials become initials.
        let n = s.get(&span("NAME", "Dr. SMITH"));
        assert!(n.starts_with("Dr. ") && n[4..].chars().all(|c| c.is_uppercase()), "{n}");
        let n = s.get(&span("NAME", "Smith, John A."));
        let w: Vec<&str> = n.split(' ').collect();
        assert!(w.len() == 3 && w[0].ends_with(',') && LAST_NAMES.contains(&w[0].trim_end_matches(',')) && FIRST_NAMES.contains(&w[1]) && w[2].len() == 2, "{n}");
    }
}
