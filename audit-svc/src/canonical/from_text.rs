//! The canonical text of JSON given as text (a stored payload, which Postgres prints with
//! its own key order and spacing): what [`super::canonical_value`] writes for serde_json's
//! parse of it, without building a `Value`.
//!
//! Two ways, one result. A scanner writes the common document straight from the text:
//! objects are sorted by reordering their entries' text, and strings and integers are
//! copied as they stand, since for them the canonical spelling is the text itself. Where
//! that is not certain (an escape in a string, a number other than a plain integer that
//! fits 64 bits, repeated keys, deep nesting, anything malformed) it gives up, and the
//! document is parsed with serde_json into borrowed values and written from those, which
//! also reports serde_json's own error for malformed text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

use super::{write_number, write_str};

/// Appends the canonical text of the JSON document `json` (see the module docs).
pub fn write_canonical_text(out: &mut Vec<u8>, json: &str) -> Result<(), serde_json::Error> {
    CanonicalTextWriter::default().write(out, json)
}

/// [`write_canonical_text`], keeping its working space from document to document.
#[derive(Debug, Default)]
pub struct CanonicalTextWriter {
    /// The scanner's entry lists.
    entries: Vec<Vec<Entry>>,
}

impl CanonicalTextWriter {
    pub fn write(&mut self, out: &mut Vec<u8>, json: &str) -> Result<(), serde_json::Error> {
        let start = out.len();
        let mut scanner = Scanner::new(json, std::mem::take(&mut self.entries));
        let scanned = scanner.document(out);
        self.entries = scanner.entries;
        if scanned.is_some() {
            return Ok(());
        }
        out.truncate(start);
        write_parsed(out, json)
    }
}

/// The general way: serde_json's parse, written as [`super::write_value`] writes a `Value`.
fn write_parsed(out: &mut Vec<u8>, json: &str) -> Result<(), serde_json::Error> {
    let mut document: Parsed<'_> = serde_json::from_str(json)?;
    document.write(out);
    Ok(())
}

/// Deeper documents are left to serde_json (which refuses beyond 128 levels).
const SCANNER_DEPTH: usize = 64;

/// An object entry: where its key (inside the quotes) and its value are in the text.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: (usize, usize),
    value: (usize, usize),
}

/// Writes a document straight from its text; every method returns `None` where it is not
/// certain to write what [`write_parsed`] would (see the module docs).
struct Scanner<'a> {
    text: &'a [u8],
    /// Entry lists by depth, reused from object to object.
    entries: Vec<Vec<Entry>>,
}

impl<'a> Scanner<'a> {
    /// A scanner for `json`, with entry lists from an earlier one.
    fn new(json: &'a str, entries: Vec<Vec<Entry>>) -> Self {
        Scanner {
            text: json.as_bytes(),
            entries,
        }
    }

    fn document(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let end = self.value(0, out, 0)?;
        (self.space(end) == self.text.len()).then_some(())
    }

    /// Past JSON whitespace from `at`.
    fn space(&self, mut at: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(at) {
            at += 1;
        }
        at
    }

    /// Writes the value at `at` (after whitespace); returns where it ends.
    fn value(&mut self, at: usize, out: &mut Vec<u8>, depth: usize) -> Option<usize> {
        let at = self.space(at);
        match *self.text.get(at)? {
            b'{' => self.object(at, out, depth),
            b'[' => self.array(at, out, depth),
            b'"' => {
                let end = self.string_end(at)?;
                out.extend_from_slice(&self.text[at..end]);
                Some(end)
            }
            b't' => self.literal(at, b"true", out),
            b'f' => self.literal(at, b"false", out),
            b'n' => self.literal(at, b"null", out),
            b'-' | b'0'..=b'9' => self.number(at, out),
            _ => None,
        }
    }

