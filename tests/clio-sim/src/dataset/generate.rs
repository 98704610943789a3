//! Generated records: record `i` of a resource is a pure function of (seed, region,
//! resource, `i`, data-set sizes).
//!
//! Links between resources (a matter's client, an activity's matter) are computed from the
//! linked record's *identity* stream alone, so producing one record never needs another
//! record in memory. Nested summaries therefore show the generated values of the linked
//! record, even after the linked record is edited through the admin API.

use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};

use super::rng::{self, Rng};
use crate::config::{DatasetSize, Region};
use crate::resource::Resource;

/// 2026-01-01T00:00:00Z: generated history ends here, so data is identical on every run
/// whatever the wall clock says.
pub(crate) const DATA_EPOCH: i64 = 1_767_225_600;
/// Generated history spans five years before [`DATA_EPOCH`].
const HISTORY: i64 = 5 * 365 * 86_400;

const TAG_CONTACT: u64 = 10;
const TAG_CONTACT_ID: u64 = 11;
const TAG_USER: u64 = 20;
const TAG_USER_ID: u64 = 21;
const TAG_MATTER: u64 = 30;
const TAG_MATTER_ID: u64 = 31;
const TAG_CALENDAR: u64 = 40;
const TAG_CALENDAR_ID: u64 = 41;
/// The billing-suggestion properties of calendar entries (kind, length, cancelled, billed).
const TAG_CALENDAR_KIND: u64 = 42;
const TAG_ACTIVITY: u64 = 50;
const TAG_ETAG: u64 = 60;
const TAG_ACCOUNT: u64 = 70;

/// Summaries of cancelled calendar entries start with this (Clio's calendar entry has no
/// cancelled flag; firms retitle the entry).
pub(crate) const CANCELLED_PREFIX: &str = "Cancelled: ";
/// Share of calendar entries (with a matter, not cancelled, not all-day) that already have
/// their time entry: generated activity `i` links calendar entry `i`.
const BILLED_PERCENT: u64 = 25;
/// Clio bills time in tenths of an hour.
const BILLING_INCREMENT: i64 = 360;

const MEETING_SUMMARIES: &[&str] = &[
    "Client meeting",
    "Meeting with client",
    "Strategy meeting",
    "Settlement meeting",
];
const COURT_SUMMARIES: &[&str] = &[
    "Court appearance",
    "Court hearing",
    "Court appearance: motion hearing",
    "Court appearance: trial",
];
const CALL_SUMMARIES: &[&str] = &[
    "Call with client",
    "Phone call",
    "Call with opposing counsel",
    "Conference call",
];

/// Calendar ids (one calendar per user) start after this.
const CALENDAR_ID_BASE: i64 = 7_000_000;
const PRACTICE_AREA_ID_BASE: i64 = 9_100;

#[derive(Clone, Debug)]
pub(crate) struct Generator {
    seed: u64,
    region: Region,
    sizes: DatasetSize,
    account_id: i64,
    account_name: String,
    firm_domain: String,
}

struct ContactIdentity {
    person: bool,
    first: &'static str,
    last: &'static str,
    name: String,
    email: String,
    is_client: bool,
}

struct UserIdentity {
    name: String,
    first: &'static str,
    last: &'static str,
    email: String,
    rate: f64,
}

struct MatterIdentity {
    display_number: String,
    client: Option<u64>,
}

struct CalendarIdentity {
    id: String,
    created: i64,
    start: i64,
    recurring: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Meeting,
    CourtAppearance,
    Call,
    Other,
}

/// A generated calendar entry's facts, before it is built into JSON.
struct CalendarFacts {
    identity: CalendarIdentity,
    updated: i64,
    all_day: bool,
    start: i64,
    end: i64,
    matter: u64,
    owner: u64,
    label: &'static str,
    cancelled: bool,
    /// Generated activity with the same index is this entry's time entry.
    billed: bool,
}

