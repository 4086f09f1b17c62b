//! Filters as they arrive in a URL, and what they mean once parsed. Pages and the read api
//! share them, so a view in the browser and a program's query ask the same thing.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The query string of the events views. Every field is text so that a bad value becomes a
/// message naming the field, not a generic 400.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// An application's name.
    pub application: String,
    /// A session id.
    #[param(format = Uuid)]
    pub session: String,
    pub category: String,
    pub name: String,
    /// At or after this time: UTC, `YYYY-MM-DDTHH:MM[:SS]`, a date, or RFC 3339 with an offset.
    pub from: String,
    /// Before this time, in the same forms as `from`.
    pub to: String,
    /// Text somewhere inside `data`, case-insensitive, at most 200 characters.
    pub q: String,
    /// `next_cursor` of the previous page, for the next one (the read api also accepts it as
    /// `cursor`).
    #[serde(alias = "cursor")]
    pub after: String,
    /// `prev_cursor` of a page, for the page before it.
    pub before: String,
    /// Rows per page, from 1 to `admin_page_size`.
    pub limit: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    #[error("`{0}` is not a time: use YYYY-MM-DDTHH:MM (UTC), a date, or RFC 3339")]
    Time(&'static str),
    #[error("`session` is not a UUID")]
    Session,
    #[error("the page cursor is not valid; start again from the first page")]
    Cursor,
    #[error("`limit` must be a number from 1 to {0}")]
    Limit(u64),
    #[error("`from` is later than `to`")]
    Range,
    #[error("`q` is longer than {MAX_TEXT_CHARS} characters")]
    TextTooLong,
    #[error(
        "`group_by` names `{0}`: group by `category`, `name` or `application`, separated by commas"
    )]
    GroupBy(String),
    #[error("`bucket` must be `minute`, `hour` or `day`")]
    Bucket,
    #[error(
        "the window holds {buckets} buckets of a {bucket}; at most {max} are counted: narrow \
         it or take a wider bucket"
    )]
    TooManyBuckets {
        buckets: i64,
        bucket: &'static str,
        max: i64,
    },
    #[error(
        "the answer would hold more than {0} rows: narrow the window, take a wider bucket or \
         group by less"
    )]
    TooManyRows(u64),
}

/// Longest text searched for inside `data`.
pub const MAX_TEXT_CHARS: usize = 200;

/// What to match. `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Application name as the user typed it; resolved to an id by the query.
    pub application: Option<String>,
    /// An application by id (a session's timeline), besides or instead of its name.
    pub application_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub category: Option<String>,
    pub name: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub text: Option<String>,
}

/// A position in a list ordered by (time, id): the row it names is excluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub time: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.time.timestamp_micros(), self.id.simple())
    }

    pub fn parse(s: &str) -> Result<Self, FilterError> {
        let (micros, id) = s.split_once('_').ok_or(FilterError::Cursor)?;
        let micros: i64 = micros.parse().map_err(|_| FilterError::Cursor)?;
        Ok(Self {
            time: DateTime::from_timestamp_micros(micros).ok_or(FilterError::Cursor)?,
            id: Uuid::parse_str(id).map_err(|_| FilterError::Cursor)?,
        })
    }
}

/// The trimmed text, or `None` if nothing is left.
pub(crate) fn text(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// Reads a time as UTC unless it names its own offset.
pub fn parse_time(field: &'static str, s: &str) -> Result<Option<DateTime<Utc>>, FilterError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(s, format).ok())
    .or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })
    .ok_or(FilterError::Time(field))?;
    Ok(Some(naive.and_utc()))
}

pub fn parse_cursor(s: &str) -> Result<Option<Cursor>, FilterError> {
    text(s).map(|s| Cursor::parse(&s)).transpose()
}

pub fn parse_limit(s: &str, max: u64) -> Result<u64, FilterError> {
    match text(s) {
        None => Ok(max),
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or(FilterError::Limit(max)),
    }
}

impl EventQuery {
    pub fn filter(&self) -> Result<EventFilter, FilterError> {
        let filter = EventFilter {
            application: text(&self.application),
            application_id: None,
            session_id: text(&self.session)
                .map(|s| Uuid::parse_str(&s).map_err(|_| FilterError::Session))
                .transpose()?,
            category: text(&self.category),
            name: text(&self.name),
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            text: text(&self.q),
        };
        if filter
            .text
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS)
        {
            return Err(FilterError::TextTooLong);
        }
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from > to
        {
            return Err(FilterError::Range);
        }
        Ok(filter)
    }

    /// The same filters without paging: the link to a view's first page.
    pub fn first_page(&self) -> Self {
        Self {
            after: String::new(),
            before: String::new(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_unless_they_say_otherwise() {
        let utc = |s| parse_time("from", s).unwrap().unwrap().to_rfc3339();
        assert_eq!(utc("2021-01-01T09:15"), "2021-01-01T09:15:00+00:00");
        assert_eq!(
            utc("2021-01-01 09:15:27.5"),
            "2021-01-01T09:15:27.500+00:00"
        );
        assert_eq!(utc("2021-01-01"), "2021-01-01T00:00:00+00:00");
        assert_eq!(
            utc("2021-01-01T11:15:00+02:00"),
            "2021-01-01T09:15:00+00:00"
        );
        assert_eq!(parse_time("to", "yesterday"), Err(FilterError::Time("to")));
        assert_eq!(parse_time("to", " "), Ok(None));
    }

    #[test]
    fn cursors_survive_a_round_trip_and_garbage_is_refused() {
        let cursor = Cursor {
            time: DateTime::from_timestamp_micros(1_609_492_527_243_860).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::parse(&cursor.encode()), Ok(cursor));
        for bad in ["", "12", "x_y", "12_not-a-uuid"] {
            assert_eq!(Cursor::parse(bad), Err(FilterError::Cursor), "{bad}");
        }
    }

    #[test]
    fn an_inverted_range_and_a_bad_session_are_named() {
        let query = EventQuery {
            from: "2021-02-01".into(),
            to: "2021-01-01".into(),
            ..Default::default()
        };
        assert_eq!(query.filter(), Err(FilterError::Range));
        let query = EventQuery {
            session: "abc".into(),
            ..Default::default()
        };
        assert_eq!(query.filter(), Err(FilterError::Session));
    }
}