    /// Where the value at `at` ends, checked as [`Scanner::value`] checks it, writing nothing.
    fn skip(&self, at: usize, depth: usize) -> Option<usize> {
        let at = self.space(at);
        match *self.text.get(at)? {
            b'{' | b'[' => {
                if depth >= SCANNER_DEPTH {
                    return None;
                }
                let close = if self.text[at] == b'{' { b'}' } else { b']' };
                let mut next = self.space(at + 1);
                if self.text.get(next) == Some(&close) {
                    return Some(next + 1);
                }
                loop {
                    if close == b'}' {
                        next = self.string_end(next)?;
                        next = self.space(next);
                        if self.text.get(next) != Some(&b':') {
                            return None;
                        }
                        next += 1;
                    }
                    next = self.space(self.skip(next, depth + 1)?);
                    match *self.text.get(next)? {
                        b',' => next = self.space(next + 1),
                        b if b == close => return Some(next + 1),
                        _ => return None,
                    }
                }
            }
            b'"' => self.string_end(at),
            b't' => self.literal_end(at, b"true"),
            b'f' => self.literal_end(at, b"false"),
            b'n' => self.literal_end(at, b"null"),
            b'-' | b'0'..=b'9' => self.number_end(at).map(|(end, _)| end),
            _ => None,
        }
    }

    /// The end of the string whose opening quote is at `at`, if it holds no escape and no
    /// control character: then its text is its canonical spelling.
    fn string_end(&self, at: usize) -> Option<usize> {
        if self.text.get(at) != Some(&b'"') {
            return None;
        }
        let rest = self.text.get(at + 1..)?;
        let length = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        (rest[length] == b'"').then_some(at + 1 + length + 1)
    }

    fn literal_end(&self, at: usize, literal: &[u8]) -> Option<usize> {
        let end = at + literal.len();
        (self.text.get(at..end)? == literal).then_some(end)
    }

    fn literal(&self, at: usize, literal: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let end = self.literal_end(at, literal)?;
        out.extend_from_slice(literal);
        Some(end)
    }