impl Generator {
    /// The records of `account` (1-based: 1 is the region's usual firm) of `region`.
    pub(crate) fn new(seed: u64, region: Region, account: u32, sizes: DatasetSize) -> Generator {
        // Each region is its own silo: same seed, different people; and each further
        // account of a region is a firm of its own.
        let region_index = crate::config::region_index(region);
        let mut seed = rng::mix(seed, TAG_ACCOUNT, region_index + 1);
        if account > 1 {
            seed = rng::mix(seed, TAG_ACCOUNT + 1, u64::from(account));
        }
        let mut r = Rng::new(seed, TAG_ACCOUNT, 0);
        let a = r.pick(rng::LAST_NAMES);
        let b = r.pick(rng::LAST_NAMES);
        let account_name = format!("{a} & {b} LLP");
        let firm_domain = format!("{}{}.example.com", ascii_lower(a), ascii_lower(b));
        // Account 1 keeps the id it always had; the others are numbered below it, so no
        // two accounts of a region share an id.
        let account_id = match account {
            0 | 1 => 90_000_000 + region_index * 1_000_000 + r.below(1_000_000),
            n => 80_000_000 + region_index * 1_000_000 + u64::from(n),
        };
        let account_id = i64::try_from(account_id).unwrap_or(0);
        Generator {
            seed,
            region,
            sizes,
            account_id,
            account_name,
            firm_domain,
        }
    }

    pub(crate) fn account(&self) -> Value {
        json!({"id": self.account_id, "name": self.account_name})
    }

    pub(crate) fn size(&self, resource: Resource) -> u64 {
        match resource {
            Resource::Users => self.sizes.users,
            Resource::Contacts => self.sizes.contacts,
            Resource::Matters => self.sizes.matters,
            Resource::CalendarEntries => self.sizes.calendar_entries,
            Resource::Activities => self.sizes.activities,
        }
    }

    /// The full record `index` (1-based) of `resource`.
    pub(crate) fn record(&self, resource: Resource, index: u64) -> Value {
        match resource {
            Resource::Users => self.user(index),
            Resource::Contacts => self.contact(index),
            Resource::Matters => self.matter(index),
            Resource::CalendarEntries => self.calendar_entry(index),
            Resource::Activities => self.activity(index),
        }
    }

    pub(crate) fn etag(&self, resource: Resource, index: u64) -> String {
        let tag = TAG_ETAG + resource.slot() as u64;
        let high = rng::mix(self.seed, tag, index);
        let low = rng::mix(self.seed, tag + 100, index);
        format!("\"{high:016x}{low:016x}\"")
    }

    fn times(&self, resource: Resource, r: &mut Rng, index: u64) -> (i64, i64) {
        let created = created_at(r, index, self.size(resource));
        let updated = created
            + i64::try_from(r.below(u64::try_from(DATA_EPOCH - created).unwrap_or(1))).unwrap_or(0);
        (created, updated)
    }

    fn contact_identity(&self, index: u64) -> ContactIdentity {
        let mut r = Rng::new(self.seed, TAG_CONTACT_ID, index);
        let person = r.percent(70);
        let first = r.pick(rng::FIRST_NAMES);
        let last = r.pick(rng::LAST_NAMES);
        let company = format!(
            "{} {}",
            r.pick(rng::COMPANY_WORDS),
            r.pick(rng::COMPANY_SUFFIXES)
        );
        let is_client = r.percent(35);
        let (name, email) = if person {
            let email = format!(
                "{}.{}{}@{}",
                ascii_lower(first),
                ascii_lower(last),
                index % 1000,
                r.pick(&["example.com", "example.org", "mail.example.net"])
            );
            (format!("{first} {last}"), email)
        } else {
            let email = format!("info@{}{}.example.com", ascii_lower(&company), index % 1000);
            (company, email)
        };
        ContactIdentity {
            person,
            first,
            last,
            name,
            email,
            is_client,
        }
    }

    fn contact_ref(&self, index: u64) -> Value {
        let identity = self.contact_identity(index);
        json!({
            "id": key(Resource::Contacts, index),
            "etag": self.etag(Resource::Contacts, index),
            "name": identity.name,
            "type": if identity.person { "Person" } else { "Company" },
        })
    }

