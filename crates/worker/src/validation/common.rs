//! Rules every event meets, whatever its type.

use chrono::{DateTime, Duration, Utc};
use eye_core::settings::Settings;
use eye_core::{Event, FieldError};
use serde_json::Value;

/// Longest category or name the schema can hold.
const COLUMN_CHARS: usize = 128;

/// Longest field path named in a reason; deeper paths are cut.
pub(super) const PATH_CHARS: usize = 256;

pub(super) struct Limits {
    clock_skew: Duration,
    not_before: DateTime<Utc>,
    max_name_chars: usize,
    max_data_string_chars: usize,
}

impl From<&Settings> for Limits {
    fn from(settings: &Settings) -> Self {
        Self {
            clock_skew: Duration::seconds(settings.clock_skew_secs),
            not_before: settings.event_not_before,
            max_name_chars: settings.max_name_chars.min(COLUMN_CHARS),
            max_data_string_chars: settings.max_data_string_chars,
        }
    }
}

pub(super) fn check(
    event: &Event,
    data: &Value,
    received_at: DateTime<Utc>,
    limits: &Limits,
) -> Vec<FieldError> {
    let mut reasons = Vec::new();
    for (field, value) in [("category", &event.category), ("name", &event.name)] {
        check_label(field, value, limits.max_name_chars, &mut reasons);
    }
    if event.timestamp < limits.not_before {
        reasons.push(FieldError::new(
            "timestamp",
            "timestamp_too_old",
            format!(
                "timestamp {} is before {}, the earliest accepted",
                event.timestamp.to_rfc3339(),
                limits.not_before.to_rfc3339()
            ),
        ));
    } else if event.timestamp > received_at + limits.clock_skew {
        let ahead = (event.timestamp - received_at).num_seconds();
        reasons.push(FieldError::new(
            "timestamp",
            "timestamp_in_future",
            format!(
                "timestamp {} is {ahead} s after the event was received; at most {} s of clock skew is allowed",
                event.timestamp.to_rfc3339(),
                limits.clock_skew.num_seconds()
            ),
        ));
    }
    if data.is_object() {
        check_strings("data", data, limits.max_data_string_chars, &mut reasons);
    } else {
        reasons.push(FieldError::new(
            "data",
            "not_object",
            "data must be a JSON object",
        ));
    }
    reasons
}

fn check_label(field: &str, value: &str, max: usize, reasons: &mut Vec<FieldError>) {
    if value.trim().is_empty() {
        reasons.push(FieldError::new(
            field,
            "empty",
            format!("{field} must not be empty"),
        ));
    } else if value.chars().count() > max {
        reasons.push(FieldError::new(
            field,
            "too_long",
            format!("{field} is longer than {max} characters"),
        ));
    } else if value.contains('\0') {
        reasons.push(FieldError::new(
            field,
            "invalid_character",
            format!("{field} contains a NUL character"),
        ));
    }
}

/// Walks `data`: strings within the limit and no NUL characters, which PostgreSQL cannot store.
/// `path.key` (or `path[i]`), cut at [`PATH_CHARS`] so that deep nesting cannot grow reasons.
pub(super) fn child(path: &str, step: std::fmt::Arguments) -> String {
    let mut child = format!("{path}{step}");
    if child.chars().count() > PATH_CHARS {
        child = child.chars().take(PATH_CHARS - 1).collect();
        child.push('…');
    }
    child
}

fn check_strings(path: &str, value: &Value, max: usize, reasons: &mut Vec<FieldError>) {
    match value {
        Value::String(s) if s.contains('\0') => reasons.push(FieldError::new(
            path,
            "invalid_character",
            "strings must not contain NUL characters",
        )),
        Value::String(s) if s.chars().count() > max => reasons.push(FieldError::new(
            path,
            "too_long",
            format!("string is longer than {max} characters"),
        )),
        Value::Object(map) => {
            for (key, value) in map {
                if key.contains('\0') {
                    reasons.push(FieldError::new(
                        path,
                        "invalid_character",
                        "keys must not contain NUL characters",
                    ));
                    continue;
                }
                check_strings(&child(path, format_args!(".{key}")), value, max, reasons);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_strings(&child(path, format_args!("[{i}]")), item, max, reasons);
            }
        }
        _ => {}
    }
}
