//! Synthetic clinical notes with protected health information (PHI) inserted, the offsets of
//! every inserted item known by construction: the training and test data of the bundled
//! de-identification model (there is no public English clinical corpus with gold PHI spans under
//! a clear licence).
//!
//! A note is a header block (patient, record numbers, dates, facility, contacts in varied
//! layouts), sections of real clinical text from the shipped public corpora (ACI-BENCH notes,
//! MTS-Dialog sections; sentences that mention a person or an age over 89 are left out, since
//! their PHI is not marked) mixed with PHI sentences from the project's own templates, the
//! Presidio templates (`data/presidio-templates`, MIT) and the NegEx sentences, whose
//! de-identification markup (`**NAME[…]`, `**DATE[…]`, `**INSTITUTION`, …) is replaced by
//! generated values, and a signature block.
//!
//! Categories (spec/RECIPES.md): NAME (patients, relatives, staff), DATE (every date element but a
//! lone year), AGE (over 89, HIPAA's rule; younger ages are left as text), LOCATION (hospitals,
//! streets, cities, states, zip codes, countries, rooms), CONTACT (phone, fax, email, URL, IP),
//! ID (medical record, SSN, account, health plan, licence, device, vehicle, card numbers),
//! PROFESSION, OTHER (employers and other organisations tied to the person). Titles (Dr., Mrs.)
//! and field names stay outside the spans, as in i2b2 2014.
//!
//! The test split draws fillers from other documents (ACI-BENCH and MTS-Dialog test sets) and
//! names, streets and cities from held-out fifths of the lists, so its scores measure notes and
//! values the model has not seen.

use std::path::Path;

use runtime::init::Rng;
use serde::Serialize;

use crate::corpus::csv_rows;
use crate::data::read_text as read;
use crate::{Error, Result};

/// The PHI categories, in label order.
pub const CATEGORIES: [&str; 8] = ["NAME", "DATE", "AGE", "LOCATION", "CONTACT", "ID", "PROFESSION", "OTHER"];

/// Which part of the value lists and source documents to draw from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// One inserted PHI item: character offsets into the note's text.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PhiSpan {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

/// A generated note.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub spans: Vec<PhiSpan>,
}

/// Text sources read from the repository's `data/` folder.
pub struct Sources {
    /// Clinical sentences without unmarked PHI, by section header.
    fillers: Vec<(String, Vec<String>)>,
    /// NegEx sentences that hold de-identification markup.
    negex: Vec<String>,
    /// Presidio sentence templates.
    presidio: Vec<String>,
    /// The split's part of the Census first names and the 20,000 most common surnames
    /// (`data/deid-dict`), common words left out.
    census_first: Vec<String>,
    census_last: Vec<String>,
}

const FIRST: &[&str] = &[
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa", "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra", "Donald", "Ashley", "Steven", "Kimberly", "Paul", "Emily",
    "Andrew", "Donna", "Joshua", "Michelle", "Kenneth", "Dorothy", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Edward", "Deborah", "Ronald", "Stephanie", "Timothy", "Rebecca",
    "Jason", "Sharon", "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen", "Gary", "Amy", "Nicholas", "Shirley", "Eric", "Angela", "Jonathan", "Helen", "Stephen", "Anna", "Larry",
    "Brenda", "Justin", "Pamela", "Scott", "Nicole", "Brandon", "Emma", "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Frank", "Debra", "Alexander", "Rachel",
    "Raymond", "Catherine", "Patrick", "Carolyn", "Jack", "Janet", "Dennis", "Ruth", "Jerry", "Maria", "Tyler", "Heather", "Aaron", "Diane", "Jose", "Virginia", "Adam", "Julie", "Henry",
    "Joyce", "Nathan", "Victoria", "Douglas", "Olivia", "Zachary", "Kelly", "Peter", "Christina", "Kyle", "Lauren", "Walter", "Joan", "Ethan", "Evelyn", "Jeremy", "Judith", "Harold",
    "Megan", "Keith", "Cheryl", "Christian", "Andrea", "Roger", "Hannah", "Noah", "Martha", "Gerald", "Jacqueline", "Carl", "Frances", "Terry", "Gloria", "Sean", "Ann", "Austin",
    "Teresa", "Arthur", "Kathryn", "Lawrence", "Sara", "Jesse", "Janice", "Dylan", "Jean", "Bryan", "Alice", "Joe", "Madison", "Jordan", "Doris", "Billy", "Abigail", "Bruce", "Julia",
    "Albert", "Judy", "Willie", "Grace", "Gabriel", "Denise", "Logan", "Amber", "Alan", "Marilyn", "Juan", "Beverly", "Wayne", "Danielle", "Roy", "Theresa", "Ralph", "Sophia", "Randy",
    "Marie", "Eugene", "Diana", "Vincent", "Brittany", "Russell", "Natalie", "Elijah", "Isabella", "Louis", "Charlotte", "Bobby", "Rose", "Philip", "Alexis", "Johnny", "Kayla", "Wei",
    "Mei", "Hiroshi", "Yuki", "Priya", "Rahul", "Aisha", "Mohammed", "Fatima", "Omar", "Chen", "Ngozi", "Chinedu", "Lucia", "Mateo", "Sofia", "Ivan", "Olga", "Dmitri", "Anya", "Kwame",
    "Thanh", "Minh", "Raj", "Deepa", "Santiago", "Valentina", "Ahmed", "Leila", "Tomasz", "Agnieszka", "José", "Zoë", "Łukasz", "Søren", "François", "Chloé", "Björn",
    "Jürgen", "Ngọc", "Siobhán", "Aoife", "Inés", "Mário", "Renée", "Kōji", "Oluwaseun", "Chidi", "Emeka", "Thandiwe", "Sipho", "Anaïs", "Gaëlle", "Dariusz", "Małgorzata",
    "Ayşe", "Mehmet", "Yusuf", "Zeynep", "Nikolai", "Svetlana", "Bogdan", "Ioana", "Åsa", "Niamh", "Tadhg", "Eun-ji", "Ji-woo", "Xiu", "Ravi", "Anjali", "Kofi", "Amara",
];

const LAST: &[&str] = &[
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott",
    "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner",
    "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey",
    "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price",
    "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler",
    "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin", "Wallace", "Moreno",
    "West", "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez",
    "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter",
    "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar",
    "Fox", "Warren", "Mills", "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Kowalski",
    "O'Brien", "O'Connor", "Nakamura", "Tanaka", "Yamamoto", "Wong", "Liu", "Zhang", "Singh", "Kumar", "Shah", "Okafor", "Adeyemi", "Mensah", "Ivanova", "Petrov", "Novak", "Rossi",
    "Bianchi", "Schneider", "Fischer", "Dubois", "Laurent", "Haddad", "Khalil", "Nowak", "Lindqvist", "Johansson", "Andersen", "MacLeod", "Fitzgerald", "Vanderberg", "DeLuca",
    "Núñez", "Müller", "Ødegaard", "Wójcik", "Gómez-Ortiz", "Łukasiewicz", "Fernández", "Østergaard", "Çelik", "Yılmaz", "Nguyễn", "Kowalczyk", "Dąbrowski", "O'Sullivan",
    "McAllister", "van der Berg", "de la Cruz", "Abubakar", "Mwangi", "Okonkwo", "Ferreira", "Gonçalves", "Kovačević", "Horváth", "Papadopoulos", "Lindström", "Virtanen",
    "Ó Briain", "Ní Dhomhnaill", "Al-Sayed", "Ben-David", "St. Clair", "D'Angelo", "LeBlanc", "MacKenzie", "Oyelaran", "Tshabalala", "Häkkinen", "Šimková", "Żukowski",
];

