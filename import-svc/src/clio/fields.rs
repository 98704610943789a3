//! The fields an import asks Clio for. Without `fields`, Clio returns only `id` and `etag`,
//! so every resource has a default list covering what the tables and consumers need.

use scope_catalog::Resource;

/// What the importer always asks for, per resource (nesting one level deep, as Clio allows).
pub fn default_fields(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Contacts => &[
            "id",
            "etag",
            "name",
            "first_name",
            "last_name",
            "type",
            "primary_email_address",
            "primary_phone_number",
            "is_client",
            "created_at",
            "updated_at",
        ],
        Resource::Matters => &[
            "id",
            "etag",
            "display_number",
            "description",
            "status",
            "open_date",
            "close_date",
            "billable",
            "client{id,name}",
            "practice_area{id,name}",
            "created_at",
            "updated_at",
        ],
        Resource::CalendarEntries => &[
            "id",
            "etag",
            "summary",
            "description",
            "location",
            "start_at",
            "end_at",
            "all_day",
            "matter{id}",
            "calendar_owner{id}",
            "created_at",
            "updated_at",
        ],
        Resource::Activities => &[
            "id",
            "etag",
            "type",
            "date",
            "quantity",
            "price",
            "total",
            "note",
            "billed",
            "non_billable",
            "matter{id}",
            "user{id}",
            "calendar_entry{id}",
            "created_at",
            "updated_at",
        ],
        Resource::Users => &[
            "id",
            "name",
            "email",
            "enabled",
            "roles",
            "subscription_type",
            "created_at",
            "updated_at",
        ],
    }
}

/// The `fields` parameter: the defaults plus a job's extras, without duplicates.
pub fn fields_param(resource: Resource, extra: &[String]) -> String {
    let mut fields: Vec<&str> = default_fields(resource).to_vec();
    for field in extra {
        if !fields.contains(&field.as_str()) {
            fields.push(field);
        }
    }
    fields.join(",")
}

/// A field name Clio could accept: `name` or `name{a,b}` (one level of nesting).
pub fn is_valid_field(field: &str) -> bool {
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match field.split_once('{') {
        None => ident(field),
        Some((name, rest)) => {
            let Some(inner) = rest.strip_suffix('}') else {
                return false;
            };
            ident(name) && inner.split(',').all(ident)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_syntax() {
        assert!(is_valid_field("name"));
        assert!(is_valid_field("client{id,name}"));
        assert!(!is_valid_field("client{id{x}}"));
        assert!(!is_valid_field("a b"));
        assert!(!is_valid_field(""));
        for resource in Resource::ALL {
            assert!(
                default_fields(resource).iter().all(|f| is_valid_field(f)),
                "{resource}"
            );
        }
    }

    #[test]
    fn extras_are_appended_once() {
        let param = fields_param(Resource::Users, &["email".into(), "phone".into()]);
        assert!(param.ends_with(",updated_at,phone"), "{param}");
    }
}
