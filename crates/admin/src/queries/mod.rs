//! Queries as plain functions over a connection. Every value is bound, never spliced.

pub mod dashboard;
pub mod events;
pub mod keyset;
pub mod rejected;
pub mod stats;

use std::collections::HashMap;

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, Statement};
use uuid::Uuid;

pub use eye_entity::reads::{is_statement_timeout, read_only};

/// Application names by id, for showing rows.
pub async fn application_names(db: &impl ConnectionTrait) -> Result<HashMap<Uuid, String>, DbErr> {
    Ok(eye_entity::tokens::applications(db)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

/// The id of the application with this name; `Uuid::nil()` (which matches nothing) if none has it.
pub async fn application_id(db: &impl ConnectionTrait, name: &str) -> Result<Uuid, DbErr> {
    Ok(eye_entity::tokens::find_application(db, name)
        .await?
        .map_or(Uuid::nil(), |a| a.id))
}

/// One statement under `timeout` on PostgreSQL, in a [`read_only`] transaction (SQLite has
/// no statement timeout).
pub async fn timed(
    db: &DatabaseConnection,
    timeout: Duration,
    statement: Statement,
) -> Result<Vec<QueryResult>, DbErr> {
    let transaction = eye_entity::reads::bounded(db, timeout).await?;
    let rows = transaction.query_all_raw(statement).await?;
    transaction.commit().await?;
    Ok(rows)
}

/// How both backends render `data` for a text search: JSON text with one space after every
/// `:` and `,` removed, inside strings too. PostgreSQL prints `{"k": "v"}`, SQLite minified
/// `{"k":"v"}`; squeezed the same way (and the searched text with them, by [`TextPattern`]),
/// the two read alike and `"k": "v"` and `"k":"v"` find the same events on both.
pub fn searchable_data(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "replace(replace(CAST(data AS TEXT), ': ', ':'), ', ', ',')",
        _ => "replace(replace(json(data), ': ', ':'), ', ', ',')",
    }
}

/// Text to find inside `data`, ignoring case by the same rule on both backends, whatever
/// their locale: each letter may match any of its cases (`ü` and `Ü`, `k` and `K`), spelled
/// out as a set of characters in a PostgreSQL regular expression or a SQLite GLOB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPattern(Vec<Vec<char>>);

impl TextPattern {
    pub fn new(text: &str) -> Self {
        let squeezed = text.replace(": ", ":").replace(", ", ",");
        Self(squeezed.chars().map(cases).collect())
    }

    /// For `~` on PostgreSQL (case-sensitive; the cases are in the pattern).
    pub fn regex(&self) -> String {
        let mut pattern = String::new();
        for chars in &self.0 {
            match chars.as_slice() {
                [c] if c.is_ascii() && !c.is_ascii_alphanumeric() => {
                    pattern.push('\\');
                    pattern.push(*c);
                }
                [c] => pattern.push(*c),
                set => {
                    pattern.push('[');
                    pattern.extend(set);
                    pattern.push(']');
                }
            }
        }
        pattern
    }

    /// For `GLOB` on SQLite, which matches the whole text: `*` on either side.
    pub fn glob(&self) -> String {
        let mut pattern = String::from("*");
        for chars in &self.0 {
            match chars.as_slice() {
                [c @ ('*' | '?' | '[')] => {
                    pattern.push('[');
                    pattern.push(*c);
                    pattern.push(']');
                }
                [c] => pattern.push(*c),
                set => {
                    pattern.push('[');
                    pattern.extend(set);
                    pattern.push(']');
                }
            }
        }
        pattern.push('*');
        pattern
    }
}

/// `c` and every other case of it that is one character (`ß` has no one-letter capital).
fn cases(c: char) -> Vec<char> {
    fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
        let first = chars.next()?;
        chars.next().is_none().then_some(first)
    }
    let lower = |c: char| single(c.to_lowercase());
    let upper = |c: char| single(c.to_uppercase());
    let mut set = vec![c];
    for other in [lower(c), upper(c)].into_iter().flatten() {
        set.push(other);
        set.extend(lower(other));
        set.extend(upper(other));
    }
    set.sort_unstable();
    set.dedup();
    set
}

#[cfg(test)]
mod tests {
    use super::TextPattern;

    #[test]
    fn every_case_of_a_letter_matches_and_nothing_else_is_special() {
        let pattern = TextPattern::new("Über 50%_[x]*?.");
        assert_eq!(
            pattern.regex(),
            "[Üü][Bb][Ee][Rr]\\ 50\\%\\_\\[[Xx]\\]\\*\\?\\."
        );
        assert_eq!(pattern.glob(), "*[Üü][Bb][Ee][Rr] 50%_[[][Xx]][*][?].*");
    }

    #[test]
    fn a_space_after_a_colon_or_comma_is_optional_as_in_the_rendering() {
        assert_eq!(
            TextPattern::new("\"k\": \"v\", 1").glob(),
            TextPattern::new("\"k\":\"v\",1").glob()
        );
        assert_eq!(TextPattern::new("1, 2").regex(), "1\\,2");
    }
}
