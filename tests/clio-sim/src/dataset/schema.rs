//! Which fields each resource has, for validating and projecting `fields=`.

use crate::resource::Resource;

/// The shape of one top-level field.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    Scalar,
    /// A nested record (`client{id,name}`) with its sub-fields.
    Object(&'static [&'static str]),
    /// A list of nested records (`addresses{city}`) with their sub-fields.
    List(&'static [&'static str]),
}

pub(crate) type Schema = &'static [(&'static str, Shape)];

const REF: &[&str] = &["id", "name"];
const REF_WITH_TYPE: &[&str] = &["id", "etag", "name", "type"];
const MATTER_REF: &[&str] = &["id", "display_number"];
const ATTORNEY_REF: &[&str] = &["id", "name", "email"];

const USERS: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("name", Shape::Scalar),
    ("first_name", Shape::Scalar),
    ("last_name", Shape::Scalar),
    ("initials", Shape::Scalar),
    ("email", Shape::Scalar),
    ("enabled", Shape::Scalar),
    ("roles", Shape::Scalar),
    ("subscription_type", Shape::Scalar),
    ("rate", Shape::Scalar),
    ("time_zone", Shape::Scalar),
    ("phone_number", Shape::Scalar),
    ("default_calendar_id", Shape::Scalar),
    ("account", Shape::Object(REF)),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

const CONTACTS: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("name", Shape::Scalar),
    ("first_name", Shape::Scalar),
    ("middle_name", Shape::Scalar),
    ("last_name", Shape::Scalar),
    ("prefix", Shape::Scalar),
    ("title", Shape::Scalar),
    ("initials", Shape::Scalar),
    ("type", Shape::Scalar),
    ("primary_email_address", Shape::Scalar),
    ("primary_phone_number", Shape::Scalar),
    ("is_client", Shape::Scalar),
    ("clio_connect_email", Shape::Scalar),
    ("company", Shape::Object(REF)),
    (
        "email_addresses",
        Shape::List(&["id", "address", "name", "primary"]),
    ),
    (
        "phone_numbers",
        Shape::List(&["id", "number", "name", "primary"]),
    ),
    (
        "addresses",
        Shape::List(&[
            "id",
            "street",
            "city",
            "province",
            "postal_code",
            "country",
            "name",
            "primary",
        ]),
    ),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

const MATTERS: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("number", Shape::Scalar),
    ("display_number", Shape::Scalar),
    ("description", Shape::Scalar),
    ("status", Shape::Scalar),
    ("open_date", Shape::Scalar),
    ("pending_date", Shape::Scalar),
    ("close_date", Shape::Scalar),
    ("billable", Shape::Scalar),
    ("billing_method", Shape::Scalar),
    ("location", Shape::Scalar),
    ("client", Shape::Object(REF_WITH_TYPE)),
    ("practice_area", Shape::Object(REF)),
    ("responsible_attorney", Shape::Object(ATTORNEY_REF)),
    ("originating_attorney", Shape::Object(ATTORNEY_REF)),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

const CALENDAR_ENTRIES: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("summary", Shape::Scalar),
    ("description", Shape::Scalar),
    ("location", Shape::Scalar),
    ("start_at", Shape::Scalar),
    ("end_at", Shape::Scalar),
    ("all_day", Shape::Scalar),
    ("recurrence_rule", Shape::Scalar),
    ("matter", Shape::Object(MATTER_REF)),
    ("calendar_owner", Shape::Object(&["id", "name", "type"])),
    ("attendees", Shape::List(&["id", "name", "type", "email"])),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

const ACTIVITIES: Schema = &[
    ("id", Shape::Scalar),
    ("etag", Shape::Scalar),
    ("type", Shape::Scalar),
    ("date", Shape::Scalar),
    ("quantity", Shape::Scalar),
    ("quantity_in_hours", Shape::Scalar),
    ("price", Shape::Scalar),
    ("total", Shape::Scalar),
    ("note", Shape::Scalar),
    ("billed", Shape::Scalar),
    ("non_billable", Shape::Scalar),
    ("on_bill", Shape::Scalar),
    ("matter", Shape::Object(MATTER_REF)),
    ("user", Shape::Object(REF)),
    ("calendar_entry", Shape::Object(&["id"])),
    ("created_at", Shape::Scalar),
    ("updated_at", Shape::Scalar),
];

pub(crate) fn schema(resource: Resource) -> Schema {
    match resource {
        Resource::Users => USERS,
        Resource::Contacts => CONTACTS,
        Resource::Matters => MATTERS,
        Resource::CalendarEntries => CALENDAR_ENTRIES,
        Resource::Activities => ACTIVITIES,
    }
}