    fn contact(&self, index: u64) -> Value {
        let identity = self.contact_identity(index);
        let mut r = Rng::new(self.seed, TAG_CONTACT, index);
        let (created, updated) = self.times(Resource::Contacts, &mut r, index);
        let id = key(Resource::Contacts, index);
        let phone = self.phone(&mut r);
        let (city, province, country) = r.pick(self.cities());
        let street = format!("{} {}", r.index_in(999), r.pick(rng::STREETS));
        let postal_code = self.postal_code(&mut r);
        let kind = if identity.person { "Person" } else { "Company" };
        let company = if identity.person && r.percent(25) {
            let other = r.index_in(self.sizes.contacts);
            let linked = self.contact_identity(other);
            (!linked.person)
                .then(|| json!({"id": key(Resource::Contacts, other), "name": linked.name}))
        } else {
            None
        };
        let (first, last, prefix, title, initials) = if identity.person {
            (
                json!(identity.first),
                json!(identity.last),
                json!(r.pick(&["Mr.", "Ms.", "Dr.", "Mx."])),
                json!(r.pick(&["", "CEO", "Director", "Accountant", "Engineer"])),
                json!(initials(identity.first, identity.last)),
            )
        } else {
            (
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            )
        };
        json!({
            "id": id,
            "etag": self.etag(Resource::Contacts, index),
            "name": identity.name,
            "first_name": first,
            "middle_name": Value::Null,
            "last_name": last,
            "prefix": prefix,
            "title": title,
            "initials": initials,
            "type": kind,
            "primary_email_address": identity.email,
            "primary_phone_number": phone,
            "is_client": identity.is_client,
            "clio_connect_email": Value::Null,
            "company": company,
            "email_addresses": [{"id": id * 10 + 1, "address": identity.email, "name": "Work", "primary": true}],
            "phone_numbers": [{"id": id * 10 + 2, "number": phone, "name": "Work", "primary": true}],
            "addresses": [{
                "id": id * 10 + 3,
                "street": street,
                "city": city,
                "province": province,
                "postal_code": postal_code,
                "country": country,
                "name": if identity.person { "Home" } else { "Work" },
                "primary": true,
            }],
            "created_at": timestamp(created),
            "updated_at": timestamp(updated),
        })
    }

    fn user_identity(&self, index: u64) -> UserIdentity {
        let mut r = Rng::new(self.seed, TAG_USER_ID, index);
        let first = r.pick(rng::FIRST_NAMES);
        let last = r.pick(rng::LAST_NAMES);
        let email = format!(
            "{}.{}{}@{}",
            ascii_lower(first),
            ascii_lower(last),
            index,
            self.firm_domain
        );
        let rate = 150.0 + 25.0 * r.below(15) as f64;
        UserIdentity {
            name: format!("{first} {last}"),
            first,
            last,
            email,
            rate,
        }
    }

    fn user_ref(&self, index: u64) -> Value {
        let identity = self.user_identity(index);
        json!({"id": key(Resource::Users, index), "name": identity.name, "email": identity.email})
    }

    fn user(&self, index: u64) -> Value {
        let identity = self.user_identity(index);
        let mut r = Rng::new(self.seed, TAG_USER, index);
        let (created, updated) = self.times(Resource::Users, &mut r, index);
        // The first user is the firm's enabled administrator, so every data set has one.
        let admin = index == 1 || r.percent(10);
        let enabled = index == 1 || r.percent(90);
        json!({
            "id": key(Resource::Users, index),
            "etag": self.etag(Resource::Users, index),
            "name": identity.name,
            "first_name": identity.first,
            "last_name": identity.last,
            "initials": initials(identity.first, identity.last),
            "email": identity.email,
            "enabled": enabled,
            "roles": if admin { json!(["Admin"]) } else { json!([]) },
            "subscription_type": if r.percent(60) { "Attorney" } else { "NonAttorney" },
            "rate": identity.rate,
            "time_zone": self.time_zone(),
            "phone_number": self.phone(&mut r),
            "default_calendar_id": calendar_id(index),
            "account": self.account(),
            "created_at": timestamp(created),
            "updated_at": timestamp(updated),
        })
    }

    fn matter_identity(&self, index: u64) -> MatterIdentity {
        let mut r = Rng::new(self.seed, TAG_MATTER_ID, index);
        let contacts = self.sizes.contacts;
        let start = r.index_in(contacts);
        let probes = contacts.min(1_000);
        let client = (0..probes)
            .map(|step| (start - 1 + step) % contacts + 1)
            .find(|&candidate| self.contact_identity(candidate).is_client);
        let label = client.map_or_else(
            || "Internal".to_owned(),
            |c| {
                let identity = self.contact_identity(c);
                if identity.person {
                    identity.last.to_owned()
                } else {
                    identity
                        .name
                        .split(' ')
                        .next()
                        .unwrap_or("Client")
                        .to_owned()
                }
            },
        );
        MatterIdentity {
            display_number: format!("{index:05}-{label}"),
            client,
        }
    }

