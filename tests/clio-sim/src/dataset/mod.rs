//! One region's records: generated on demand, plus an overlay of edits.
//!
//! Nothing is materialised up front. A record is generated when it is read, unless the
//! overlay holds an edited copy or a deletion mark for its key, so a million contacts cost
//! only what the edits cost.

mod generate;
mod rng;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value};

pub(crate) use generate::DATA_EPOCH;
pub(crate) use rng::{Rng, mix};
pub(crate) use schema::{Schema, Shape, schema};

use crate::config::{DatasetSize, Region};
use crate::resource::{RecordId, Resource};
use generate::{Generator, key};

/// `None` marks a deleted record.
type Overlay = BTreeMap<i64, Option<Arc<Value>>>;

#[derive(Debug)]
pub(crate) struct Dataset {
    generator: Generator,
    seed: u64,
    /// Which account (1-based) these records are: webhook subscriptions hear only their
    /// own account's changes.
    account: u32,
    overlays: [RwLock<Overlay>; 5],
    edits: AtomicU64,
    /// Raw JSON texts served verbatim in list pages instead of the record with that key
    /// (admin `PUT /__sim/records/{resource}/{id}/raw`): hostile data no `Value` can hold.
    raw: RwLock<HashMap<(usize, i64), Arc<str>>>,
    /// Keys of the activities created through `POST /api/v4/activities`, in order (admin
    /// `GET /__sim/activities/created`): few, so kept apart from the overlay.
    created_through_api: RwLock<Vec<i64>>,
}

/// Why an admin or API edit could not be applied.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EditError {
    BadId(String),
    NotObject,
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EditError::BadId(id) => write!(f, "{id} is not a valid id for this resource"),
            EditError::NotObject => f.write_str("a record must be a JSON object"),
        }
    }
}

impl Dataset {
    /// The records of `account` (1-based) of `region`.
    pub(crate) fn new(seed: u64, region: Region, account: u32, sizes: DatasetSize) -> Dataset {
        Dataset {
            generator: Generator::new(seed, region, account, sizes),
            seed,
            account,
            overlays: Default::default(),
            edits: AtomicU64::new(0),
            raw: RwLock::default(),
            created_through_api: RwLock::default(),
        }
    }

    /// The account (1-based) these records belong to.
    pub(crate) fn account(&self) -> u32 {
        self.account
    }

    fn overlay(&self, resource: Resource) -> RwLockReadGuard<'_, Overlay> {
        self.overlays[resource.slot()]
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn overlay_mut(&self, resource: Resource) -> RwLockWriteGuard<'_, Overlay> {
        self.overlays[resource.slot()]
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The generated index behind `key`, if `key` is in the generated range.
    fn generated_index(&self, resource: Resource, key: i64) -> Option<u64> {
        let index = u64::try_from(key - resource.id_base()).ok()?;
        (index >= 1 && index <= self.generator.size(resource)).then_some(index)
    }

    /// The live record with this ordering key.
    pub(crate) fn get(&self, resource: Resource, key: i64) -> Option<Value> {
        if let Some(entry) = self.overlay(resource).get(&key) {
            return entry.as_deref().cloned();
        }
        self.generated_index(resource, key)
            .map(|index| self.generator.record(resource, index))
    }

    /// The live record with this wire id (for calendar entries the whole string must match,
    /// recurrence suffix included).
    pub(crate) fn find(&self, resource: Resource, id: &RecordId) -> Option<Value> {
        let record = self.get(resource, id.key()?)?;
        let stored = RecordId::from(record.get("id")?);
        let matches = if resource.has_string_ids() {
            stored.to_string() == id.to_string()
        } else {
            stored.key() == id.key()
        };
        matches.then_some(record)
    }

