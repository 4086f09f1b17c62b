//! How fast the stats api answers at scale on PostgreSQL, and how long `eye rollups rebuild`
//! takes.
//!
//! ```sh
//! EYE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release -p eye-testkit --example stats_scale -- 10000000
//! ```
//!
//! Creates (once) a database `eye_stats_scale` holding that many events over the last 30 days
//! (six event types, sessions of 1 to 40 consecutive events), counts them into the
//! rollups with the rebuild `eye rollups rebuild` runs, timing each day, and starts the admin
//! on it. Then times, 20 times each: a day of hourly counts by category and name, a week of
//! them, a day of minutes, and the session statistics of a day. `--drop` removes the database
//! after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use chrono::{TimeDelta, Utc};
use eye_entity::rollups;
use eye_testkit::scale::{ScaleDb, timings};
use sea_orm::{ConnectionTrait, Statement};

const DATABASE: &str = "eye_stats_scale";

/// Events spread evenly over the 30 days before now; each block of 40 consecutive events is
/// cut into sessions of 1 to 40 events (the size varies by block).
const SEED: &str = "INSERT INTO events (id, application_id, session_id, category, name, data, timestamp, received_at, stored_at)
SELECT gen_random_uuid(), $1::uuid, md5(((g / 40) * 40 + (g % 40) / (1 + (g / 40) % 40))::text)::uuid,
       (ARRAY['page interaction', 'page interaction', 'form interaction', 'checkout'])[1 + g % 4],
       (ARRAY['pageview', 'cta click', 'submit', 'scroll', 'view', 'order'])[1 + g % 6],
       jsonb_build_object('path', '/p' || (g % 997)),
       t, t, t
FROM generate_series(1, $2::int) AS g,
     LATERAL (SELECT date_trunc('second', now()) - g * ($3::float8 * interval '1 second') AS t) AS time";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: i64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let scale = ScaleDb::open(DATABASE).await?;
    let db = scale.db.clone();
    let token = scale.read_token().await?;
    let stored = scale.number("SELECT COUNT(*) AS n FROM events").await?;
    let days = 30;
    if stored < rows {
        let started = Instant::now();
        db.execute_unprepared("TRUNCATE events, sessions, event_counts")
            .await?;
        let app = token.application.id;
        let spacing = (days * 24 * 3600) as f64 / rows as f64;
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            SEED,
            [app.into(), (rows as i32).into(), spacing.into()],
        ))
        .await?;
        scale.sessions_from_events(app).await?;
        println!(
            "seeded {rows} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("reusing {stored} events in database {DATABASE}");
    }

    // The rebuild, a day per transaction as `eye rollups rebuild` does it.
    let now = Utc::now();
    let mut day_times = Vec::new();
    let mut counted = 0;
    let started = Instant::now();
    for day in (0..=days).rev() {
        let from = rollups::minute_of(now - TimeDelta::days(day + 1));
        let timer = Instant::now();
        counted += rollups::rebuild(&db, from, from + TimeDelta::days(1)).await?;
        day_times.push(timer.elapsed());
    }
    db.execute_unprepared("ANALYZE event_counts").await?;
    let minutes = scale
        .number("SELECT COUNT(*) AS n FROM event_counts")
        .await?;
    println!(
        "rebuilt the rollups of {counted} events ({minutes} rows) in {:.1} s; a day: {}",
        started.elapsed().as_secs_f64(),
        timings(day_times, "days")
    );

    let base = scale.admin().await?;
    let client = reqwest::Client::new();
    let yesterday = (now - TimeDelta::days(2)).format("%Y-%m-%d");
    let today = (now - TimeDelta::days(1)).format("%Y-%m-%d");
    let week_ago = (now - TimeDelta::days(8)).format("%Y-%m-%d");
    let cases = [
        (
            "a day of hourly counts by category and name",
            format!(
                "/api/v1/stats/counts?group_by=category,name&bucket=hour&from={yesterday}&to={today}"
            ),
        ),
        (
            "a week of hourly counts by category and name",
            format!(
                "/api/v1/stats/counts?group_by=category,name&bucket=hour&from={week_ago}&to={today}"
            ),
        ),
        (
            "a day of minutes by category",
            format!(
                "/api/v1/stats/counts?group_by=category&bucket=minute&from={yesterday}&to={today}"
            ),
        ),
        (
            "the session statistics of a day",
            format!("/api/v1/stats/sessions?from={yesterday}&to={today}"),
        ),
    ];
    for (what, path) in cases {
        let mut times = Vec::new();
        let mut summary = String::new();
        for _ in 0..20 {
            let timer = Instant::now();
            let response = client
                .get(format!("{base}{path}"))
                .bearer_auth(&token.jwt)
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            times.push(timer.elapsed());
            anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
            summary = match body.get("total") {
                Some(total) => format!(
                    "{total} events in {} rows",
                    body["counts"].as_array().map_or(0, Vec::len)
                ),
                None => format!(
                    "{} sessions, {} events each on average",
                    body["sessions"], body["events_per_session"]["average"]
                ),
            };
        }
        println!("{what:<46} {}   {summary}", timings(times, "requests"));
    }

    if args.iter().any(|a| a == "--drop") {
        scale.drop().await?;
        println!("dropped database {DATABASE}");
    }
    Ok(())
}