    fn matter_ref(&self, index: u64) -> Value {
        let identity = self.matter_identity(index);
        json!({"id": key(Resource::Matters, index), "display_number": identity.display_number})
    }

    fn matter(&self, index: u64) -> Value {
        let identity = self.matter_identity(index);
        let mut r = Rng::new(self.seed, TAG_MATTER, index);
        let (created, updated) = self.times(Resource::Matters, &mut r, index);
        let status = match r.below(100) {
            0..60 => "Open",
            60..75 => "Pending",
            _ => "Closed",
        };
        let area = r.below(rng::PRACTICE_AREAS.len() as u64);
        let area_name = rng::PRACTICE_AREAS[usize::try_from(area).unwrap_or(0)];
        let responsible = r.index_in(self.sizes.users);
        let originating = r.index_in(self.sizes.users);
        let (city, _, _) = r.pick(self.cities());
        json!({
            "id": key(Resource::Matters, index),
            "etag": self.etag(Resource::Matters, index),
            "number": index,
            "display_number": identity.display_number,
            "description": r.pick(rng::MATTER_TOPICS),
            "status": status,
            "open_date": date(created),
            "pending_date": if status == "Pending" { json!(date(updated)) } else { Value::Null },
            "close_date": if status == "Closed" { json!(date(updated)) } else { Value::Null },
            "billable": r.percent(85),
            "billing_method": r.pick(&["hourly", "hourly", "hourly", "flat", "contingency"]),
            "location": city,
            "client": identity.client.map(|c| self.contact_ref(c)),
            "practice_area": {"id": PRACTICE_AREA_ID_BASE + i64::try_from(area).unwrap_or(0), "name": area_name},
            "responsible_attorney": (responsible > 0).then(|| self.user_ref(responsible)),
            "originating_attorney": (originating > 0).then(|| self.user_ref(originating)),
            "created_at": timestamp(created),
            "updated_at": timestamp(updated),
        })
    }

    fn calendar_identity(&self, index: u64) -> CalendarIdentity {
        let mut r = Rng::new(self.seed, TAG_CALENDAR_ID, index);
        let created = created_at(&mut r, index, self.sizes.calendar_entries);
        let quarter_hours = i64::try_from(r.below(90 * 24 * 4)).unwrap_or(0);
        let start = (created / 900) * 900 + quarter_hours * 900;
        // Every seventh entry is an instance of a recurring series, whose Clio id carries
        // the occurrence date.
        let recurring = index.is_multiple_of(7);
        let key = key(Resource::CalendarEntries, index);
        let id = if recurring {
            format!("{key}_{}", date(start).replace('-', ""))
        } else {
            key.to_string()
        };
        CalendarIdentity {
            id,
            created,
            start,
            recurring,
        }
    }

    /// What a calendar entry is, without building it: everything an activity linked to
    /// it needs. Returns the entry's main stream positioned after the owner draw, so
    /// [`Generator::calendar_entry`] draws the remaining fields from where it left off.
    fn calendar_facts(&self, index: u64) -> (CalendarFacts, Rng) {
        let identity = self.calendar_identity(index);
        let mut r = Rng::new(self.seed, TAG_CALENDAR, index);
        let updated = identity.created
            + i64::try_from(r.below(u64::try_from(DATA_EPOCH - identity.created).unwrap_or(1)))
                .unwrap_or(0);
        let all_day = r.percent(10);
        // Drawn (and no longer used) so the draws after it keep their values.
        let _half_hours = if all_day { 0 } else { r.index_in(6) };
        let matter = if r.percent(75) {
            r.index_in(self.sizes.matters)
        } else {
            0
        };
        let owner = r.index_in(self.sizes.users);

        // The billing-suggestion properties come from a stream of their own, so the fields
        // above keep the values they always had.
        let mut s = Rng::new(self.seed, TAG_CALENDAR_KIND, index);
        let kind = match s.below(100) {
            0..40 => EntryKind::Meeting,
            40..60 => EntryKind::CourtAppearance,
            60..90 => EntryKind::Call,
            _ => EntryKind::Other,
        };
        let label = match kind {
            EntryKind::Meeting => s.pick(MEETING_SUMMARIES),
            EntryKind::CourtAppearance => s.pick(COURT_SUMMARIES),
            EntryKind::Call => s.pick(CALL_SUMMARIES),
            EntryKind::Other => s.pick(rng::MEETING_KINDS),
        };
        let cancelled = s.percent(8);
        let seconds = match (s.below(100), kind) {
            // Under the 6-minute billing increment.
            (0..10, _) => 30 + 10 * i64::try_from(s.below(31)).unwrap_or(0),
            // Whole half hours, as the simulator always generated them.
            (10..30, _) => 1_800 * i64::try_from(s.index_in(6)).unwrap_or(1),
            (_, EntryKind::Call) => 60 * (2 + i64::try_from(s.below(46)).unwrap_or(0)),
            (_, EntryKind::CourtAppearance) => 60 * (45 + i64::try_from(s.below(196)).unwrap_or(0)),
            // Any minute count: most are not multiples of 6 minutes.
            _ => 60 * (7 + i64::try_from(s.below(114)).unwrap_or(0)),
        };
        let (start, end) = if all_day {
            let midnight = identity.start / 86_400 * 86_400;
            (midnight, midnight + 86_400)
        } else {
            (identity.start, identity.start + seconds)
        };
        let billed_draw = s.percent(BILLED_PERCENT);
        let billed =
            billed_draw && matter > 0 && !cancelled && !all_day && index <= self.sizes.activities;
        let facts = CalendarFacts {
            identity,
            updated,
            all_day,
            start,
            end,
            matter,
            owner,
            label,
            cancelled,
            billed,
        };
        (facts, r)
    }