    /// Visits live records with key greater than `after`, in key order, until `visit`
    /// returns false.
    pub(crate) fn scan(
        &self,
        resource: Resource,
        after: Option<i64>,
        mut visit: impl FnMut(i64, Value) -> bool,
    ) {
        let overlay = self.overlay(resource);
        let base = resource.id_base();
        let last_generated = key(resource, self.generator.size(resource));
        let mut next_generated = after
            .map_or(base + 1, |a| a.saturating_add(1))
            .max(base + 1);
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut edits = overlay.range((lower, Bound::Unbounded)).peekable();
        loop {
            let generated = (next_generated <= last_generated).then_some(next_generated);
            let edited = edits.peek().map(|(k, _)| **k);
            let (key, record) = match (generated, edited) {
                (None, None) => return,
                (Some(g), Some(e)) if e <= g => {
                    if e == g {
                        next_generated += 1;
                    }
                    let Some((_, entry)) = edits.next() else {
                        return;
                    };
                    match entry {
                        Some(record) => (e, Value::clone(record)),
                        None => continue,
                    }
                }
                (None, Some(e)) => {
                    let Some((_, entry)) = edits.next() else {
                        return;
                    };
                    match entry {
                        Some(record) => (e, Value::clone(record)),
                        None => continue,
                    }
                }
                (Some(g), _) => {
                    next_generated += 1;
                    let index = u64::try_from(g - base).unwrap_or(0);
                    (g, self.generator.record(resource, index))
                }
            };
            if !visit(key, record) {
                return;
            }
        }
    }

    /// Like [`Dataset::scan`] over activities, but visiting only those that can link the
    /// calendar entry `entry`: every edited or created activity, and the one generated
    /// activity that can (generated activity `i` is the time entry of calendar entry `i`,
    /// when that entry is billed). The caller still filters on the link itself.
    pub(crate) fn scan_activities_of_entry(
        &self,
        entry: &RecordId,
        after: Option<i64>,
        mut visit: impl FnMut(i64, Value) -> bool,
    ) {
        let resource = Resource::Activities;
        let overlay = self.overlay(resource);
        let mut candidate = entry
            .key()
            .and_then(|entry| u64::try_from(entry - Resource::CalendarEntries.id_base()).ok())
            .map(|index| key(resource, index))
            .and_then(|key| Some((key, self.generated_index(resource, key)?)))
            .filter(|(key, _)| after.is_none_or(|after| *key > after))
            .filter(|(key, _)| !overlay.contains_key(key));
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (edited, record) in overlay.range((lower, Bound::Unbounded)) {
            if let Some((key, index)) = candidate.filter(|(key, _)| key < edited) {
                candidate = None;
                if !visit(key, self.generator.record(resource, index)) {
                    return;
                }
            }
            if let Some(record) = record
                && !visit(*edited, Value::clone(record))
            {
                return;
            }
        }
        if let Some((key, index)) = candidate {
            visit(key, self.generator.record(resource, index));
        }
    }

    /// Live records right now: generated, minus deleted, plus created.
    pub(crate) fn count(&self, resource: Resource) -> u64 {
        let overlay = self.overlay(resource);
        let mut count = self.generator.size(resource);
        for (key, entry) in overlay.iter() {
            let generated = self.generated_index(resource, *key).is_some();
            match (generated, entry.is_some()) {
                (true, false) => count = count.saturating_sub(1),
                (false, true) => count += 1,
                _ => {}
            }
        }
        count
    }

    /// Merges `patch` into the record it names (by `id`), or creates it. Without an `id` a
    /// new record gets the next free id. `updated_at` and `etag` are bumped unless the patch
    /// sets them.
    pub(crate) fn upsert(
        &self,
        resource: Resource,
        patch: Value,
        now: DateTime<Utc>,
    ) -> Result<Value, EditError> {
        let Value::Object(patch) = patch else {
            return Err(EditError::NotObject);
        };
        let key = match patch.get("id") {
            None | Some(Value::Null) => None,
            Some(id) => Some(
                RecordId::from(id)
                    .key()
                    .ok_or_else(|| EditError::BadId(id.to_string()))?,
            ),
        };
        match key {
            Some(key) => Ok(self.write(resource, key, &patch, now, true)),
            None => Ok(self.create(resource, patch, now)),
        }
    }