const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "Illinois", "IL"), ("Madison", "Wisconsin", "WI"), ("Columbus", "Ohio", "OH"), ("Portland", "Oregon", "OR"), ("Franklin", "Tennessee", "TN"),
    ("Greenville", "South Carolina", "SC"), ("Bristol", "Connecticut", "CT"), ("Clinton", "Iowa", "IA"), ("Salem", "Massachusetts", "MA"), ("Fairview", "Pennsylvania", "PA"),
    ("Riverside", "California", "CA"), ("Jackson", "Mississippi", "MS"), ("Georgetown", "Kentucky", "KY"), ("Arlington", "Virginia", "VA"), ("Ashland", "Oregon", "OR"),
    ("Burlington", "Vermont", "VT"), ("Dover", "Delaware", "DE"), ("Lexington", "Kentucky", "KY"), ("Milton", "Massachusetts", "MA"), ("Newport", "Rhode Island", "RI"),
    ("Oxford", "Mississippi", "MS"), ("Auburn", "Alabama", "AL"), ("Hudson", "New York", "NY"), ("Kingston", "New York", "NY"), ("Marion", "Indiana", "IN"), ("Dayton", "Ohio", "OH"),
    ("Boise", "Idaho", "ID"), ("Tucson", "Arizona", "AZ"), ("Albuquerque", "New Mexico", "NM"), ("Omaha", "Nebraska", "NE"), ("Tulsa", "Oklahoma", "OK"), ("Fresno", "California", "CA"),
    ("Spokane", "Washington", "WA"), ("Des Moines", "Iowa", "IA"), ("Little Rock", "Arkansas", "AR"), ("Baton Rouge", "Louisiana", "LA"), ("Savannah", "Georgia", "GA"),
    ("Chattanooga", "Tennessee", "TN"), ("Duluth", "Minnesota", "MN"), ("Fargo", "North Dakota", "ND"), ("Billings", "Montana", "MT"), ("Reno", "Nevada", "NV"), ("Provo", "Utah", "UT"),
    ("Cheyenne", "Wyoming", "WY"), ("Anchorage", "Alaska", "AK"), ("Honolulu", "Hawaii", "HI"), ("Bangor", "Maine", "ME"), ("Concord", "New Hampshire", "NH"), ("Trenton", "New Jersey", "NJ"),
    ("Annapolis", "Maryland", "MD"), ("Wheeling", "West Virginia", "WV"), ("Raleigh", "North Carolina", "NC"), ("Tallahassee", "Florida", "FL"), ("Gainesville", "Florida", "FL"),
    ("Ann Arbor", "Michigan", "MI"), ("Kalamazoo", "Michigan", "MI"), ("Peoria", "Illinois", "IL"), ("Topeka", "Kansas", "KS"), ("Sioux Falls", "South Dakota", "SD"), ("Rochester", "Minnesota", "MN"),
    ("El Paso", "Texas", "TX"), ("Lubbock", "Texas", "TX"), ("Galveston", "Texas", "TX"), ("Boulder", "Colorado", "CO"), ("Pueblo", "Colorado", "CO"), ("Santa Fe", "New Mexico", "NM"),
    ("Bellingham", "Washington", "WA"), ("Eugene", "Oregon", "OR"), ("Stockton", "California", "CA"), ("Worcester", "Massachusetts", "MA"), ("Scranton", "Pennsylvania", "PA"),
    ("Erie", "Pennsylvania", "PA"), ("Syracuse", "New York", "NY"), ("Macon", "Georgia", "GA"), ("Mobile", "Alabama", "AL"), ("Biloxi", "Mississippi", "MS"), ("Shreveport", "Louisiana", "LA"),
];

/// Places abroad: (city, country, postal code layout, street layout) for international addresses.
const INTL_CITIES: &[(&str, &str)] = &[
    ("Lyon", "France"), ("Leeds", "United Kingdom"), ("Toronto", "Canada"), ("München", "Germany"), ("Kraków", "Poland"), ("São Paulo", "Brazil"), ("Malmö", "Sweden"),
    ("Cork", "Ireland"), ("Pune", "India"), ("Lagos", "Nigeria"), ("Nairobi", "Kenya"), ("Guadalajara", "Mexico"), ("Hà Nội", "Vietnam"), ("Zürich", "Switzerland"),
    ("Porto", "Portugal"), ("Ghent", "Belgium"), ("Aarhus", "Denmark"), ("Tromsø", "Norway"), ("Bilbao", "Spain"), ("Bologna", "Italy"), ("Glasgow", "Scotland"),
    ("Halifax", "Canada"), ("Brisbane", "Australia"), ("Dunedin", "New Zealand"), ("Gdańsk", "Poland"), ("Łódź", "Poland"), ("Manchester", "United Kingdom"),
    ("Montréal", "Canada"), ("Córdoba", "Argentina"), ("Kumasi", "Ghana"),
];

const STREETS: &[&str] = &[
    "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Main", "Park", "Walnut", "Sunset", "Lincoln", "Jackson", "Church", "River", "Highland", "Chestnut", "Spring",
    "Meadow", "Forest", "Willow", "Ridge", "Cherry", "Mill", "Jefferson", "Franklin", "Madison", "Adams", "Center", "Prospect", "Union", "Orchard", "Lakeview", "Hawthorne", "Sycamore",
    "Dogwood", "Magnolia", "Birch", "Aspen", "Juniper", "Poplar", "Laurel", "Holly", "Heritage", "Valley", "Greenwood", "Fairway", "Harbor", "Bayview", "Summit", "Brookside", "Windsor",
    "Cambridge", "Hampton", "Canterbury", "Kensington", "Lexington", "Monroe", "Quincy",
];
const STREET_KINDS: &[&str] = &["Street", "St.", "St", "Avenue", "Ave", "Ave.", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Ln", "Drive", "Dr", "Court", "Ct", "Way", "Place", "Pl", "Terrace", "Circle", "Parkway"];
const COUNTRIES: &[&str] = &["Mexico", "Canada", "India", "China", "the Philippines", "Vietnam", "Nigeria", "Ghana", "Brazil", "Guatemala", "Poland", "Ukraine", "Italy", "Germany", "Ireland", "Haiti", "Jamaica", "Somalia", "Ethiopia", "Korea", "Japan", "Pakistan", "Egypt", "Peru", "Colombia"];
const PROFESSIONS: &[&str] = &[
    "teacher", "nurse", "electrician", "plumber", "carpenter", "truck driver", "accountant", "software engineer", "lawyer", "firefighter", "police officer", "farmer", "mechanic",
    "pharmacist", "cashier", "chef", "waitress", "bartender", "construction worker", "welder", "janitor", "librarian", "dentist", "veterinarian", "pilot", "flight attendant",
    "hairdresser", "social worker", "paramedic", "architect", "graphic designer", "journalist", "real estate agent", "bank teller", "security guard", "mail carrier", "machinist",
    "professor", "physical therapist", "dental hygienist", "landscaper", "roofer", "painter", "photographer", "musician", "coal miner", "fisherman", "warehouse worker", "bus driver",
    "daycare worker", "home health aide", "pastor", "engineer", "salesman", "store manager", "secretary", "seamstress", "dock worker",
];
const ORG_KINDS: &[&str] = &["Construction", "Logistics", "Foods", "Manufacturing", "Insurance Group", "Auto Body", "Bakery", "Consulting", "Trucking", "Steel", "Landscaping", "Dental Group", "Law Offices", "Realty", "Electric", "Plumbing & Heating", "Hardware", "Printing", "Textiles", "Farms"];
const HOSPITAL_KINDS: &[&str] = &["General Hospital", "Medical Center", "Regional Medical Center", "Memorial Hospital", "Community Hospital", "Health Center", "Clinic", "Children's Hospital", "Rehabilitation Center", "Family Practice", "Cancer Center", "Heart Institute"];
/// Clinical sentences with people's names in them that are not PHI: eponyms, scores, drugs.
const NEGATIVE_SENTENCES: &[&str] = &[
    "History of Parkinson's disease with Lewy body features.",
    "GCS 15 on arrival; Apgar scores were 8 and 9.",
    "Positive Murphy's sign, no tenderness at McBurney's point.",
    "Started on Lasix 40 mg and Zestril 10 mg daily.",
    "Foley catheter removed; Holter monitor placed.",
    "Known Crohn's disease, last flare treated with Humira.",
    "Bell's palsy resolved; Romberg negative.",
    "Wells score 1.5, PERC negative, no DVT.",
    "Hodgkin lymphoma in remission after ABVD.",
    "Alzheimer's dementia, MoCA 18/30, on Aricept.",
    "Hashimoto's thyroiditis on Synthroid 75 mcg.",
    "Glasgow Coma Scale 14, pupils equal and reactive.",
    "Barrett's esophagus on surveillance EGD.",
    "Down syndrome with a history of AV canal repair.",
    "Gleason 3+4 prostate cancer on active surveillance.",
    "CHA2DS2-VASc 4, HAS-BLED 2; continue Eliquis.",
    "Epley maneuver performed with relief of vertigo.",
    "Guillain-Barre syndrome ruled out by lumbar puncture.",
];
const HEADINGS: &[&str] = &["CLINIC NOTE", "PROGRESS NOTE", "DISCHARGE SUMMARY", "CONSULTATION NOTE", "Office Visit", "TELEPHONE ENCOUNTER", "ED NOTE", "Clinic Note"];
const MONTHS: &[&str] = &["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DOMAINS: &[&str] = &["example.com", "mail.com", "inbox.net", "fastmail.org", "webmail.us", "post.net", "example.org", "homemail.com"];
const SECTIONS: &[&str] = &["HISTORY OF PRESENT ILLNESS", "CHIEF COMPLAINT", "PAST MEDICAL HISTORY", "SOCIAL HISTORY", "FAMILY HISTORY", "MEDICATIONS", "ALLERGIES", "PHYSICAL EXAMINATION", "ASSESSMENT AND PLAN", "HOSPITAL COURSE", "IMPRESSION", "PLAN", "REVIEW OF SYSTEMS", "RESULTS", "DISPOSITION"];

/// Every list split into a train and a test part: every fifth item is kept for the test split.
fn part<'a, T>(list: &'a [T], split: Split) -> Vec<&'a T> {
    list.iter().enumerate().filter(|(i, _)| (i % 5 == 4) == (split == Split::Test)).map(|(_, x)| x).collect()
}