    fn calendar_entry(&self, index: u64) -> Value {
        let (facts, mut r) = self.calendar_facts(index);
        let identity = &facts.identity;
        let (matter, owner) = (facts.matter, facts.owner);
        // Drawn (and replaced by `facts.label`) so the draws after it keep their values.
        let _kind = r.pick(rng::MEETING_KINDS);
        let mut attendees = Vec::new();
        if owner > 0 {
            let user = self.user_identity(owner);
            attendees.push(json!({"id": key(Resource::Users, owner), "name": user.name, "type": "User", "email": user.email}));
        }
        let mut summary = facts.label.to_owned();
        if matter > 0 {
            let identity = self.matter_identity(matter);
            summary = format!("{summary} – {}", identity.display_number);
            if let Some(client) = identity.client {
                let contact = self.contact_identity(client);
                attendees.push(json!({"id": key(Resource::Contacts, client), "name": contact.name, "type": "Contact", "email": contact.email}));
            }
        }
        if facts.cancelled {
            summary = format!("{CANCELLED_PREFIX}{summary}");
        }
        json!({
            "id": identity.id,
            "etag": self.etag(Resource::CalendarEntries, index),
            "summary": summary,
            "description": r.pick(rng::NOTES),
            "location": if r.percent(50) { json!(r.pick(self.cities()).0) } else { Value::Null },
            "start_at": timestamp(facts.start),
            "end_at": timestamp(facts.end),
            "all_day": facts.all_day,
            "recurrence_rule": if identity.recurring { json!("FREQ=WEEKLY;INTERVAL=1") } else { Value::Null },
            "matter": (matter > 0).then(|| self.matter_ref(matter)),
            "calendar_owner": (owner > 0).then(|| json!({
                "id": calendar_id(owner),
                "name": self.user_identity(owner).name,
                "type": "UserCalendar",
            })),
            "attendees": attendees,
            "created_at": timestamp(identity.created),
            "updated_at": timestamp(facts.updated),
        })
    }

