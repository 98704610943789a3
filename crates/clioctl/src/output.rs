//! Printing results as an aligned table, JSON or CSV, and the small conversions of wire
//! values (enums, timestamps, scopes) into text.

use std::io::Write;

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// A JSON array of objects (one object for single results).
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Rows of named columns; cells are JSON values so `--output json` keeps numbers and
/// booleans typed.
pub struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<Value>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                Value::Object(
                    self.columns
                        .iter()
                        .zip(row)
                        .map(|(column, cell)| ((*column).to_owned(), cell.clone()))
                        .collect(),
                )
            })
            .collect()
    }

    /// Prints every row; JSON is an array.
    pub fn print(&self, format: Format) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match format {
            Format::Json => writeln!(out, "{}", Value::Array(self.objects()))?,
            Format::Csv => self.write_csv(&mut out)?,
            Format::Table => self.write_table(&mut out)?,
        }
        Ok(())
    }

    /// Prints the single row as one object (JSON) or as `column: value` lines (table).
    pub fn print_one(&self, format: Format) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match format {
            Format::Json => {
                let object = self.objects().into_iter().next().unwrap_or(Value::Null);
                writeln!(out, "{object}")?;
            }
            Format::Csv => self.write_csv(&mut out)?,
            Format::Table => {
                let width = self.columns.iter().map(|c| c.len()).max().unwrap_or(0);
                for row in &self.rows {
                    for (column, cell) in self.columns.iter().zip(row) {
                        writeln!(out, "{column:<width$}  {}", text(cell))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn write_csv(&self, out: &mut impl Write) -> std::io::Result<()> {
        let header: Vec<String> = self.columns.iter().map(|c| csv_field(c)).collect();
        writeln!(out, "{}", header.join(","))?;
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|cell| csv_field(&text(cell))).collect();
            writeln!(out, "{}", cells.join(","))?;
        }
        Ok(())
    }

    fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        if self.rows.is_empty() {
            return writeln!(out, "(none)");
        }
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(|cell| one_line(&text(cell))).collect())
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([column.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |out: &mut dyn Write, values: Vec<&str>| -> std::io::Result<()> {
            let padded: Vec<String> = values
                .iter()
                .zip(&widths)
                .map(|(value, width)| format!("{value:<width$}"))
                .collect();
            writeln!(out, "{}", padded.join("  ").trim_end())
        };
        line(
            out,
            self.columns
                .iter()
                .map(|c| c.to_uppercase())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect(),
        )?;
        for row in &cells {
            line(out, row.iter().map(String::as_str).collect())?;
        }
        Ok(())
    }
}

/// A cell as text: strings bare, lists joined with spaces, null empty.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// Control characters (a hostile name, a newline in a reason) shown escaped so one row
/// stays one line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

pub fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `JOB_STATUS_COMPLETED` → `completed`.
pub fn enum_text(name: Option<&'static str>, prefix: &str) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => "?".to_owned(),
    }
}

pub fn job_status(code: i32) -> String {
    enum_text(
        proto::imports::v1::JobStatus::try_from(code)
            .ok()
            .map(|s| s.as_str_name()),
        "JOB_STATUS_",
    )
}

pub fn tier(code: i32) -> String {
    enum_text(
        proto::common::v1::RiskTier::try_from(code)
            .ok()
            .map(|s| s.as_str_name()),
        "RISK_TIER_",
    )
}

pub fn region(code: i32) -> String {
    enum_text(
        proto::common::v1::Region::try_from(code)
            .ok()
            .map(|s| s.as_str_name()),
        "REGION_",
    )
}

/// RFC 3339 in UTC, or null when unset.
pub fn time(timestamp: Option<&prost_types::Timestamp>) -> Value {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}

/// `["contacts:read", "matters:write"]`.
pub fn scopes(scopes: &[proto::common::v1::Scope]) -> Value {
    Value::Array(
        scopes
            .iter()
            .map(|s| {
                let access = enum_text(
                    proto::common::v1::Access::try_from(s.access)
                        .ok()
                        .map(|a| a.as_str_name()),
                    "ACCESS_",
                );
                Value::String(format!("{}:{access}", s.family))
            })
            .collect(),
    )
}

pub fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// Parses an RFC 3339 time argument.
pub fn parse_time(text: &str) -> Result<prost_types::Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time (2026-01-31T09:00:00Z): {e}"))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    })
}

/// Where an export goes: the file at `path` (created, or replaced), else standard output.
/// A file that cannot be created is a usage error naming it.
pub fn sink(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
            crate::exit::Failure::new(
                crate::exit::code::USAGE,
                format!("cannot create {}: {e}", path.display()),
            )
        })?),
        None => Box::new(std::io::stdout().lock()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }

    #[test]
    fn json_keeps_types_and_table_text_flattens_lists() {
        let mut table = Table::new(&["id", "count", "scopes"]);
        table.row(vec![
            json_str("j1"),
            Value::from(3),
            strings(&["a:read".into(), "b:write".into()]),
        ]);
        let objects = table.objects();
        assert_eq!(objects[0]["count"], 3);
        assert_eq!(objects[0]["scopes"][1], "b:write");
        assert_eq!(text(&objects[0]["scopes"]), "a:read b:write");
        assert_eq!(text(&Value::Null), "");
    }

    fn json_str(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    #[test]
    fn control_characters_stay_on_one_line() {
        assert_eq!(one_line("a\nb\u{0}"), "a\\nb\\u{0}");
    }

    #[test]
    fn enum_names_lose_their_prefix() {
        assert_eq!(
            job_status(proto::imports::v1::JobStatus::DeadLettered as i32),
            "dead_lettered"
        );
        assert_eq!(job_status(99), "?");
        assert_eq!(
            tier(proto::common::v1::RiskTier::VeryHigh as i32),
            "very_high"
        );
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let parsed = parse_time("2026-01-31T09:00:00Z").unwrap();
        assert_eq!(time(Some(&parsed)), "2026-01-31T09:00:00Z");
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }
}