/// Names of a list in a split: a name goes to the test split by a hash of its spelling, so a
/// name on both lists (James, Rose, Chen) lands in the same split from either.
fn part_names(list: &'static [&'static str], split: Split) -> Vec<&'static &'static str> {
    list.iter().filter(|n| (crate::corpus::hash(n, 0x4E41_4D45) % 5 == 4) == (split == Split::Test)).collect()
}

/// The first and last names a split draws from (the two splits share none).
pub fn names(split: Split) -> Vec<&'static str> {
    part_names(FIRST, split).into_iter().chain(part_names(LAST, split)).copied().collect()
}

/// Whether a sentence of real text may hold PHI that would go unmarked: a title before a
/// capitalised word, a listed first or last name, a date-like or phone-like number, an age over
/// 89, an email or a web address, de-identification markup.
fn may_hold_phi(s: &str) -> bool {
    let words: Vec<&str> = s.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == '/' || c == '-' || c == '@')).filter(|w| !w.is_empty()).collect();
    for (i, w) in words.iter().enumerate() {
        let bare = w.trim_end_matches('.');
        if ["Mr", "Mrs", "Ms", "Miss", "Dr", "Dr.", "Mister"].contains(&bare) {
            return true;
        }
        let cap = bare.chars().next().is_some_and(char::is_uppercase) && bare.chars().skip(1).any(char::is_lowercase);
        if cap && (FIRST.contains(&bare) || LAST.contains(&bare)) && !(i == 0 && ["Will", "May", "Mark", "Grace", "Rose", "Long", "Hill", "Black", "Green", "White", "Bell"].contains(&bare)) {
            return true;
        }
        if w.contains('@') || w.contains("www") || w.contains("http") {
            return true;
        }
        let digits = w.chars().filter(char::is_ascii_digit).count();
        let parts: Vec<&str> = bare.split(['/', '-']).collect();
        let numeric = parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        // "6.14.02" is a date too; "2.5" is a dose.
        let dotted: Vec<&str> = bare.split('.').collect();
        let dotted_date = dotted.len() == 3 && dotted.iter().all(|p| (1..=4).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
        let date_like = dotted_date || numeric && (parts.len() == 3 || parts.len() == 2 && parts[0].len() <= 2 && parts[1].len() <= 2 && parts[0].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m)) && w.contains('/'));
        if date_like || digits >= 7 {
            return true;
        }
        if let Ok(n) = bare.split('-').next().unwrap_or("").parse::<u32>() {
            let next = words.get(i + 1).copied().unwrap_or("");
            if n >= 90 && n < 120 && (w.contains("-year") || next.starts_with("year") || next.starts_with("yo") || next.starts_with("y/o")) {
                return true;
            }
        }
    }
    s.contains("**") || s.contains('[') && s.contains(']')
}

/// Sentences of a text: split after `.`, `?` or `!` followed by whitespace, and at newlines.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cur = String::new();
        let chars: Vec<char> = line.chars().collect();
        for (i, &c) in chars.iter().enumerate() {
            cur.push(c);
            let end = matches!(c, '.' | '?' | '!') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
            if end {
                let s = cur.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                cur.clear();
            }
        }
        let s = cur.trim();
        if !s.is_empty() {
            out.push(s.to_string());
        }
    }
    out
}

impl Sources {
    /// Read the sources of a split from the repository's `data/` folder.
    pub fn load(data: &Path, split: Split) -> Result<Self> {
        let (aci, mts): (&[&str], &[&str]) = match split {
            Split::Train => (&["train.csv", "valid.csv"], &["MTS-Dialog-TrainingSet.csv", "MTS-Dialog-ValidationSet.csv"]),
            Split::Test => (&["clinicalnlp_taskB_test1.csv", "clinicalnlp_taskC_test2.csv"], &["MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv"]),
        };
        let mut by_header: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut add = |header: &str, text: &str| {
            for s in sentences(text) {
                let letters = s.chars().filter(|c| c.is_alphabetic()).count();
                if letters >= 12 && s.chars().count() <= 400 && !may_hold_phi(&s) {
                    by_header.entry(header.to_string()).or_default().push(s);
                }
            }
        };
        for f in mts {
            for (_, row) in csv_rows(&data.join("mts-dialog").join(f), &["section_header", "section_text"])? {
                let header = match row[0].to_ascii_uppercase().as_str() {
                    "GENHX" => "HISTORY OF PRESENT ILLNESS",
                    "CC" => "CHIEF COMPLAINT",
                    "PASTMEDICALHX" => "PAST MEDICAL HISTORY",
                    "FAM/SOCHX" => "SOCIAL HISTORY",
                    "MEDICATIONS" => "MEDICATIONS",
                    "ALLERGY" => "ALLERGIES",
                    "EXAM" => "PHYSICAL EXAMINATION",
                    "ASSESSMENT" | "PLAN" | "DISPOSITION" => "ASSESSMENT AND PLAN",
                    "ROS" => "REVIEW OF SYSTEMS",
                    "LABS" | "IMAGING" | "PROCEDURES" => "RESULTS",
                    _ => "HOSPITAL COURSE",
                };
                add(header, &row[1]);
            }
        }
        for f in aci {
            for (_, row) in csv_rows(&data.join("aci-bench").join(f), &["note"])? {
                add("ASSESSMENT AND PLAN", &row[0]);
            }
        }
        let fillers: Vec<(String, Vec<String>)> = by_header.into_iter().collect();
        if fillers.iter().map(|(_, v)| v.len()).sum::<usize>() < 100 {
            return Err(Error::Input(format!("{}: too few clinical sentences found (expected the ACI-BENCH and MTS-Dialog CSVs)", data.display())));
        }
        // NegEx sentences with markup: the first file for training, the second for testing.
        let negex_file = data.join("negex-testset").join(match split {
            Split::Train => "Annotations-1-120-random.txt",
            Split::Test => "rsAnnotations-1-120-random.txt",
        });
        let mut negex = Vec::new();
        for line in read(&negex_file)?.lines() {
            let s = line.split('\t').nth(2).unwrap_or("").trim().trim_matches('"');
            let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            // A sentence with a dotted date ("6.14.02") outside the markup has unmarked PHI.
            let dotted_date = s.split_whitespace().any(|w| {
                let p: Vec<&str> = w.trim_end_matches(['.', ',', ';', ')']).split('.').collect();
                p.len() == 3 && p.iter().all(|x| (1..=4).contains(&x.len()) && x.chars().all(|c| c.is_ascii_digit()))
            });
            if s.contains("**") && s.chars().count() <= 600 && !dotted_date {
                negex.push(s);
            }
        }
        let presidio_text = read(&data.join("presidio-templates").join("templates.txt"))?;
        // The templates write line breaks as the two characters `\n`.
        let all: Vec<String> = presidio_text.lines().map(str::trim).filter(|l| l.contains("{{")).map(|l| l.replace("\\n", "\n")).collect();
        let presidio = part(&all, split).into_iter().cloned().collect();
        let common: std::collections::HashSet<String> = read(&data.join("deid-dict").join("common-words.txt"))?.lines().map(str::to_string).collect();
        let census = |file: &str, take: usize| -> Result<Vec<String>> {
            Ok(read(&data.join("deid-dict").join(file))?
                .lines()
                .take(take)
                .filter(|n| !n.is_empty() && !common.contains(&n.to_lowercase()))
                .filter(|n| (crate::corpus::hash(n, 0x4E41_4D45) % 5 == 4) == (split == Split::Test))
                .map(str::to_string)
                .collect())
        };
        Ok(Sources { fillers, negex, presidio, census_first: census("first-names.txt", usize::MAX)?, census_last: census("surnames.txt", 20_000)? })
    }
}