    fn activity(&self, index: u64) -> Value {
        let mut r = Rng::new(self.seed, TAG_ACTIVITY, index);
        let (created, updated) = self.times(Resource::Activities, &mut r, index);
        let time_entry = r.percent(75);
        let mut matter = r.index_in(self.sizes.matters);
        let mut user = r.index_in(self.sizes.users);
        let rate = if user > 0 {
            self.user_identity(user).rate
        } else {
            200.0
        };
        let (mut kind, mut quantity, mut hours, mut price, mut total) = if time_entry {
            let seconds = 360 * r.index_in(40);
            let hours = seconds as f64 / 3600.0;
            (
                "TimeEntry",
                json!(seconds),
                json!(hours),
                rate,
                round2(rate * hours),
            )
        } else {
            let price = round2(5.0 + r.below(49_500) as f64 / 100.0);
            ("ExpenseEntry", json!(1.0), json!(1.0), price, price)
        };
        // Drawn (and no longer used: links are now the billed entries') so the draws after
        // them keep their values.
        if time_entry && r.percent(20) {
            r.index_in(self.sizes.calendar_entries);
        }
        let mut date_text = date(created);
        let mut calendar_entry = Value::Null;
        // Activity `i` is the time entry of calendar entry `i` when that entry is billed.
        if index <= self.sizes.calendar_entries {
            let (facts, _) = self.calendar_facts(index);
            if facts.billed {
                let rate = if facts.owner > 0 {
                    self.user_identity(facts.owner).rate
                } else {
                    200.0
                };
                let seconds = billed_seconds(facts.end - facts.start);
                let in_hours = seconds as f64 / 3600.0;
                kind = "TimeEntry";
                quantity = json!(seconds);
                hours = json!(in_hours);
                price = rate;
                total = round2(rate * in_hours);
                date_text = date(facts.start);
                matter = facts.matter;
                user = facts.owner;
                calendar_entry = json!({"id": facts.identity.id});
            }
        }
        json!({
            "id": key(Resource::Activities, index),
            "etag": self.etag(Resource::Activities, index),
            "type": kind,
            "date": date_text,
            "quantity": quantity,
            "quantity_in_hours": hours,
            "price": price,
            "total": total,
            "note": r.pick(rng::NOTES),
            "billed": r.percent(40),
            "non_billable": r.percent(10),
            "on_bill": false,
            "matter": (matter > 0).then(|| self.matter_ref(matter)),
            "user": (user > 0).then(|| json!({"id": key(Resource::Users, user), "name": self.user_identity(user).name})),
            "calendar_entry": calendar_entry,
            "created_at": timestamp(created),
            "updated_at": timestamp(updated),
        })
    }

    fn cities(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        match self.region {
            Region::Us => rng::CITIES_US,
            Region::Eu => rng::CITIES_EU,
            Region::Ca => rng::CITIES_CA,
            Region::Au => rng::CITIES_AU,
        }
    }

    fn time_zone(&self) -> &'static str {
        match self.region {
            Region::Us => "Eastern Time (US & Canada)",
            Region::Eu => "Dublin",
            Region::Ca => "Eastern Time (US & Canada)",
            Region::Au => "Sydney",
        }
    }

    /// Fictional numbers (555 in North America, reserved drama ranges elsewhere).
    fn phone(&self, r: &mut Rng) -> String {
        let (a, b) = (r.below(1000), r.below(10_000));
        match self.region {
            Region::Us | Region::Ca => format!("+1 555-{a:03}-{b:04}"),
            Region::Eu => format!("+353 1 {a:03} {b:04}"),
            Region::Au => format!("+61 2 5550 {b:04}"),
        }
    }

    fn postal_code(&self, r: &mut Rng) -> String {
        match self.region {
            Region::Us => format!("{:05}", r.below(100_000)),
            Region::Eu => format!("D{:02} X{:03}", r.below(25), r.below(1000)),
            Region::Ca => format!("M{}A {}B{}", r.below(10), r.below(10), r.below(10)),
            Region::Au => format!("{:04}", 2000 + r.below(1000)),
        }
    }
}

/// The ordering key (and numeric id) of generated record `index`.
pub(crate) fn key(resource: Resource, index: u64) -> i64 {
    resource.id_base() + i64::try_from(index).unwrap_or(i64::MAX / 2)
}

fn calendar_id(user_index: u64) -> i64 {
    CALENDAR_ID_BASE + i64::try_from(user_index).unwrap_or(0)
}

/// Creation times rise with the index (as real ids do), with jitter inside each slot.
fn created_at(r: &mut Rng, index: u64, count: u64) -> i64 {
    let count = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
    let step = (HISTORY / count).max(1);
    let slot = i64::try_from(index.saturating_sub(1)).unwrap_or(0);
    let jitter = i64::try_from(r.below(u64::try_from(step).unwrap_or(1))).unwrap_or(0);
    (DATA_EPOCH - HISTORY + slot.saturating_mul(step) + jitter).min(DATA_EPOCH - 1)
}

/// RFC 3339 with an explicit offset, as Clio writes timestamps.
pub(crate) fn timestamp(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn date(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

fn initials(first: &str, last: &str) -> String {
    first.chars().take(1).chain(last.chars().take(1)).collect()
}

fn ascii_lower(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A duration billed in whole 6-minute increments, rounded up (at least one).
fn billed_seconds(seconds: i64) -> i64 {
    (seconds.max(1) + BILLING_INCREMENT - 1) / BILLING_INCREMENT * BILLING_INCREMENT
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
