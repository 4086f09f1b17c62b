//! How fast the admin pages through a large events table on PostgreSQL.
//!
//! ```sh
//! EYE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p eye-testkit --example admin_paging -- 1000000
//! ```
//!
//! Creates (once) a database `eye_admin_paging` holding that many events over the last 23
//! days, starts the admin on it, and times pages of the events view and of the read api:
//! the first page, 50 pages deep, and with each filter, then the dashboard: its first load,
//! 20 loads each after its cache expired, 20 loads from its cache. `--dashboard` times only the
//! dashboard. `--drop` removes the database after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_testkit::AdminClient;
use eye_testkit::scale::{ScaleDb, timings};
use sea_orm::{ConnectionTrait, Statement};

const DATABASE: &str = "eye_admin_paging";

/// Events at one per two seconds back from now, 8 per session, one category in ten a form.
const SEED: &str = "INSERT INTO events (id, application_id, session_id, category, name, data, timestamp, received_at, stored_at)
SELECT gen_random_uuid(), $1::uuid, md5((g / 8)::text)::uuid,
       CASE WHEN g % 10 = 0 THEN 'form interaction' ELSE 'page interaction' END,
       CASE WHEN g % 10 = 0 THEN 'submit' WHEN g % 3 = 0 THEN 'cta click' ELSE 'pageview' END,
       jsonb_build_object('host', 'www.example.com', 'path', '/p' || (g % 997), 'element', 'e' || (g % 89)),
       date_trunc('second', now()) - g * interval '2 seconds',
       date_trunc('second', now()) - g * interval '2 seconds',
       date_trunc('second', now()) - g * interval '2 seconds'
FROM generate_series(1, $2::int) AS g";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rows: i64 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let scale = ScaleDb::open(DATABASE).await?;
    let db = scale.db.clone();
    let token = scale.read_token().await?;
    let stored = scale.number("SELECT COUNT(*) AS n FROM events").await?;
    if stored < rows {
        let started = Instant::now();
        db.execute_unprepared("TRUNCATE events, sessions").await?;
        let app = token.application.id;
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            SEED,
            [app.into(), (rows as i32).into()],
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

    let base = scale.admin().await?;
    let _ = eye_admin::create_user(&db, "bench", "bench-password-1").await;
    let mut browser = AdminClient::new(&base);
    browser.login("bench", "bench-password-1").await;

    // Right after start nothing is cached: the dashboard's first load.
    let started = Instant::now();
    dashboard_html(&browser, &base).await?;
    let first = started.elapsed();

    if !args.iter().any(|a| a == "--dashboard") {
        walk_views(&db, &base, &browser, &token.jwt).await?;
    }

    // The admin keeps the dashboard's numbers 5 s; waiting longer makes every load query.
    let mut fresh = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(5_200)).await;
        let started = Instant::now();
        dashboard_html(&browser, &base).await?;
        fresh.push(started.elapsed());
    }
    let mut cached = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        dashboard_html(&browser, &base).await?;
        cached.push(started.elapsed());
    }
    println!(
        "{:<34} {:.1} ms",
        "dashboard, first load",
        first.as_secs_f64() * 1000.0
    );
    println!(
        "{:<34} {}",
        "dashboard, cache expired",
        timings(fresh, "pages")
    );
    println!("{:<34} {}", "dashboard, cached", timings(cached, "pages"));
    if args.iter().any(|a| a == "--drop") {
        scale.drop().await?;
    }
    Ok(())
}

/// The dashboard page, failing on anything but a 200.
async fn dashboard_html(browser: &AdminClient, base: &str) -> anyhow::Result<String> {
    let response = browser.client.get(format!("{base}/")).send().await?;
    anyhow::ensure!(
        response.status().is_success(),
        "dashboard: {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// Times 50 pages of the events view and of the read api with each filter.
async fn walk_views(
    db: &sea_orm::DatabaseConnection,
    base: &str,
    browser: &AdminClient,
    jwt: &str,
) -> anyhow::Result<()> {
    let base = base.to_owned();
    let day = (chrono::Utc::now() - chrono::Duration::days(10))
        .format("%Y-%m-%d")
        .to_string();
    let middle = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT timestamp, id FROM events ORDER BY timestamp DESC, id DESC OFFSET 500000 LIMIT 1",
        ))
        .await?
        .unwrap();
    let middle = eye_admin::Cursor {
        time: middle.try_get("", "timestamp")?,
        id: middle.try_get("", "id")?,
    };
    let session: uuid::Uuid = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT session_id FROM events ORDER BY timestamp DESC OFFSET 500000 LIMIT 1",
        ))
        .await?
        .unwrap()
        .try_get("", "session_id")?;
    let views = [
        ("no filter".to_owned(), String::new()),
        (
            "category=form interaction".to_owned(),
            "category=form+interaction".to_owned(),
        ),
        (
            "category + name=cta click".to_owned(),
            "category=page+interaction&name=cta+click".to_owned(),
        ),
        (
            format!("one day ({day})"),
            format!("from={day}&to={day}T23:59"),
        ),
        ("one session".to_owned(), format!("session={session}")),
        ("text in data (e42)".to_owned(), "q=e42".to_owned()),
        (
            "500 000 rows deep".to_owned(),
            format!("after={}", middle.encode()),
        ),
    ];
    println!(
        "\n{:<34} {:<42} read api (JSON), 50 pages deep",
        "filter", "events page (HTML), 50 pages deep"
    );
    for (label, query) in views {
        let html = walk(
            &base,
            &query,
            |path| {
                let client = browser.client.clone();
                async move { client.get(path).send().await.unwrap().text().await.unwrap() }
            },
            "id=\"next-page\"",
            "/events",
        )
        .await;
        let json = walk(
            &base,
            &query,
            |path| {
                let client = reqwest::Client::new();
                let jwt = jwt.to_owned();
                async move {
                    client
                        .get(path)
                        .bearer_auth(jwt)
                        .send()
                        .await
                        .unwrap()
                        .text()
                        .await
                        .unwrap()
                }
            },
            "\"next_cursor\":\"",
            "/api/v1/events",
        )
        .await;
        println!(
            "{label:<34} {:<42} {}",
            timings(html, "pages"),
            timings(json, "pages")
        );
    }
    Ok(())
}

/// Follows next links (HTML) or cursors (JSON) from the first page for up to 50 pages.
async fn walk<F, Fut>(base: &str, query: &str, get: F, marker: &str, path: &str) -> Vec<Duration>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let mut times = Vec::new();
    let mut next = Some(format!("{base}{path}?{query}"));
    while let Some(url) = next.take() {
        let started = Instant::now();
        let body = get(url).await;
        times.push(started.elapsed());
        if times.len() >= 50 {
            break;
        }
        next = next_url(&body, marker).map(|n| {
            if path == "/events" {
                format!("{base}{n}")
            } else {
                let filters = query.split('&').filter(|p| !p.starts_with("after="));
                let filters: Vec<&str> = filters.collect();
                format!("{base}{path}?{}&after={n}", filters.join("&"))
            }
        });
    }
    times
}

fn next_url(body: &str, marker: &str) -> Option<String> {
    let at = body.find(marker)?;
    if marker.starts_with("id=") {
        let start = body[..at].rfind("href=\"")? + 6;
        let end = start + body[start..].find('"')?;
        Some(body[start..end].replace("&amp;", "&"))
    } else {
        let start = at + marker.len();
        Some(body[start..start + body[start..].find('"')?].to_owned())
    }
}