/// Builds a note's text and spans together, so that the offsets are right by construction.
struct Builder {
    text: String,
    chars: usize,
    spans: Vec<PhiSpan>,
}

impl Builder {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.chars += s.chars().count();
    }
    fn phi(&mut self, s: &str, label: &str) {
        let start = self.chars;
        self.push(s);
        if !s.is_empty() {
            self.spans.push(PhiSpan { start, end: self.chars, label: label.to_string() });
        }
    }
}

/// A value with its category, or text around it: what a slot expands to.
enum Piece {
    Text(String),
    Phi(String, &'static str),
}

/// One item of a list, uniformly (`below` of the generator).
fn pick_in<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[(rng.next_u64() % xs.len().max(1) as u64) as usize]
}

/// The generator: seeded, so the same seed and split give the same notes.
pub struct Generator<'a> {
    rng: Rng,
    src: &'a Sources,
    first: Vec<&'static &'static str>,
    last: Vec<&'static &'static str>,
    cities: Vec<&'static (&'static str, &'static str, &'static str)>,
    streets: Vec<&'static &'static str>,
    intl: Vec<&'static (&'static str, &'static str)>,
}

impl<'a> Generator<'a> {
    pub fn new(src: &'a Sources, split: Split, seed: u64) -> Self {
        Generator {
            rng: Rng::new(seed ^ 0x5EED_D1D),
            src,
            first: part_names(FIRST, split),
            last: part_names(LAST, split),
            cities: part(CITIES, split),
            streets: part(STREETS, split),
            intl: part(INTL_CITIES, split),
        }
    }

    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.rng.uniform() < p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        pick_in(&mut self.rng, xs)
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
    fn letter(&mut self) -> char {
        char::from(b'A' + self.below(26) as u8)
    }

    fn first_name(&mut self) -> String {
        if self.chance(0.5) && !self.src.census_first.is_empty() {
            let i = self.below(self.src.census_first.len());
            return self.src.census_first[i].clone();
        }
        pick_in(&mut self.rng, &self.first).to_string()
    }
    fn last_name(&mut self) -> String {
        let l = if self.chance(0.5) && !self.src.census_last.is_empty() {
            let i = self.below(self.src.census_last.len());
            self.src.census_last[i].clone()
        } else {
            pick_in(&mut self.rng, &self.last).to_string()
        };
        if self.chance(0.05) {
            let m = pick_in(&mut self.rng, &self.last);
            format!("{l}-{m}")
        } else {
            l
        }
    }

    /// A person's name in one of many layouts.
    pub fn name(&mut self) -> String {
        let (f, l) = (self.first_name(), self.last_name());
        let mi = self.letter();
        let s = match self.below(10) {
            0 | 1 | 2 => format!("{f} {l}"),
            3 => format!("{f} {mi}. {l}"),
            4 => format!("{l}, {f}"),
            5 => format!("{}. {l}", f.chars().next().unwrap_or('J')),
            6 => format!("{l}, {f} {mi}"),
            7 => format!("{f} {mi} {l}"),
            8 => l,
            _ => f,
        };
        // Names are written in capitals in headers and in lower case in hurried messages.
        let r = self.rng.uniform();
        if r < 0.13 {
            s.to_uppercase()
        } else if r < 0.18 {
            s.to_lowercase()
        } else {
            s
        }
    }

    /// A date in one of many formats (never a lone year, which is not PHI).
    pub fn date(&mut self) -> String {
        let (y, m, d) = (1935 + self.below(95), 1 + self.below(12), 1 + self.below(28));
        let month = MONTHS[m - 1];
        let short = &month[..3];
        let ord = match d {
            1 | 21 => "st",
            2 | 22 => "nd",
            3 | 23 => "rd",
            _ => "th",
        };
        match self.below(16) {
            0 | 1 => format!("{m:02}/{d:02}/{y}"),
            2 => format!("{m}/{d}/{y}"),
            3 => format!("{m}/{d}/{:02}", y % 100),
            4 => format!("{y}-{m:02}-{d:02}"),
            5 => format!("{month} {d}, {y}"),
            6 => format!("{d} {short} {y}"),
            7 => format!("{short} {d}, {y}"),
            8 => format!("{m:02}-{d:02}-{y}"),
            9 => format!("{d}.{m}.{y}"),
            10 => format!("{month} {y}"),
            11 => format!("{m}/{d}"),
            12 => format!("{month} {d}{ord}"),
            13 => format!("{short}. {d}"),
            14 => format!("{d}-{}-{y}", short.to_uppercase()),
            _ => format!("{y}{m:02}{d:02}"),
        }
    }

    fn age_over_89(&mut self) -> String {
        (90 + self.below(16)).to_string()
    }

