//! Clio's `fields` parameter. Without it, Clio returns only `id` and `etag`, so every list
//! names the fields it wants: a field is `name` or `name{a,b}` (one level of nesting, as
//! Clio allows).

/// The `fields` parameter: `defaults` plus `extra`, in that order, without duplicates.
pub fn fields_param(defaults: &[&str], extra: &[String]) -> String {
    let mut fields: Vec<&str> = defaults.to_vec();
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
    }

    #[test]
    fn extras_are_appended_once() {
        let param = fields_param(
            &["id", "email", "updated_at"],
            &["email".into(), "phone".into()],
        );
        assert_eq!(param, "id,email,updated_at,phone");
    }
}
