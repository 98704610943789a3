//! The `fields` parameter: which fields to return, with one level of nesting
//! (`id,name,client{id,name}`). Anything else is `400 InvalidFields`.

use serde_json::{Map, Value};

use super::error::ApiError;
use crate::dataset::{Schema, Shape, schema};
use crate::resource::Resource;

/// Nested records named without braces (`client`) return these of their sub-fields.
const NESTED_DEFAULT: &[&str] = &["id", "etag"];

#[derive(Clone, Debug, PartialEq, Eq)]
struct Selected {
    name: &'static str,
    /// Sub-fields of a nested record or list of records.
    nested: Option<Vec<&'static str>>,
}

/// A parsed, validated field selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fields(Vec<Selected>);

/// Splits on commas outside braces.
fn split_top_level(text: &str) -> Result<Vec<&str>, ()> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(());
        }
    }
    if depth != 0 {
        return Err(());
    }
    items.push(&text[start..]);
    Ok(items)
}

fn invalid(item: &str) -> ApiError {
    ApiError::invalid_fields(format!("{} is not a valid field", item.trim()))
}

impl Fields {
    /// Parses `fields` for `resource`; absent or empty means `id,etag`.
    pub(crate) fn parse(resource: Resource, fields: Option<&str>) -> Result<Fields, ApiError> {
        Fields::parse_in(schema(resource), fields)
    }

    /// Parses `fields` against the fields of `known` (a resource's, or the webhook
    /// record's); absent or empty means `id,etag`.
    pub(crate) fn parse_in(known: Schema, fields: Option<&str>) -> Result<Fields, ApiError> {
        let text = fields.unwrap_or_default().trim();
        if text.is_empty() {
            return Fields::parse_in(known, Some("id,etag"));
        }
        let items = split_top_level(text).map_err(|()| invalid(text))?;
        let mut selected = Vec::new();
        for item in items
            .into_iter()
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (name, inner) = match item.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').ok_or_else(|| invalid(item))?;
                    (name.trim(), Some(inner))
                }
                None => (item, None),
            };
            let (name, field_shape) = known
                .iter()
                .find(|(known, _)| *known == name)
                .copied()
                .ok_or_else(|| invalid(name))?;
            let field = match (field_shape, inner) {
                (Shape::Scalar, None) => Selected { name, nested: None },
                (Shape::Scalar, Some(_)) => return Err(invalid(item)),
                (Shape::Object(subs) | Shape::List(subs), inner) => Selected {
                    name,
                    nested: Some(nested_fields(subs, inner, item)?),
                },
            };
            if !selected.contains(&field) {
                selected.push(field);
            }
        }
        Ok(Fields(selected))
    }

    /// The selected part of `record`; fields the record lacks come out as null.
    pub(crate) fn project(&self, record: &Value) -> Value {
        let mut out = Map::with_capacity(self.0.len());
        for field in &self.0 {
            let value = record.get(field.name).unwrap_or(&Value::Null);
            let value = match (&field.nested, value) {
                (Some(subs), Value::Object(_)) => pick(value, subs),
                (Some(subs), Value::Array(items)) => {
                    Value::Array(items.iter().map(|item| pick(item, subs)).collect())
                }
                _ => value.clone(),
            };
            out.insert(field.name.to_owned(), value);
        }
        Value::Object(out)
    }
}

fn nested_fields(
    subs: &'static [&'static str],
    inner: Option<&str>,
    item: &str,
) -> Result<Vec<&'static str>, ApiError> {
    let Some(inner) = inner else {
        let defaults: Vec<_> = subs
            .iter()
            .copied()
            .filter(|s| NESTED_DEFAULT.contains(s))
            .collect();
        return Ok(defaults);
    };
    if inner.contains('{') || inner.contains('}') {
        return Err(invalid(item));
    }
    inner
        .split(',')
        .map(str::trim)
        .filter(|sub| !sub.is_empty())
        .map(|sub| {
            subs.iter()
                .copied()
                .find(|known| *known == sub)
                .ok_or_else(|| invalid(sub))
        })
        .collect()
}

fn pick(record: &Value, subs: &[&'static str]) -> Value {
    let map = subs
        .iter()
        .map(|sub| {
            (
                (*sub).to_owned(),
                record.get(*sub).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn one_level_of_nesting_is_projected() {
        let fields = Fields::parse(Resource::Matters, Some("id, client{id,name},status")).unwrap();
        let record = json!({"id": 1, "status": "Open", "etag": "x", "client": {"id": 2, "name": "A", "type": "Person"}});
        assert_eq!(
            fields.project(&record),
            json!({"id": 1, "status": "Open", "client": {"id": 2, "name": "A"}})
        );
    }

    #[test]
    fn unknown_and_deeper_fields_are_rejected_with_the_field_named() {
        for (fields, named) in [
            ("id,nope", "nope"),
            ("client{id{name}}", "client{id{name}}"),
            ("client{nope}", "nope"),
            ("status{id}", "status{id}"),
            ("id,client{id", "id,client{id"),
        ] {
            let Err(ApiError::Typed { message, .. }) =
                Fields::parse(Resource::Matters, Some(fields))
            else {
                panic!("{fields} should be invalid");
            };
            assert_eq!(message, format!("{named} is not a valid field"));
        }
    }

    #[test]
    fn absent_fields_mean_id_and_etag() {
        let fields = Fields::parse(Resource::Contacts, None).unwrap();
        assert_eq!(
            fields.project(&json!({"id": 3, "etag": "e", "name": "n"})),
            json!({"id": 3, "etag": "e"})
        );
    }
}