    fn street(&mut self) -> String {
        let name = pick_in(&mut self.rng, &self.streets);
        let kind = self.pick(STREET_KINDS);
        let number = 1 + self.below(9899);
        match self.below(6) {
            0 => format!("{number} {} {name} {kind}", self.pick(&["N.", "S.", "E.", "W.", "North", "South"])),
            1 => format!("{number} {name} {kind}, Apt {}{}", 1 + self.below(40), self.letter()),
            2 => format!("{number} {name} {kind} #{}", 1 + self.below(400)),
            _ => format!("{number} {name} {kind}"),
        }
    }
    fn city(&mut self) -> (&'static str, &'static str, &'static str) {
        *pick_in(&mut self.rng, &self.cities)
    }
    fn zip(&mut self) -> String {
        if self.chance(0.2) {
            format!("{}-{}", self.digits(5), self.digits(4))
        } else {
            self.digits(5)
        }
    }
    fn hospital(&mut self) -> String {
        let kind = self.pick(HOSPITAL_KINDS);
        match self.below(12) {
            0 => format!("St. {}'s {kind}", self.first_name()),
            1 => format!("{} {kind}", self.last_name()),
            2 => format!("University of {} {kind}", self.city().1),
            3 => format!("{} {} {kind}", self.pick(&["Mount", "Mt.", "Mt"]), self.pick(&["Sinai", "Carmel", "Auburn", "Hope", "Olive", "Zion", "Vernon", "Pleasant"])),
            4 => format!("{} {}{}", self.pick(&["Saint", "St", "St.", "Ste."]), self.first_name(), self.pick(&["'s", "", "'s Hospital", " Medical Center", " Health"])),
            5 => format!("Our Lady of {} {kind}", self.pick(&["Lourdes", "Mercy", "the Lake", "Peace", "Fatima"])),
            6 => {
                // An institution's acronym, alone or with its kind: "RVMC", "SJH Cardiology".
                let n = 3 + self.below(3);
                let acronym: String = (0..n).map(|_| self.letter()).collect();
                match self.below(3) {
                    0 => acronym,
                    1 => format!("{acronym} {}", self.pick(&["Cardiology", "Oncology", "Hospital", "ED", "Clinic"])),
                    _ => format!("{acronym} {kind}"),
                }
            }
            7 => format!("{} {}", self.last_name(), self.pick(&["Health", "Healthcare", "Health System", "Medical Group", "Physicians", "Family Medicine"])),
            8 => format!("{} Valley {kind}", self.pick(&["Green", "Cedar", "Willow", "Silver", "Pine"])),
            _ => format!("{} {kind}", self.city().0),
        }
    }
    /// An address abroad, in the country's own layout.
    fn intl_address(&mut self) -> String {
        let (city, country) = *pick_in(&mut self.rng, &self.intl);
        let (n, street) = (1 + self.below(180), pick_in(&mut self.rng, &self.streets).to_string());
        let up = |s: &str| s.to_uppercase();
        match country {
            "France" => format!("{n} rue {} {street}, {}{} {city}, France", self.pick(&["de la", "du", "des"]), self.pick(&["69", "75", "13"]), self.digits(3)),
            "Germany" | "Switzerland" => format!("{street}straße {n}, {} {city}", self.digits(if country == "Germany" { 5 } else { 4 })),
            "United Kingdom" | "Scotland" => {
                let pc = format!("{}{}{} {}{}{}", up(&self.letter().to_string()), self.letter(), 1 + self.below(9), self.below(10), self.letter(), self.letter());
                format!("Flat {}, {n} {street} Road, {city} {pc}", 1 + self.below(20))
            }
            "Canada" => format!("{n} {street} Street, {city}, {} {}{}{} {}{}{}", self.pick(&["ON", "QC", "NS"]), self.letter(), self.below(10), self.letter(), self.below(10), self.letter(), self.below(10)),
            "Poland" => format!("ul. {street} {n}/{}, {}-{} {city}", 1 + self.below(40), self.digits(2), self.digits(3)),
            "Brazil" | "Portugal" => format!("Rua {street}, {n}, {city}, {}-{}", self.digits(5), self.digits(3)),
            _ => format!("{n} {street} Road, {city}, {country}"),
        }
    }
    fn organisation(&mut self) -> String {
        let kind = self.pick(ORG_KINDS);
        match self.below(3) {
            0 => format!("{} & {} {kind}", self.last_name(), self.last_name()),
            1 => format!("{} {kind}", self.city().0),
            _ => format!("{} {kind}", self.last_name()),
        }
    }
    pub fn phone(&mut self) -> String {
        let (a, b, c) = (format!("{}{}", 2 + self.below(8), self.digits(2)), format!("{}{}", 2 + self.below(8), self.digits(2)), self.digits(4));
        match self.below(8) {
            0 | 1 => format!("({a}) {b}-{c}"),
            2 | 3 => format!("{a}-{b}-{c}"),
            4 => format!("{a}.{b}.{c}"),
            5 => format!("+1 {a} {b} {c}"),
            6 => format!("{a}{b}{c}"),
            _ => format!("{a}-{b}-{c} ext. {}", 10 + self.below(990)),
        }
    }
    fn email(&mut self) -> String {
        let (f, l) = (self.first_name().to_lowercase(), self.last_name().to_lowercase().replace('\'', ""));
        let d = self.pick(DOMAINS);
        match self.below(4) {
            0 => format!("{f}.{l}@{d}"),
            1 => format!("{}{l}{}@{d}", &f[..1], self.below(100)),
            2 => format!("{l}_{f}@{d}"),
            _ => format!("{f}{}@{d}", 1950 + self.below(60)),
        }
    }
    fn url(&mut self) -> String {
        let l = self.last_name().to_lowercase().replace(['\'', '-'], "");
        match self.below(3) {
            0 => format!("www.{l}familyclinic.org"),
            1 => format!("https://portal.{}health.org/patient/{}", self.city().0.to_lowercase().replace(' ', ""), self.digits(6)),
            _ => format!("http://www.{l}-{}.com", self.pick(&["law", "realty", "farms", "design"])),
        }
    }
    fn ip(&mut self) -> String {
        format!("{}.{}.{}.{}", 10 + self.below(200), self.below(256), self.below(256), 1 + self.below(254))
    }
    fn mrn(&mut self) -> String {
        match self.below(8) {
            0 => self.digits(7),
            1 => self.digits(8),
            2 => format!("{}{}", self.letter(), self.digits(7)),
            3 => format!("{}-{}-{}", self.digits(3), self.digits(2), self.digits(3)),
            4 => format!("00{}", self.digits(6)),
            5 => format!("{}-{}", self.pick(&["MRN", "E", "CH", "HN"]), self.digits(8)),
            6 => format!("{}{}-{}", self.letter(), self.digits(2), self.digits(6)),
            _ => format!("{} {}", self.digits(4), self.digits(4)),
        }
    }
    fn ssn(&mut self) -> String {
        let (a, b, c) = (format!("{}{}", 1 + self.below(8), self.digits(2)), self.digits(2), self.digits(4));
        match self.below(3) {
            0 => format!("{a}-{b}-{c}"),
            1 => format!("{a} {b} {c}"),
            _ => format!("{a}{b}{c}"),
        }
    }
    /// An identifier of another kind, with the words that introduce it.
    fn other_id(&mut self) -> (String, String) {
        let l = self.letter();
        match self.below(14) {
            0 => ("account number".into(), format!("{}{}", self.pick(&["ACC-", "AC", ""]), self.digits(8))),
            1 => ("health plan member ID".into(), format!("{}{}{}", l, self.letter(), self.digits(9))),
            2 => ("driver's license".into(), format!("{l}{}-{}-{}", self.digits(3), self.digits(4), self.digits(4))),
            3 => ("pacemaker serial number".into(), format!("{}{}-{}", self.digits(2), self.letter(), self.digits(6))),
            4 => ("license plate".into(), format!("{}{}{}{}", self.digits(1), l, self.letter(), self.digits(3))),
            5 => ("VIN".into(), (0..17).map(|_| if self.chance(0.5) { self.letter() } else { char::from(b'0' + self.below(10) as u8) }).collect()),
            6 => ("accession number".into(), format!("S{}-{}", self.digits(2), self.digits(5))),
            7 => ("health plan ID".into(), format!("{}-{}-{}", self.pick(&["HP", "BCBS", "UHC", "AET"]), 2000 + self.below(26), self.digits(6))),
            8 => ("member number".into(), format!("MBR {}-{}-{}", self.digits(4), self.digits(4), self.digits(2))),
            9 => ("case".into(), format!("#{}{}{}-{}", self.letter(), self.letter(), self.digits(4), self.digits(2))),
            10 => ("claim".into(), format!("CLM-{}", self.digits(8))),
            11 => ("nursing licence".into(), format!("RN-{}", self.digits(6))),
            12 => ("NPI".into(), self.digits(10)),
            _ => ("insurance policy number".into(), format!("{} {} {}", self.digits(3), self.digits(3), self.digits(3))),
        }
    }

    fn filler(&mut self, header: &str) -> String {
        let src = self.src;
        let pool = src.fillers.iter().find(|(h, _)| h == header).map(|(_, v)| v).filter(|v| !v.is_empty());
        let pool = match pool {
            Some(p) => p,
            None => &src.fillers[self.below(src.fillers.len())].1,
        };
        pool[self.below(pool.len())].clone()
    }

