//! `eye rollups rebuild`: recomputes the per-minute counts the stats api reads from the stored
//! events, for events stored before the rollups existed.

use anyhow::Context;
use chrono::{DateTime, Utc};
use eye_entity::rollups;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// A time as `--from` and `--to` take it: as the read api's filters do (UTC unless it names
/// an offset; a date is its midnight).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    eye_admin::parse_time("time", text)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "give a time, e.g. 2026-11-01".to_owned())
}

/// Rebuilds the counts from `from` to `to`; without them, from the first stored event or
/// count to the last. Prints the window and the events counted.
pub async fn rebuild(
    db: &DatabaseConnection,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    let (first, last) = stored_span(db).await?;
    let (Some(from), Some(to)) = (from.or(first), to.or(last)) else {
        println!("nothing stored and nothing counted: nothing to rebuild");
        return Ok(());
    };
    anyhow::ensure!(from < to, "--from ({from}) must be before --to ({to})");
    let counted = rollups::rebuild(db, from, to)
        .await
        .context("rebuilding the counts")?;
    println!(
        "rebuilt the counts from {} to {}: {counted} events counted",
        rollups::minute_of(from).format("%Y-%m-%d %H:%M UTC"),
        rollups::minute_from(to).format("%Y-%m-%d %H:%M UTC"),
    );
    Ok(())
}

/// The earliest and (just after) the latest of the stored events and the counted minutes.
async fn stored_span(
    db: &DatabaseConnection,
) -> anyhow::Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    let backend = db.get_database_backend();
    let mut first: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    for (table, column) in [("events", "timestamp"), ("event_counts", "minute")] {
        let row = db
            .query_one_raw(Statement::from_string(
                backend,
                format!(r#"SELECT min("{column}") AS first, max("{column}") AS last FROM {table}"#),
            ))
            .await?
            .context("an aggregate answers one row")?;
        let (low, high): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            (row.try_get("", "first")?, row.try_get("", "last")?);
        first = first.into_iter().chain(low).min();
        // The last event's own minute is counted too.
        last = last
            .into_iter()
            .chain(high.map(|t| t + chrono::TimeDelta::microseconds(1)))
            .max();
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn a_time_is_a_date_or_a_utc_or_offset_time() {
        assert_eq!(
            parse_time("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-01T10:00:00+02:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T08:00:00+00:00"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("not a time"));
    }
}