    /// The end of the number at `at` by JSON's grammar, and whether it is an integer (no
    /// fraction, no exponent).
    fn number_end(&self, at: usize) -> Option<(usize, bool)> {
        let digits = |from: usize| {
            from + self.text[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let mut end = at;
        if self.text.get(end) == Some(&b'-') {
            end += 1;
        }
        match self.text.get(end)? {
            b'0' => end += 1,
            b'1'..=b'9' => end = digits(end),
            _ => return None,
        }
        let mut integer = true;
        if self.text.get(end) == Some(&b'.') {
            let fraction = digits(end + 1);
            if fraction == end + 1 {
                return None;
            }
            end = fraction;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.text.get(end) {
            end += 1;
            if let Some(b'+' | b'-') = self.text.get(end) {
                end += 1;
            }
            let exponent = digits(end);
            if exponent == end {
                return None;
            }
            end = exponent;
            integer = false;
        }
        Some((end, integer))
    }

    fn number(&self, at: usize, out: &mut Vec<u8>) -> Option<usize> {
        let (end, integer) = self.number_end(at)?;
        // ASCII digits and signs: always UTF-8.
        let token = std::str::from_utf8(&self.text[at..end]).ok()?;
        // serde_json reads an integer that fits 64 bits as one, and writes it back with the
        // same digits (the grammar has no leading zeros or plus sign); every zero is `0`.
        let fits = if token.starts_with('-') {
            token.parse::<i64>().ok().map(|value| value == 0)
        } else {
            token.parse::<u64>().ok().map(|value| value == 0)
        };
        match fits {
            Some(true) => out.push(b'0'),
            Some(false) if integer => out.extend_from_slice(token.as_bytes()),
            _ => {
                // A fraction, an exponent or a wider integer: serde_json's own reading of
                // the token (the same, alone or in a document) and the canonical writing.
                let number: Number = serde_json::from_str(token).ok()?;
                write_number(out, &number);
            }
        }
        Some(end)
    }

    fn array(&mut self, at: usize, out: &mut Vec<u8>, depth: usize) -> Option<usize> {
        if depth >= SCANNER_DEPTH {
            return None;
        }
        out.push(b'[');
        let mut next = self.space(at + 1);
        if self.text.get(next) == Some(&b']') {
            out.push(b']');
            return Some(next + 1);
        }
        loop {
            let end = self.value(next, out, depth + 1)?;
            next = self.space(end);
            match *self.text.get(next)? {
                b',' => {
                    out.push(b',');
                    next += 1;
                }
                b']' => {
                    out.push(b']');
                    return Some(next + 1);
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, at: usize, out: &mut Vec<u8>, depth: usize) -> Option<usize> {
        if depth >= SCANNER_DEPTH {
            return None;
        }
        if self.entries.len() <= depth {
            self.entries.resize_with(depth + 1, Vec::new);
        }
        let mut entries = std::mem::take(&mut self.entries[depth]);
        entries.clear();
        let end = self.object_entries(at, depth, &mut entries);
        let written = end.and_then(|end| {
            self.write_entries(&mut entries, out, depth)?;
            Some(end)
        });
        self.entries[depth] = entries;
        written
    }

    /// Finds the entries of the object at `at`; returns where it ends.
    fn object_entries(
        &mut self,
        at: usize,
        depth: usize,
        entries: &mut Vec<Entry>,
    ) -> Option<usize> {
        let mut next = self.space(at + 1);
        if self.text.get(next) == Some(&b'}') {
            return Some(next + 1);
        }
        loop {
            let key_end = self.string_end(next)?;
            let colon = self.space(key_end);
            if self.text.get(colon) != Some(&b':') {
                return None;
            }
            let value = self.space(colon + 1);
            let value_end = self.skip(value, depth + 1)?;
            entries.push(Entry {
                key: (next + 1, key_end - 1),
                value: (value, value_end),
            });
            next = self.space(value_end);
            match *self.text.get(next)? {
                b',' => next = self.space(next + 1),
                b'}' => return Some(next + 1),
                _ => return None,
            }
        }
    }

    /// Writes `entries` sorted by key; a repeated key is left to serde_json's reading.
    fn write_entries(
        &mut self,
        entries: &mut [Entry],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Option<()> {
        let text = self.text;
        let key = |entry: &Entry| &text[entry.key.0..entry.key.1];
        entries.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        if entries
            .windows(2)
            .any(|pair| key(&pair[0]) == key(&pair[1]))
        {
            return None;
        }
        out.push(b'{');
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // The key's text, quotes included, is its canonical spelling (see string_end).
            out.extend_from_slice(&text[entry.key.0 - 1..=entry.key.1]);
            out.push(b':');
            let (start, end) = entry.value;
            match text[start] {
                // Strings and literals, as `skip` checked them: their text is canonical.
                b'"' | b't' | b'f' | b'n' => out.extend_from_slice(&text[start..end]),
                _ => {
                    self.value(start, out, depth + 1)?;
                }
            }
        }
        out.push(b'}');
        Some(())
    }
}

/// A parsed JSON document whose strings borrow from the text where they can; objects keep
/// their entries in document order until written.
enum Parsed<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Parsed<'a>>),
    Object(Vec<(Cow<'a, str>, Parsed<'a>)>),
}

impl Parsed<'_> {
    /// [`write_value`] of the same document.
    fn write(&mut self, out: &mut Vec<u8>) {
        match self {
            Parsed::Null => out.extend_from_slice(b"null"),
            Parsed::Bool(true) => out.extend_from_slice(b"true"),
            Parsed::Bool(false) => out.extend_from_slice(b"false"),
            Parsed::Number(number) => write_number(out, number),
            Parsed::String(text) => write_str(out, text),
            Parsed::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter_mut().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Parsed::Object(entries) => {
                // A stable sort keeps a repeated key's entries in document order: the last
                // of each run is the one a map keeps.
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'{');
                let mut first = true;
                for i in 0..entries.len() {
                    if entries
                        .get(i + 1)
                        .is_some_and(|next| next.0 == entries[i].0)
                    {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    let (key, item) = &mut entries[i];
                    write_str(out, key);
                    out.push(b':');
                    item.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl<'de> Deserialize<'de> for Parsed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor)
    }
}

/// What [`Value`]'s own visitor does, keeping borrowed strings borrowed.
struct ParsedVisitor;

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Parsed<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_unit<E>(self) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Parsed<'de>, E> {
        Ok(Parsed::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Parsed<'de>, E> {
        Ok(Number::from_f64(value).map_or(Parsed::Null, Parsed::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Parsed<'de>, E> {
        Ok(Parsed::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Parsed<'de>, E> {
        Ok(Parsed::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Parsed<'de>, E> {
        Ok(Parsed::String(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Parsed::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Parsed::Object(entries))
    }
}

/// An object key, borrowed where it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value)))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::{Map, Value, json};

    use super::*;
    use crate::canonical::canonical_value;

    /// Both ways, and serde_json's `Value`, agree on `json` (or all refuse it). True if the
    /// scanner wrote it.
    #[track_caller]
    fn agree(json: &str) -> bool {
        let mut scanned = Vec::new();
        let scanner = Scanner::new(json, Vec::new()).document(&mut scanned);
        let mut parsed = Vec::new();
        let general = write_parsed(&mut parsed, json);
        let value = serde_json::from_str::<Value>(json);
        match (general, value) {
            (Ok(()), Ok(value)) => {
                assert_eq!(
                    String::from_utf8(parsed.clone()).unwrap(),
                    canonical_value(&value),
                    "{json}"
                );
                if scanner.is_some() {
                    assert_eq!(scanned, parsed, "{json}");
                }
                let mut combined = Vec::new();
                write_canonical_text(&mut combined, json).unwrap();
                assert_eq!(combined, parsed, "{json}");
            }
            (Err(_), Err(_)) => {
                assert_eq!(scanner, None, "{json}");
                assert!(
                    write_canonical_text(&mut Vec::new(), json).is_err(),
                    "{json}"
                );
            }
            (general, value) => panic!("{json}: {general:?} against {value:?}"),
        }
        scanner.is_some()
    }

    #[test]
    fn the_scanner_writes_what_the_parse_writes() {
        let inputs = [
            r#"{"b": 1, "a": {"z": [true, null, "x"], "y": 2.5}}"#,
            r#"{"lease_count": 7, "job_id": "job-7", "records": 49, "purposes": ["import:contacts", "import:matters"], "last_used_at": "2025-01-01T01:00:00Z", "first_used_at": "2025-01-01T00:00:00Z"}"#,
            r#"{"n": [0, -0, 0.0, -0.0, 0e5, 1, -1, 10, 1.0, 1.5, -2.25e-3, 1E300, 1e20, 123456789012345678]}"#,
            r#"[18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809]"#,
            r#"{"": 1, "a": 2, "aa": 3, "ab": 4, "b": 5, "Z": 6, "é": 7, "😀": 8, "é": 9}"#,
            r#"{"esc\"aped": "a\nb", "plain": "tab	inside"}"#,
            r#"{"dup": 1, "dup": 2}"#,
            r#"  {"spaced" :	[ 1 , 2 ] ,"x":{ } , "y" : [ ] }  "#,
            r#""just a string""#,
            "true",
            "null",
            "-5",
            "",
            " ",
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[+1]",
            "[-]",
            "[tru]",
            "[nul]",
            r#"{"a":1}x"#,
            r#"{"a":1} {"#,
            r#"["\ud800"]"#,
            "[1,2]]",
            "[1e400]",
            r#"{1: 2}"#,
        ];
        let scanned = inputs.iter().filter(|input| agree(input)).count();
        assert_eq!(scanned, 9);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        agree(&deep);
        let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        agree(&too_deep);
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(70), "}".repeat(70));
        agree(&deep_objects);
    }

    fn random_string(rng: &mut StdRng) -> String {
        const PIECES: [&str; 12] = [
            "a", "b", "key", "Z", "é", "😀", " ", "\"", "\\", "\n", "\u{1}", "/",
        ];
        let length = rng.gen_range(0..4);
        (0..length)
            .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
            .collect()
    }

    fn random_value(rng: &mut StdRng, depth: u32) -> Value {
        let pick = if depth >= 4 {
            rng.gen_range(0..6)
        } else {
            rng.gen_range(0..8)
        };
        match pick {
            0 => Value::Null,
            1 => Value::Bool(rng.gen_bool(0.5)),
            2 => json!(rng.gen_range(i64::MIN..=i64::MAX) >> rng.gen_range(0..64)),
            3 => json!(rng.gen_range(0..=u64::MAX)),
            4 => json!(
                f64::from(rng.gen_range(-1000..1000)) / 8.0 * 10f64.powi(rng.gen_range(-30..30))
            ),
            5 => Value::String(random_string(rng)),
            6 => Value::Array(
                (0..rng.gen_range(0..4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            _ => Value::Object(
                (0..rng.gen_range(0..5))
                    .map(|_| (random_string(rng), random_value(rng, depth + 1)))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }

    #[test]
    fn random_documents_are_written_alike_in_every_spacing() {
        let mut rng = StdRng::seed_from_u64(16);
        let mut scanned = 0;
        for _ in 0..2_000 {
            let value = random_value(&mut rng, 0);
            let compact = serde_json::to_string(&value).unwrap();
            if agree(&compact) {
                scanned += 1;
            }
            agree(&serde_json::to_string_pretty(&value).unwrap());
            // Postgres' spacing: ", " and ": ".
            agree(&compact.replace(',', ", ").replace(':', ": "));
        }
        // Both ways were compared often.
        assert!((500..1_900).contains(&scanned), "{scanned}");
    }
}
