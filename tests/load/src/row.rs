//! One line of the benchmark report: a figure, the reference measured beside it in the same
//! run, their ratio and the target. Absolute figures drift between runs on shared
//! machines; the ratio to a reference taken in the same minute is what is compared.

use serde::{Deserialize, Serialize};

/// What a row is held against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// figure / reference ≥ `min`.
    RatioAtLeast { min: f64 },
    /// figure / reference ≤ `max` (a time against the reference's time).
    RatioAtMost { max: f64 },
    /// figure ≥ `min` in the row's unit.
    FigureAtLeast { min: f64 },
    /// figure < `max` in the row's unit.
    FigureBelow { max: f64 },
    /// figure ≤ `max` in the row's unit.
    FigureAtMost { max: f64 },
    /// Reported, no target.
    Reported,
}

impl Target {
    /// Whether `figure` (and `ratio`, when the target is one) meets the target; `None` when
    /// there is nothing to meet.
    pub fn met(self, figure: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::RatioAtLeast { min } => ratio.map(|r| r >= min),
            Target::RatioAtMost { max } => ratio.map(|r| r <= max),
            Target::FigureAtLeast { min } => Some(figure >= min),
            Target::FigureBelow { max } => Some(figure < max),
            Target::FigureAtMost { max } => Some(figure <= max),
            Target::Reported => None,
        }
    }

    pub fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast { min } => format!("≥ {}×", trim(min)),
            Target::RatioAtMost { max } => format!("≤ {}×", trim(max)),
            Target::FigureAtLeast { min } => format!("≥ {} {unit}", trim(min)),
            Target::FigureBelow { max } => format!("< {} {unit}", trim(max)),
            Target::FigureAtMost { max } => format!("≤ {} {unit}", trim(max)),
            Target::Reported => "reported".to_owned(),
        }
    }
}

/// The reference a figure is compared with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Which path was measured, e.g. `import: queue → sim → Postgres`.
    pub path: String,
    pub figure: f64,
    pub unit: String,
    pub reference: Option<Reference>,
    /// figure / reference.
    pub ratio: Option<f64>,
    pub target: Target,
    pub target_text: String,
    pub met: Option<bool>,
    /// The command that measures this row alone.
    pub command: String,
    /// Sizes, conditions and caveats a reader needs to weigh the figure.
    pub note: String,
}

impl Row {
    pub fn new(path: impl Into<String>, figure: f64, unit: impl Into<String>) -> Row {
        let unit = unit.into();
        Row {
            path: path.into(),
            figure,
            target_text: Target::Reported.describe(&unit),
            unit,
            reference: None,
            ratio: None,
            target: Target::Reported,
            met: None,
            command: String::new(),
            note: String::new(),
        }
    }

    /// Compares with `value` (same unit as the figure unless `unit` differs).
    pub fn against(mut self, name: impl Into<String>, value: f64, unit: impl Into<String>) -> Row {
        self.ratio = (value > 0.0).then(|| self.figure / value);
        self.reference = Some(Reference {
            name: name.into(),
            value,
            unit: unit.into(),
        });
        let target = self.target;
        self.target(target)
    }

    pub fn target(mut self, target: Target) -> Row {
        self.target = target;
        self.target_text = target.describe(&self.unit);
        self.met = target.met(self.figure, self.ratio);
        self
    }

    pub fn command(mut self, command: impl Into<String>) -> Row {
        self.command = command.into();
        self
    }

    /// Adds `note` after any note the row has (an empty one adds nothing).
    pub fn note(mut self, note: impl Into<String>) -> Row {
        let note = note.into();
        if !note.is_empty() {
            if !self.note.is_empty() {
                self.note.push_str("; ");
            }
            self.note.push_str(&note);
        }
        self
    }
}

/// A number for people: no decimals at ≥ 100, two significant decimals below.
pub fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        group_thousands(value.round())
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

fn group_thousands(value: f64) -> String {
    let digits = format!("{}", value.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

fn trim(value: f64) -> String {
    let text = format!("{value}");
    text.trim_end_matches(".0").to_owned()
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "—",
    }
}

/// The cells of a row, in the order of [`HEADERS`].
pub fn cells(row: &Row) -> [String; 6] {
    let reference = row.reference.as_ref().map_or_else(
        || "—".to_owned(),
        |r| format!("{} {} ({})", number(r.value), r.unit, r.name),
    );
    [
        row.path.clone(),
        format!("{} {}", number(row.figure), row.unit),
        reference,
        row.ratio
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×")),
        row.target_text.clone(),
        met_text(row.met).to_owned(),
    ]
}

pub const HEADERS: [&str; 6] = ["path", "figure", "reference", "ratio", "target", "met?"];

/// The rows as an aligned plain-text table, notes under it.
pub fn table(rows: &[Row]) -> String {
    let body: Vec<[String; 6]> = rows.iter().map(cells).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for cells in &body {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = line(&HEADERS.map(str::to_owned));
    out.push('\n');
    for cells in &body {
        out.push_str(&line(cells));
        out.push('\n');
    }
    for row in rows.iter().filter(|r| !r.note.is_empty()) {
        out.push_str(&format!("  {}: {}\n", row.path, row.note));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_add_up_and_empty_ones_add_nothing() {
        let row = Row::new("verify", 3.8, "s")
            .note("1000 checkpoints")
            .note("")
            .note("limit: the scan alone takes 5.4 s");
        assert_eq!(
            row.note,
            "1000 checkpoints; limit: the scan alone takes 5.4 s"
        );
    }

    #[test]
    fn a_ratio_target_is_met_on_the_ratio() {
        let row = Row::new("import", 30_000.0, "records/s")
            .against("script", 10_000.0, "records/s")
            .target(Target::RatioAtLeast { min: 3.0 });
        assert_eq!(row.met, Some(true));
        assert_eq!(row.target_text, "≥ 3×");
        let row = row.target(Target::RatioAtLeast { min: 3.5 });
        assert_eq!(row.met, Some(false));
    }

    #[test]
    fn numbers_are_readable() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(12.345), "12.35");
        assert_eq!(number(0.01234), "0.012");
    }
}
