//! A delivery's effect on the stored records, under the importer's rules: an older version
//! never overwrites a newer one (Clio's `updated_at`), a deletion is never undone by a
//! change that preceded it, and the same change twice changes nothing. So deliveries may
//! arrive out of order, twice, or beside an import of the same records.

use scope_catalog::Resource;
use serde_json::Value;
use sqlx::{Postgres, Transaction};

use crate::records::{self, RecordError, Target};

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or updated (matter status events included): the record as Clio sent it.
    Upsert(Value),
    /// Deleted in Clio: the record's last version.
    Delete(Value),
}

/// A delivery's payload (`{"data": {...}, "meta": {"event": ..., "webhook_id": ...}}`),
/// read. The problem names the part that is wrong.
#[derive(Debug)]
pub struct Delivery {
    pub webhook_id: i64,
    pub change: Change,
}

impl Delivery {
    pub fn parse(body: &[u8]) -> Result<Delivery, String> {
        let payload: Value =
            serde_json::from_slice(body).map_err(|e| format!("body: not JSON ({e})"))?;
        let data = match payload.get("data") {
            Some(data @ Value::Object(_)) => data.clone(),
            _ => return Err("data: must be an object".into()),
        };
        let meta = payload.get("meta").ok_or("meta: missing")?;
        let webhook_id = meta
            .get("webhook_id")
            .and_then(Value::as_i64)
            .ok_or("meta.webhook_id: must be a number")?;
        let event = meta
            .get("event")
            .and_then(Value::as_str)
            .ok_or("meta.event: must be a string")?;
        let change = match event {
            "created" | "updated" | "matter_opened" | "matter_pended" | "matter_closed" => {
                Change::Upsert(data)
            }
            "deleted" => Change::Delete(data),
            other => {
                return Err(format!(
                    "meta.event: {} is not an event we subscribe to",
                    crate::job::spec::printable(other, 40)
                ));
            }
        };
        if data_id(change.record()).is_none() {
            return Err("data.id: missing".into());
        }
        Ok(Delivery { webhook_id, change })
    }
}

impl Change {
    pub fn record(&self) -> &Value {
        match self {
            Change::Upsert(record) | Change::Delete(record) => record,
        }
    }
}

/// The record's id as text (for a targeted read).
pub fn data_id(record: &Value) -> Option<String> {
    match record.get("id")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
        _ => None,
    }
}

/// Whether the record carries what ordering needs (id, etag, updated_at); a partial one is
/// read again from Clio before it is stored.
pub fn is_complete(resource: Resource, record: &Value) -> bool {
    let has = |field: &str| record.get(field).is_some_and(|v| !v.is_null());
    has("id") && has("updated_at") && (resource == Resource::Users || has("etag"))
}

/// What applying did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored (added or changed), or marked deleted.
    Written,
    /// Already as new or newer here (a duplicate, an out-of-order older change, a change
    /// before a deletion already stored).
    Unchanged,
}

pub async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    target: &Target<'_>,
    change: &Change,
) -> Result<Applied, RecordError> {
    let written = match change {
        Change::Upsert(record) => {
            if records::deleted_since(tx, target, record).await? {
                false
            } else {
                records::upsert_page(tx, target, std::slice::from_ref(record))
                    .await?
                    .rows
                    > 0
            }
        }
        Change::Delete(record) => records::mark_deleted_in_clio(tx, target, record).await?,
    };
    Ok(if written {
        Applied::Written
    } else {
        Applied::Unchanged
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_delivery_names_what_is_wrong_with_it() {
        let ok = br#"{"data":{"id":7,"etag":"e"},"meta":{"event":"updated","webhook_id":3}}"#;
        let delivery = Delivery::parse(ok).unwrap();
        assert_eq!(delivery.webhook_id, 3);
        assert!(matches!(delivery.change, Change::Upsert(_)));
        for (body, field) in [
            (&b"not json"[..], "body"),
            (
                br#"{"data":[],"meta":{"event":"updated","webhook_id":3}}"#,
                "data",
            ),
            (
                br#"{"data":{"id":7},"meta":{"event":"updated"}}"#,
                "meta.webhook_id",
            ),
            (
                br#"{"data":{"id":7},"meta":{"event":"exploded","webhook_id":3}}"#,
                "meta.event",
            ),
            (
                br#"{"data":{"name":"x"},"meta":{"event":"deleted","webhook_id":3}}"#,
                "data.id",
            ),
        ] {
            let error = Delivery::parse(body).unwrap_err();
            assert!(error.starts_with(field), "{field}: {error}");
        }
    }

    #[test]
    fn a_record_without_its_version_is_partial() {
        let full = json!({"id": 1, "etag": "e", "updated_at": "2026-01-01T00:00:00Z"});
        assert!(is_complete(Resource::Contacts, &full));
        assert!(!is_complete(
            Resource::Contacts,
            &json!({"id": 1, "etag": "e"})
        ));
    }
}
