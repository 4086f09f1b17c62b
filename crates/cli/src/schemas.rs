//! `eye schemas`: check a directory of event-type schemas before a deploy, try a file of
//! events against it, and ask the running workers to reload theirs.

use std::fmt::Write as _;
use std::io::{BufRead, Read as _};
use std::path::Path;

use eye_core::{FieldError, Settings};
use eye_worker::validation::Registry;
use eye_worker::validation::schema::{self, SchemaErrors};
use sea_orm::DatabaseConnection;

/// Exit status of `eye schemas test` when a line would be refused.
pub const REFUSED: i32 = 1;
/// Exit status when the directory or the file cannot be used at all.
pub const UNUSABLE: i32 = 2;

/// The types a directory declares, one a line, and what it passed over; or every file at
/// fault. Names longer than `max_name_chars` are refused, as the workers refuse them.
pub fn check(settings: &Settings, dir: &Path) -> Result<String, SchemaErrors> {
    let loaded = schema::load(dir, schema::max_label_chars(settings))?;
    let builtin = Registry::builtin(&Settings::default()).types();
    let mut out = String::new();
    for loaded in &loaded.types {
        let adds = builtin
            .iter()
            .any(|t| t.category == loaded.category && t.name == loaded.name);
        let _ = writeln!(
            out,
            "{:?} / {:?}  {}{}",
            loaded.category,
            loaded.name,
            loaded.file.display(),
            if adds {
                "  (adds to the built-in type)"
            } else {
                ""
            }
        );
    }
    out.push_str(&skipped_lines(&loaded.skipped, loaded.more_skipped));
    let types = loaded.types.len();
    let _ = writeln!(
        out,
        "{types} event type{} in {}; every file is usable",
        if types == 1 { "" } else { "s" },
        dir.display()
    );
    Ok(out)
}

/// What `dir` holds besides schema files, one a line; empty when it cannot be read.
pub fn skipped(dir: &Path) -> String {
    schema::files(dir)
        .map(|listing| skipped_lines(&listing.skipped, listing.more_skipped))
        .unwrap_or_default()
}

fn skipped_lines(skipped: &[schema::Skipped], more: usize) -> String {
    let mut out = String::new();
    for entry in skipped {
        let _ = writeln!(out, "skipped {}: {}", entry.path.display(), entry.why);
    }
    if more > 0 {
        let _ = writeln!(out, "skipped {more} more entries");
    }
    out
}

/// What `eye schemas test` found: a line per reason of every refused line.
pub struct TestReport {
    pub lines: usize,
    pub refused: usize,
    pub text: String,
}

/// Why `eye schemas test` could not test anything.
#[derive(Debug)]
pub enum Unusable {
    /// The directory, each file at fault.
    Dir(SchemaErrors),
    /// The file of events, partway.
    Read(std::io::Error),
}

/// Checks each line of `events` (JSON Lines, each a `POST /v1/events` body of one event) as
/// the api and then a worker with the types of `dir` would; blank lines are skipped. Lines are
/// read one at a time, each at most `max_request_bytes` long: a longer one is refused as the
/// api would refuse it, by its number, and never held whole.
pub fn test(
    settings: &Settings,
    dir: &Path,
    mut events: impl BufRead,
) -> Result<TestReport, Unusable> {
    let settings = Settings {
        schema_dir: Some(dir.to_owned()),
        ..settings.clone()
    };
    let registry = Registry::load(&settings).map_err(Unusable::Dir)?;
    let limits = eye_api::Limits {
        max_events: 1,
        max_event_bytes: settings.max_event_bytes,
        max_request_bytes: settings.max_request_bytes,
    };
    let mut report = TestReport {
        lines: 0,
        refused: 0,
        text: String::new(),
    };
    let now = eye_core::event::now();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let read = match next_line(&mut events, settings.max_request_bytes, &mut line)
            .map_err(Unusable::Read)?
        {
            Line::End => break,
            Line::TooLong => Err(eye_api::ApiError::PayloadTooLarge(
                settings.max_request_bytes,
            )),
            Line::Read if line.trim_ascii().is_empty() => continue,
            Line::Read => eye_api::parse_events(&line, &limits),
        };
        report.lines += 1;
        let (what, reasons) = match read {
            Ok(events) => {
                let event = &events[0];
                let what = format!("({:?}, {:?})", event.category, event.name);
                (what, registry.check(event, now))
            }
            Err(eye_api::ApiError::InvalidEvents(reasons)) => ("the api".into(), reasons),
            Err(e) => (
                "the api".into(),
                vec![FieldError::new("", e.code(), e.to_string())],
            ),
        };
        if reasons.is_empty() {
            continue;
        }
        report.refused += 1;
        for reason in reasons {
            let place = if reason.field.is_empty() {
                String::new()
            } else {
                format!("{} ", reason.field)
            };
            let _ = writeln!(
                report.text,
                "line {number}: refused by {what}: {place}{}: {}",
                reason.code, reason.message
            );
        }
    }
    let _ = writeln!(
        report.text,
        "{} of {} events would be refused",
        report.refused, report.lines
    );
    Ok(report)
}

/// What [`next_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line, without its end, in the buffer.
    Read,
    /// A line longer than the limit, passed over to its end.
    TooLong,
    /// Nothing more.
    End,
}

/// Reads the next line of `reader` into `line`, holding at most `max` bytes of it.
fn next_line(reader: &mut impl BufRead, max: usize, line: &mut Vec<u8>) -> std::io::Result<Line> {
    line.clear();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if reader.by_ref().take(limit).read_until(b'\n', line)? == 0 {
        return Ok(Line::End);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        return Ok(Line::Read);
    }
    if line.len() > max {
        line.clear();
        reader.skip_until(b'\n')?;
        return Ok(Line::TooLong);
    }
    // The last line, without an end.
    Ok(Line::Read)
}

/// Asks every worker to reload its schema directory; the generation asked for.
pub async fn request_reload(db: &DatabaseConnection) -> anyhow::Result<i64> {
    use anyhow::Context as _;
    eye_entity::schema_reloads::request(db)
        .await
        .context("failed to record the reload request in schema_reloads (run `eye migrate`?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str, max: usize) -> Vec<(Line, String)> {
        let mut reader = std::io::BufReader::with_capacity(4, text.as_bytes());
        let mut line = Vec::new();
        let mut found = Vec::new();
        loop {
            let read = next_line(&mut reader, max, &mut line).unwrap();
            if read == Line::End {
                return found;
            }
            found.push((read, String::from_utf8(line.clone()).unwrap()));
        }
    }

    #[test]
    fn lines_are_read_one_at_a_time_and_a_long_one_is_passed_over() {
        let read = |s: &str| (Line::Read, s.to_owned());
        assert_eq!(
            lines("ab\r\n\nabcdef\nabcde\nlast", 5),
            [
                read("ab"),
                read(""),
                (Line::TooLong, String::new()),
                read("abcde"),
                read("last"),
            ]
        );
        assert_eq!(lines("abcdefgh", 5), [(Line::TooLong, String::new())]);
        assert!(lines("", 5).is_empty());
    }
}