    /// Applies `patch` to an existing record; `None` if there is none.
    pub(crate) fn update(
        &self,
        resource: Resource,
        key: i64,
        patch: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Option<Value> {
        self.get(resource, key)?;
        Some(self.write(resource, key, patch, now, false))
    }

    /// Creates a record with the next free id.
    pub(crate) fn create(
        &self,
        resource: Resource,
        mut fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Value {
        let mut overlay = self.overlay_mut(resource);
        let generated_end = key(resource, self.generator.size(resource));
        let key = overlay
            .last_key_value()
            .map_or(generated_end, |(last, _)| (*last).max(generated_end))
            + 1;
        let id = if resource.has_string_ids() {
            Value::String(key.to_string())
        } else {
            Value::from(key)
        };
        fields.insert("id".to_owned(), id);
        let given = Given::of(&fields);
        let record = self.stamp(resource, key, given, fields, now);
        overlay.insert(key, Some(Arc::new(record.clone())));
        record
    }

    /// Creates an activity as `POST /api/v4/activities` does, remembering it among the
    /// activities created through the API.
    pub(crate) fn create_through_api(
        &self,
        fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Value {
        let record = self.create(Resource::Activities, fields, now);
        if let Some(key) = record.get("id").and_then(Value::as_i64) {
            self.created_through_api
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(key);
        }
        record
    }

    /// The activities created through `POST /api/v4/activities` that still exist, as stored
    /// now (later edits included), oldest first.
    pub(crate) fn created_through_api(&self) -> Vec<Value> {
        let keys = self
            .created_through_api
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        keys.into_iter()
            .filter_map(|key| self.get(Resource::Activities, key))
            .collect()
    }

    fn write(
        &self,
        resource: Resource,
        key: i64,
        patch: &Map<String, Value>,
        now: DateTime<Utc>,
        allow_create: bool,
    ) -> Value {
        let mut overlay = self.overlay_mut(resource);
        let existing = match overlay.get(&key) {
            Some(entry) => entry.as_deref().cloned(),
            None => self
                .generated_index(resource, key)
                .map(|index| self.generator.record(resource, index)),
        };
        let mut fields = match existing {
            Some(Value::Object(fields)) => fields,
            _ if allow_create => {
                let mut fields = Map::new();
                let id = if resource.has_string_ids() {
                    Value::String(key.to_string())
                } else {
                    Value::from(key)
                };
                fields.insert("id".to_owned(), id);
                fields
            }
            _ => Map::new(),
        };
        for (name, value) in patch {
            fields.insert(name.clone(), value.clone());
        }
        let record = self.stamp(resource, key, Given::of(patch), fields, now);
        overlay.insert(key, Some(Arc::new(record.clone())));
        record
    }

    /// Sets `etag`, `updated_at` (and `created_at` on new records) unless the edit gave
    /// them, and fills the schema's missing fields with null.
    fn stamp(
        &self,
        resource: Resource,
        key: i64,
        given: Given,
        mut fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Value {
        if !given.updated_at {
            // Never move backwards, and never before generated history ends, so an edit
            // is always visible to `updated_since` of any earlier sync.
            let floor = fields
                .get("updated_at")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc) + TimeDelta::seconds(1));
            let epoch = DateTime::from_timestamp(DATA_EPOCH + 1, 0).unwrap_or_default();
            // Rounded up to whole seconds (Clio's precision), so the stamp is never earlier
            // than a sync time a test took just before the edit.
            let now = DateTime::from_timestamp(
                now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0),
                0,
            )
            .unwrap_or(now);
            let stamp = [Some(now), floor, Some(epoch)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(now);
            fields.insert(
                "updated_at".to_owned(),
                Value::String(stamp.to_rfc3339_opts(SecondsFormat::Secs, false)),
            );
        }
        if fields.get("created_at").is_none_or(Value::is_null) {
            let created = fields.get("updated_at").cloned().unwrap_or(Value::Null);
            fields.insert("created_at".to_owned(), created);
        }
        if !given.etag {
            let edit = self.edits.fetch_add(1, Ordering::Relaxed) + 1;
            let key_bits = u64::from_ne_bytes(key.to_ne_bytes());
            let high = mix(self.seed, 1_000 + edit, key_bits);
            let low = mix(self.seed ^ edit, 2_000, key_bits);
            fields.insert(
                "etag".to_owned(),
                Value::String(format!("\"{high:016x}{low:016x}\"")),
            );
        }
        for (name, _) in schema(resource) {
            if !fields.contains_key(*name) {
                fields.insert((*name).to_owned(), Value::Null);
            }
        }
        Value::Object(fields)
    }

    /// From now on list pages show `text` (any JSON text, served as is, whatever `fields`
    /// asks for) in place of the record with this key; false if there is no such record.
    /// Filters and paging still see the record itself.
    pub(crate) fn set_raw(&self, resource: Resource, key: i64, text: &str) -> bool {
        if self.get(resource, key).is_none() {
            return false;
        }
        self.raw
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((resource.slot(), key), Arc::from(text));
        true
    }

    /// The raw text set for this record, if any.
    pub(crate) fn raw(&self, resource: Resource, key: i64) -> Option<Arc<str>> {
        let raw = self.raw.read().unwrap_or_else(PoisonError::into_inner);
        if raw.is_empty() {
            return None;
        }
        raw.get(&(resource.slot(), key)).cloned()
    }

    /// Marks a record deleted; false if it did not exist.
    pub(crate) fn delete(&self, resource: Resource, key: i64) -> bool {
        if self.get(resource, key).is_none() {
            return false;
        }
        self.raw
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(resource.slot(), key));
        let mut overlay = self.overlay_mut(resource);
        if self.generated_index(resource, key).is_some() {
            overlay.insert(key, None);
        } else {
            overlay.remove(&key);
        }
        true
    }
}

/// Which bookkeeping fields an edit set itself.
#[derive(Clone, Copy, Debug)]
struct Given {
    updated_at: bool,
    etag: bool,
}

impl Given {
    fn of(patch: &Map<String, Value>) -> Given {
        let set = |name: &str| patch.get(name).is_some_and(|v| !v.is_null());
        Given {
            updated_at: set("updated_at"),
            etag: set("etag"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn linked_entry(record: &Value) -> Option<String> {
        let id = record.get("calendar_entry")?.get("id")?;
        Some(RecordId::from(id).to_string())
    }

    fn ids(data: &Dataset, resource: Resource) -> Vec<RecordId> {
        let mut ids = Vec::new();
        data.scan(resource, None, |_, record| {
            ids.push(RecordId::from(&record["id"]));
            true
        });
        ids
    }

    #[test]
    fn activities_of_a_calendar_entry_are_those_a_full_scan_finds() {
        let data = Dataset::new(3, Region::Us, 1, DatasetSize::uniform(120));
        let now = DateTime::from_timestamp(DATA_EPOCH + 100, 0).unwrap();
        let entries = ids(&data, Resource::CalendarEntries);
        let billed: Vec<i64> = {
            let mut keys = Vec::new();
            data.scan(Resource::Activities, None, |key, record| {
                if linked_entry(&record).is_some() {
                    keys.push(key);
                }
                true
            });
            keys
        };
        assert!(billed.len() > 5, "{billed:?}");
        // An edit that links another entry, a created entry, and a deleted billed one.
        let relinked = json!({"calendar_entry": {"id": entries[4].to_string()}});
        let Value::Object(relinked) = relinked else {
            unreachable!()
        };
        data.update(
            Resource::Activities,
            key(Resource::Activities, 2),
            &relinked,
            now,
        )
        .unwrap();
        let created =
            json!({"type": "TimeEntry", "calendar_entry": {"id": entries[8].to_string()}});
        let Value::Object(created) = created else {
            unreachable!()
        };
        data.create_through_api(created, now);
        assert!(data.delete(Resource::Activities, billed[0]));

        for entry in &entries {
            let wanted = Some(entry.to_string());
            let mut full = Vec::new();
            data.scan(Resource::Activities, None, |key, record| {
                if linked_entry(&record) == wanted {
                    full.push(key);
                }
                true
            });
            let mut sparse = Vec::new();
            data.scan_activities_of_entry(entry, None, |key, record| {
                if linked_entry(&record) == wanted {
                    sparse.push(key);
                }
                true
            });
            assert_eq!(sparse, full, "{entry}");
        }
        assert_eq!(data.created_through_api().len(), 1);
    }
}