    /// One of the project's PHI sentence templates, expanded.
    fn phi_sentence(&mut self) -> Vec<Piece> {
        use Piece::{Phi, Text};
        let t = |s: &str| Text(s.to_string());
        let he = self.pick(&["He", "She"]);
        match self.below(34) {
            28 => vec![t(&format!("{he} lives at ")), Phi(self.intl_address(), "LOCATION"), t(".")],
            29 => {
                let (c, country) = *pick_in(&mut self.rng, &self.intl);
                vec![t(&format!("{he} was visiting family in ")), Phi(c.into(), "LOCATION"), t(", "), Phi(country.into(), "LOCATION"), t(" when symptoms began.")]
            }
            // Sentences that look like PHI to a careless detector and hold none.
            30 => vec![t(&format!(
                "BP {}/{}, heart rate {}, RR {}, SpO2 {}% on room air, temp {}.{}.",
                100 + self.below(80),
                55 + self.below(40),
                50 + self.below(70),
                12 + self.below(14),
                88 + self.below(12),
                36 + self.below(3),
                self.below(10)
            ))],
            31 => vec![t(self.pick(NEGATIVE_SENTENCES))],
            32 => vec![t("pt "), Phi(self.name().to_lowercase(), "NAME"), t(" called re: refill, cb "), Phi(self.phone(), "CONTACT")],
            33 => vec![t("Prior records from "), Phi(self.hospital(), "LOCATION"), t(" and "), Phi(self.hospital(), "LOCATION"), t(" reviewed.")],
            0 => vec![Phi(self.name(), "NAME"), t(if he == "He" { " is a " } else { " is a " }), Phi(self.age_over_89(), "AGE"), t(&format!("-year-old {} who presents for follow-up.", if he == "He" { "man" } else { "woman" }))],
            1 => vec![t("The patient was seen at "), Phi(self.hospital(), "LOCATION"), t(" on "), Phi(self.date(), "DATE"), t(".")],
            2 => {
                let (c, _, st) = self.city();
                vec![t(&format!("{he} was transferred from ")), Phi(self.hospital(), "LOCATION"), t(" in "), Phi(c.into(), "LOCATION"), t(", "), Phi(st.into(), "LOCATION"), t(".")]
            }
            3 => vec![t(&format!("{he} works as a ")), Phi(self.pick(PROFESSIONS).into(), "PROFESSION"), t(" at "), Phi(self.organisation(), "OTHER"), t(".")],
            4 => vec![t(&format!("{he} is a retired ")), Phi(self.pick(PROFESSIONS).into(), "PROFESSION"), t(".")],
            5 => vec![t(&format!("{} {}, ", if he == "He" { "His" } else { "Her" }, self.pick(&["daughter", "son", "wife", "husband", "sister", "brother", "niece", "neighbor"]))), Phi(self.name(), "NAME"), t(", can be reached at "), Phi(self.phone(), "CONTACT"), t(".")],
            6 => vec![t("Follow up with Dr. "), Phi(self.last_name(), "NAME"), t(&format!(" in {} weeks.", 1 + self.below(8)))],
            7 => vec![t("Results were faxed to "), Phi(self.phone(), "CONTACT"), t(".")],
            8 => vec![t("Discussed with "), Phi(self.name(), "NAME"), t(", RN, who agrees with the plan.")],
            9 => vec![t(&format!("{he} lives alone at ")), Phi(self.street(), "LOCATION"), t(" in "), Phi(self.city().0.into(), "LOCATION"), t(".")],
            10 => vec![t("Last colonoscopy on "), Phi(self.date(), "DATE"), t(" at "), Phi(self.hospital(), "LOCATION"), t(" was unremarkable.")],
            11 => vec![t(&format!("{he} is ")), Phi(self.age_over_89(), "AGE"), t(" years old and lives in an assisted living facility.")],
            12 => {
                let (what, id) = self.other_id();
                vec![t(&format!("The {what} is ")), Phi(id, "ID"), t(".")]
            }
            13 => vec![t("Patient portal messages can be sent through "), Phi(self.url(), "CONTACT"), t(".")],
            14 => vec![t(&format!("{he} emailed the clinic from ")), Phi(self.email(), "CONTACT"), t(" to ask about the results.")],
            15 => vec![t("Seen in room "), Phi(format!("{}{}", 1 + self.below(9), self.digits(2)), "LOCATION"), t(" of the emergency department.")],
            16 => vec![t(&format!("{he} was born in ")), Phi(self.pick(COUNTRIES).into(), "LOCATION"), t(&format!(" and moved to the US in {}.", 1950 + self.below(70)))],
            17 => vec![t("Surgery is scheduled for "), Phi(self.date(), "DATE"), t(" with Dr. "), Phi(self.name(), "NAME"), t(".")],
            18 => vec![t("MRN "), Phi(self.mrn(), "ID"), t(&format!(", admitted on ")), Phi(self.date(), "DATE"), t(".")],
            19 => vec![t("Social security number on file: "), Phi(self.ssn(), "ID"), t(".")],
            20 => vec![t("Remote access from IP address "), Phi(self.ip(), "CONTACT"), t(" was logged.")],
            21 => vec![t("Aged "), Phi(self.age_over_89(), "AGE"), t(&format!(", {} has a history of atrial fibrillation.", he.to_lowercase()))],
            22 => vec![t("Labs drawn on "), Phi(self.date(), "DATE"), t(" showed a creatinine of "), t(&format!("{}.{}", 1 + self.below(3), self.below(10))), t(".")],
            23 => vec![t("Call "), Phi(self.name(), "NAME"), t(" at "), Phi(self.phone(), "CONTACT"), t(" with any questions.")],
            24 => vec![t("Referred by "), Phi(self.name(), "NAME"), t(", MD, of "), Phi(self.hospital(), "LOCATION"), t(".")],
            25 => vec![t(&format!("{he} previously worked as a ")), Phi(self.pick(PROFESSIONS).into(), "PROFESSION"), t(" for "), Phi(self.organisation(), "OTHER"), t(&format!(" for {} years.", 2 + self.below(30)))],
            26 => vec![t("Date of death: "), Phi(self.date(), "DATE"), t(".")],
            _ => vec![t(&format!("{} ", self.pick(&["Mr.", "Mrs.", "Ms."]))), Phi(self.last_name(), "NAME"), t(&format!(" returns on {} for a recheck.", self.pick(&["Monday", "Tuesday", "Friday"])))],
        }
    }

