//! The deterministic randomness behind generated records.
//!
//! Every record draws from its own stream keyed by (seed, stream tag, index), so any record
//! can be produced on its own, in any order, and always comes out the same.

/// SplitMix64: tiny, fast, and good enough for plausible-looking test data.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, tag: u64, index: u64) -> Rng {
        let mut rng = Rng(seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mixed = rng.next_u64() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Rng(mixed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `1..=n` (0 when `n` is 0): a 1-based record index.
    pub(crate) fn index_in(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.below(n) + 1 }
    }

    /// True with the given percentage.
    pub(crate) fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let at = usize::try_from(self.below(len)).unwrap_or(0);
        items[at]
    }
}

/// A one-shot hash of a few numbers, for values that need no stream.
pub(crate) fn mix(seed: u64, tag: u64, index: u64) -> u64 {
    Rng::new(seed, tag, index).next_u64()
}

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Ava",
    "Elijah",
    "Sophia",
    "James",
    "Isabella",
    "William",
    "Mia",
    "Benjamin",
    "Charlotte",
    "Lucas",
    "Harper",
    "Henry",
    "Evelyn",
    "Theodore",
    "Aisha",
    "Mateo",
    "Priya",
    "Hiroshi",
    "Chloé",
    "Søren",
    "Zoë",
    "Mohammed",
    "Fatima",
    "Wei",
    "Anika",
    "Diego",
    "Nora",
    "Kai",
    "Léa",
    "Finn",
    "Ingrid",
    "Rafael",
    "Yuki",
    "Siobhan",
    "Tomás",
    "Grace",
    "Arjun",
    "Maya",
    "Jonas",
    "Elena",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "O'Brien",
    "Müller",
    "Nguyen",
    "Patel",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Tanaka",
    "Singh",
    "Kim",
    "Okafor",
    "Schmidt",
    "Fischer",
    "Novak",
    "Larsen",
    "MacDonald",
    "Silva",
    "Cohen",
];

pub(crate) const COMPANY_WORDS: &[&str] = &[
    "Acme",
    "Northwind",
    "Blue Harbor",
    "Summit",
    "Granite",
    "Evergreen",
    "Pioneer",
    "Redwood",
    "Silver Lake",
    "Atlas",
    "Beacon",
    "Cedar",
    "Harbor Point",
    "Ironbridge",
    "Maple",
    "Orion",
    "Riverside",
    "Sterling",
    "Keystone",
    "Lighthouse",
];

pub(crate) const COMPANY_SUFFIXES: &[&str] = &[
    "Inc.",
    "LLC",
    "Ltd.",
    "Holdings",
    "Group",
    "Partners",
    "Co.",
    "Corporation",
];

pub(crate) const PRACTICE_AREAS: &[&str] = &[
    "Family",
    "Estate Planning",
    "Corporate",
    "Real Estate",
    "Litigation",
    "Employment",
    "Immigration",
    "Criminal Defense",
    "Personal Injury",
    "Intellectual Property",
];

pub(crate) const MATTER_TOPICS: &[&str] = &[
    "Divorce proceedings",
    "Will and trust",
    "Share purchase agreement",
    "Lease dispute",
    "Contract review",
    "Wrongful dismissal",
    "Work visa application",
    "DUI defence",
    "Slip and fall claim",
    "Trademark registration",
    "Estate administration",
    "Commercial property purchase",
    "Shareholder dispute",
    "Custody arrangement",
];

pub(crate) const MEETING_KINDS: &[&str] = &[
    "Client meeting",
    "Court hearing",
    "Deposition",
    "Call with opposing counsel",
    "Filing deadline",
    "Mediation",
    "Case review",
    "Discovery conference",
];

pub(crate) const NOTES: &[&str] = &[
    "Drafted correspondence",
    "Reviewed documents",
    "Telephone conference with client",
    "Research on precedent",
    "Prepared for hearing",
    "Court filing fee",
    "Travel",
    "Revised agreement",
    "Email to opposing counsel",
    "Attended mediation",
];

pub(crate) const STREETS: &[&str] = &[
    "Main Street",
    "High Street",
    "Oak Avenue",
    "King Street",
    "Queen Street",
    "Church Road",
    "Park Lane",
    "Station Road",
    "Elm Street",
    "Bay Street",
];

/// (city, province/state, country) per region, so data looks local to its silo.
pub(crate) const CITIES_US: &[(&str, &str, &str)] = &[
    ("New York", "NY", "United States"),
    ("Chicago", "IL", "United States"),
    ("Austin", "TX", "United States"),
    ("Seattle", "WA", "United States"),
    ("Boston", "MA", "United States"),
    ("Denver", "CO", "United States"),
];
pub(crate) const CITIES_EU: &[(&str, &str, &str)] = &[
    ("Dublin", "Leinster", "Ireland"),
    ("London", "Greater London", "United Kingdom"),
    ("Berlin", "Berlin", "Germany"),
    ("Amsterdam", "North Holland", "Netherlands"),
    ("Lyon", "Auvergne-Rhône-Alpes", "France"),
];
pub(crate) const CITIES_CA: &[(&str, &str, &str)] = &[
    ("Toronto", "ON", "Canada"),
    ("Vancouver", "BC", "Canada"),
    ("Montréal", "QC", "Canada"),
    ("Calgary", "AB", "Canada"),
    ("Halifax", "NS", "Canada"),
];
pub(crate) const CITIES_AU: &[(&str, &str, &str)] = &[
    ("Sydney", "NSW", "Australia"),
    ("Melbourne", "VIC", "Australia"),
    ("Brisbane", "QLD", "Australia"),
    ("Perth", "WA", "Australia"),
];