    /// A value for a Presidio slot: Some((value, category)), or plain text for slots that are
    /// not PHI (nationality, a lone year, a day of the week, titles).
    fn presidio_slot(&mut self, slot: &str) -> Piece {
        use Piece::{Phi, Text};
        match slot {
            "person" | "name" | "name_female" | "name_male" => Phi(self.name(), "NAME"),
            "first_name" | "first_name_male" | "first_name_female" | "first_name_nonbinary" => Phi(self.first_name(), "NAME"),
            "last_name" | "last_name_male" | "last_name_female" => Phi(self.last_name(), "NAME"),
            "city" => Phi(self.city().0.into(), "LOCATION"),
            "address" => {
                let (c, _, st) = self.city();
                let (s, z) = (self.street(), self.zip());
                Phi(format!("{s}, {c}, {st} {z}"), "LOCATION")
            }
            "street_name" => {
                let (n, k) = (pick_in(&mut self.rng, &self.streets), self.pick(STREET_KINDS));
                Phi(format!("{n} {k}"), "LOCATION")
            }
            "building_number" => Phi((1 + self.below(9899)).to_string(), "LOCATION"),
            "secondary_address" => Phi(format!("Apt. {}", 1 + self.below(900)), "LOCATION"),
            "country" => Phi(self.pick(COUNTRIES).into(), "LOCATION"),
            "postcode" | "zipcode" => Phi(self.zip(), "LOCATION"),
            "state_abbr" => Phi(self.city().2.into(), "LOCATION"),
            "phone_number" => Phi(self.phone(), "CONTACT"),
            "email" => Phi(self.email(), "CONTACT"),
            "url" => Phi(self.url(), "CONTACT"),
            "ip_address" => Phi(self.ip(), "CONTACT"),
            "credit_card_number" => Phi(format!("{} {} {} {}", self.digits(4), self.digits(4), self.digits(4), self.digits(4)), "ID"),
            "iban" => Phi(format!("GB{}{}{}", self.digits(2), "NWBK", self.digits(14)), "ID"),
            "ssn" => Phi(self.ssn(), "ID"),
            "us_driver_license" => Phi(format!("{}{}", self.letter(), self.digits(7)), "ID"),
            "date_time" | "date_of_birth" => Phi(self.date(), "DATE"),
            "age" => {
                if self.chance(0.5) {
                    Phi(self.age_over_89(), "AGE")
                } else {
                    Text((18 + self.below(70)).to_string())
                }
            }
            "job" => Phi(self.pick(PROFESSIONS).into(), "PROFESSION"),
            "organization" => Phi(self.organisation(), "OTHER"),
            "year" => Text((1950 + self.below(75)).to_string()),
            "day_of_week" => Text(self.pick(&["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]).into()),
            "prefix" | "prefix_male" | "prefix_female" => Text(self.pick(&["Mr.", "Mrs.", "Ms.", "Dr."]).into()),
            "nationality" | "nation_woman" | "nation_plural" => Text(self.pick(&["Canadian", "Mexican", "Irish", "Nigerian", "Vietnamese"]).into()),
            _ => Text(self.pick(&["the clinic", "this account", "it"]).into()),
        }
    }

    fn presidio_sentence(&mut self) -> Vec<Piece> {
        let src = self.src;
        let t = &src.presidio[self.below(src.presidio.len())];
        let mut pieces = Vec::new();
        let mut rest = t.as_str();
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open..].find("}}").map(|c| c + open) else { break };
            pieces.push(Piece::Text(rest[..open].to_string()));
            pieces.push(self.presidio_slot(rest[open + 2..close].trim()));
            rest = &rest[close + 2..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        pieces
    }

    /// A NegEx sentence with its markup replaced by generated values.
    fn negex_sentence(&mut self) -> Vec<Piece> {
        let src = self.src;
        let s = &src.negex[self.below(src.negex.len())];
        let mut pieces = Vec::new();
        let mut rest = s.as_str();
        while let Some(at) = rest.find("**") {
            pieces.push(Piece::Text(rest[..at].to_string()));
            let after = &rest[at + 2..];
            let kind_len = after.find(|c: char| !(c.is_ascii_uppercase() || c == '-')).unwrap_or(after.len());
            let kind = &after[..kind_len];
            let mut tail = &after[kind_len..];
            let mut inside = "";
            if tail.starts_with('[') {
                if let Some(close) = tail.find(']') {
                    inside = &tail[1..close];
                    tail = &tail[close + 1..];
                }
            }
            let piece = match kind {
                "NAME" => Piece::Phi(self.name(), "NAME"),
                "INITIALS" => Piece::Phi(format!("{}{}{}", self.letter(), self.letter(), self.letter()), "NAME"),
                "DATE" => Piece::Phi(self.date(), "DATE"),
                "AGE" => {
                    let decade: u32 = inside.chars().filter(char::is_ascii_digit).collect::<String>().parse().unwrap_or(60);
                    let age = decade.min(110) + self.below(10) as u32;
                    if age >= 90 { Piece::Phi(age.to_string(), "AGE") } else { Piece::Text(age.to_string()) }
                }
                "INSTITUTION" => Piece::Phi(self.hospital(), "LOCATION"),
                "PLACE" => Piece::Phi(self.city().0.into(), "LOCATION"),
                "ROOM" => Piece::Phi(format!("{}{}", 1 + self.below(9), self.digits(2)), "LOCATION"),
                "ID-NUM" => Piece::Phi(self.mrn(), "ID"),
                _ => Piece::Text(String::new()),
            };
            pieces.push(piece);
            rest = tail;
        }
        pieces.push(Piece::Text(rest.to_string()));
        pieces
    }

    fn emit(b: &mut Builder, pieces: Vec<Piece>) {
        for p in pieces {
            match p {
                Piece::Text(s) => b.push(&s),
                Piece::Phi(s, label) => b.phi(&s, label),
            }
        }
    }

    /// The header block: a varying subset of fields in varying layouts.
    fn header(&mut self, b: &mut Builder) {
        let upper = self.chance(0.4);
        let field = |s: &str| if upper { s.to_uppercase() } else { s.to_string() };
        let sep = self.pick(&[": ", ":  ", " - ", ":\t"]);
        let one_line = self.chance(0.3);
        let end = if one_line { "    " } else { "\n" };
        let mut fields: Vec<Vec<Piece>> = Vec::new();
        use Piece::{Phi, Text};
        fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["Patient", "Patient Name", "Name", "Pt"])))), Phi(self.name(), "NAME")]);
        fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["MRN", "Medical Record #", "Med Rec No", "Unit No", "Record Number"])))), Phi(self.mrn(), "ID")]);
        if self.chance(0.7) {
            fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["DOB", "Date of Birth", "Birth Date"])))), Phi(self.date(), "DATE")]);
        }
        if self.chance(0.6) {
            let d = self.pick(&["Admission Date", "Date of Service", "Visit Date", "Date of Admission", "Encounter Date"]);
            fields.push(vec![Text(format!("{}{sep}", field(d))), Phi(self.date(), "DATE")]);
        }
        if self.chance(0.4) {
            fields.push(vec![Text(format!("{}{sep}", field("Discharge Date"))), Phi(self.date(), "DATE")]);
        }
        if self.chance(0.2) {
            fields.push(vec![Text(format!("{}{sep}", field("Age"))), Phi(self.age_over_89(), "AGE")]);
        }
        if self.chance(0.5) {
            let t = self.pick(&["Attending", "Attending Physician", "PCP", "Provider", "Referring Physician"]);
            let dr = self.pick(&["Dr. ", "", ""]);
            let md = self.pick(&[", MD", ", M.D.", "", ", DO", ", NP"]);
            fields.push(vec![Text(format!("{}{sep}{dr}", field(t))), Phi(self.name(), "NAME"), Text(md.to_string())]);
        }
        if self.chance(0.5) {
            fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["Facility", "Location", "Hospital", "Clinic"])))), Phi(self.hospital(), "LOCATION")]);
        }
        if self.chance(0.4) {
            let (c, state, st) = self.city();
            let s = if self.chance(0.3) { state } else { st };
            let (street, zip) = (self.street(), self.zip());
            fields.push(vec![Text(format!("{}{sep}", field("Address"))), Phi(street, "LOCATION"), Text(", ".into()), Phi(c.into(), "LOCATION"), Text(", ".into()), Phi(s.into(), "LOCATION"), Text(" ".into()), Phi(zip, "LOCATION")]);
        }
        if self.chance(0.4) {
            fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["Phone", "Tel", "Home Phone", "Cell"])))), Phi(self.phone(), "CONTACT")]);
        }
        if self.chance(0.2) {
            fields.push(vec![Text(format!("{}{sep}", field("Fax"))), Phi(self.phone(), "CONTACT")]);
        }
        if self.chance(0.15) {
            fields.push(vec![Text(format!("{}{sep}", field("Email"))), Phi(self.email(), "CONTACT")]);
        }
        if self.chance(0.15) {
            fields.push(vec![Text(format!("{}{sep}", field(self.pick(&["SSN", "Social Security No."])))), Phi(self.ssn(), "ID")]);
        }
        if self.chance(0.2) {
            let (what, id) = self.other_id();
            fields.push(vec![Text(format!("{}{sep}", field(&what))), Phi(id, "ID")]);
        }
        // Shuffle all but the first field.
        for i in (2..fields.len()).rev() {
            let j = 1 + self.below(i);
            fields.swap(i, j);
        }
        for f in fields {
            Self::emit(b, f);
            b.push(end);
        }
        if one_line {
            b.push("\n");
        }
        b.push("\n");
    }

    fn signature(&mut self, b: &mut Builder) {
        use Piece::{Phi, Text};
        let pieces = match self.below(4) {
            0 => vec![Text("Electronically signed by ".into()), Phi(self.name(), "NAME"), Text(format!(", MD on ")), Phi(self.date(), "DATE"), Text(format!(" at {}:{:02}.", self.below(24), self.below(60)))],
            1 => vec![Text("Dictated by: ".into()), Phi(self.name(), "NAME"), Text("\nTranscribed: ".into()), Phi(self.date(), "DATE")],
            2 => vec![Text("cc: Dr. ".into()), Phi(self.name(), "NAME"), Text(", ".into()), Phi(self.hospital(), "LOCATION"), Text(", fax ".into()), Phi(self.phone(), "CONTACT")],
            _ => vec![Text(format!("{} ", self.pick(&["Signed:", "Attending:", "Resident:"]))), Phi(self.name(), "NAME"), Text(format!(", {}", self.pick(&["MD", "PA-C", "NP", "RN"])))],
        };
        Self::emit(b, pieces);
        b.push("\n");
    }

    /// One note: an optional header, two to four sections, an optional signature.
    pub fn note(&mut self) -> Note {
        if self.chance(0.3) {
            return self.short_note();
        }
        let mut b = Builder { text: String::new(), chars: 0, spans: Vec::new() };
        if self.chance(0.3) {
            b.push(&format!("{}\n", self.pick(HEADINGS)));
        }
        if self.chance(0.9) {
            self.header(&mut b);
        }
        let sections = 2 + self.below(3);
        for k in 0..sections {
            let header = self.pick(SECTIONS);
            b.push(&format!("{}{}", header, self.pick(&[":\n", ":\n", ": ", "\n"])));
            let n = 2 + self.below(4);
            for i in 0..n {
                let r = self.rng.uniform();
                let pieces = if r < 0.45 {
                    vec![Piece::Text(self.filler(header))]
                } else if r < 0.75 {
                    self.phi_sentence()
                } else if r < 0.87 && !self.src.negex.is_empty() {
                    self.negex_sentence()
                } else if !self.src.presidio.is_empty() {
                    self.presidio_sentence()
                } else {
                    self.phi_sentence()
                };
                Self::emit(&mut b, pieces);
                b.push(if i + 1 < n { " " } else { "\n" });
            }
            if k + 1 < sections {
                b.push("\n");
            }
        }
        if self.chance(0.8) {
            b.push("\n");
            self.signature(&mut b);
        }
        Note { text: b.text, spans: b.spans }
    }
}

impl Generator<'_> {
    /// A short text: a clinician's query, a patient's portal message or a referral letter.
    fn short_note(&mut self) -> Note {
        use Piece::{Phi, Text};
        let t = |s: &str| Text(s.to_string());
        let mut b = Builder { text: String::new(), chars: 0, spans: Vec::new() };
        let filler = |g: &mut Self| {
            let h = g.pick(SECTIONS);
            g.filler(h)
        };
        let pieces = match self.below(3) {
            0 => {
                let age = if self.chance(0.4) { Phi(self.age_over_89(), "AGE") } else { Text((20 + self.below(69)).to_string()) };
                vec![
                    t(self.pick(&["Quick question: ", "Q: ", "Hi team - ", "", "Curbside: "])),
                    t(self.pick(&["pt ", "patient ", "Pt. ", ""])),
                    Phi(self.name(), "NAME"),
                    t(" ("),
                    age,
                    t(self.pick(&["F", "M", "yo F", "yo M", " y/o"])),
                    t(") at "),
                    Phi(self.hospital(), "LOCATION"),
                    t(", MRN "),
                    Phi(self.mrn(), "ID"),
                    t(" - "),
                    t(self.pick(&["ok to restart apixaban after the fall on ", "can we get a repeat echo before ", "needs a renal consult, creatinine up since ", "family asking about hospice, admitted "])),
                    Phi(self.date(), "DATE"),
                    t("? "),
                    t(self.pick(&["Thanks, ", "Page me, ", "-", "Call back "])),
                    Phi(self.first_name(), "NAME"),
                    t(" "),
                    Phi(self.phone(), "CONTACT"),
                ]
            }
            1 => {
                let mut v = vec![
                    t(self.pick(&["Hi Dr. ", "Hello Dr ", "Dear Dr. ", "dr "])),
                    Phi(self.last_name(), "NAME"),
                    t(", this is "),
                    Phi(self.name(), "NAME"),
                    t(self.pick(&[" (DOB ", ", born ", " dob "])),
                    Phi(self.date(), "DATE"),
                    t(self.pick(&["). ", ". "])),
                ];
                v.push(Text(filler(self)));
                v.extend([t(" My daughter "), Phi(self.first_name(), "NAME"), t(" can drive me from "), Phi(self.city().0.into(), "LOCATION"), t(". Call me at "), Phi(self.phone(), "CONTACT")]);
                v.extend([t(" or email "), Phi(self.email(), "CONTACT"), t(". Thanks, "), Phi(self.first_name(), "NAME")]);
                v
            }
            _ => {
                let (c, _, st) = self.city();
                let mut v = vec![
                    Phi(self.hospital(), "LOCATION"),
                    t("\n"),
                    Phi(self.street(), "LOCATION"),
                    t(", "),
                    Phi(c.into(), "LOCATION"),
                    t(", "),
                    Phi(st.into(), "LOCATION"),
                    t(" "),
                    Phi(self.zip(), "LOCATION"),
                    t("\n\n"),
                    Phi(self.date(), "DATE"),
                    t("\n\nDear Dr. "),
                    Phi(self.last_name(), "NAME"),
                    t(",\n\nRe: "),
                    Phi(self.name(), "NAME"),
                    t(", DOB "),
                    Phi(self.date(), "DATE"),
                    t(", MRN "),
                    Phi(self.mrn(), "ID"),
                    t("\n\nThank you for seeing this patient. "),
                ];
                v.push(Text(filler(self)));
                v.push(t(" "));
                v.push(Text(filler(self)));
                v.extend([t("\n\nSincerely,\n\n"), Phi(self.name(), "NAME"), t(", MD\n"), Phi(self.hospital(), "LOCATION"), t("\nTel "), Phi(self.phone(), "CONTACT"), t(" | Fax "), Phi(self.phone(), "CONTACT")]);
                v
            }
        };
        Self::emit(&mut b, pieces);
        b.push("\n");
        Note { text: b.text, spans: b.spans }
    }
}

/// `n` notes of a split, as JSONL lines `{"text", "spans": [{"start", "end", "label"}]}`.
pub fn generate(data: &Path, split: Split, n: usize, seed: u64) -> Result<Vec<Note>> {
    let src = Sources::load(data, split)?;
    let mut g = Generator::new(&src, split, seed);
    Ok((0..n).map(|_| g.note()).collect())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_with_unmarked_phi_are_recognised() {
        for s in [
            "Mr. Brennan returns today.",
            "Seen with her son Michael yesterday.",
            "She was admitted on 3/14/2019 with sepsis.",
            "Call 5551234567 with results.",
            "He is a 94-year-old man with dementia.",
            "Contact jdoe@example.com for records.",
            "Patient **NAME[AAA] seen.",
            "Chest film 6.14.02 unchanged.",
        ] {
            assert!(may_hold_phi(s), "{s}");
        }
        for s in ["The patient is a 76-year-old white female with hypertension.", "No chest pain or shortness of breath.", "Blood pressure 128/74, heart rate 72.", "Will follow up in 2 weeks."] {
            assert!(!may_hold_phi(s), "{s}");
        }
    }

    #[test]
    fn sentences_split_after_terminal_punctuation_only() {
        assert_eq!(sentences("BP 120/80. Dr. note? Yes!\nNext line"), vec!["BP 120/80.", "Dr.", "note?", "Yes!", "Next line"]);
        assert_eq!(sentences("Dose 2.5 mg daily."), vec!["Dose 2.5 mg daily."]);
    }
}
