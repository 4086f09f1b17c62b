//! Per-application rate limits, counted in events: what a sender over its limit sees, and what
//! operators find in `rate_limited`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_core::rate_limit::RateLimit;
use eye_entity::{rate_limited, rate_limits};
use eye_testkit::{APPLICATION, Backend, Options, TestApp, on_both_backends, pageview};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::Value;

on_both_backends!(
    a_burst_over_the_limit_gets_429_and_waiting_the_retry_after_lets_the_next_request_through,
    a_batch_of_n_events_costs_n_and_another_application_is_not_affected,
    an_override_takes_effect_within_the_token_refresh_and_default_brings_the_default_back,
    refused_requests_and_their_events_are_counted_per_minute_in_rate_limited,
    counts_from_several_apis_add_up_and_rows_older_than_a_day_are_pruned,
    the_applications_page_shows_each_limit_and_sets_or_clears_an_override,
);

const NOW: &str = "2026-01-01T00:00:00Z";

fn limit(rate: &str, burst: u64) -> RateLimit {
    RateLimit::new(rate.parse().unwrap(), burst).unwrap()
}

fn batch(n: usize) -> Value {
    Value::Array((0..n).map(|i| pageview(format!("/{i}"), NOW)).collect())
}

/// Five events a minute, in bursts of five: nothing refills during a test.
fn five_a_minute() -> Options {
    Options {
        settings: |s| {
            s.rate_limit = "5/min".parse().unwrap();
            s.rate_limit_burst = 5;
            s.max_events_per_request = 5;
        },
        ..Options::default()
    }
}

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

async fn a_burst_over_the_limit_gets_429_and_waiting_the_retry_after_lets_the_next_request_through(
    backend: Backend,
) {
    // One event every 5 s, bursts of 3: a slow machine cannot refill one between the posts.
    let options = Options {
        settings: |s| {
            s.rate_limit = "12/min".parse().unwrap();
            s.rate_limit_burst = 3;
            s.max_events_per_request = 3;
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    assert_eq!(app.post(&batch(3)).await.status(), 202);
    let refused = app.post(&pageview("/over", NOW)).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After: {retry_after}");
    let problem = problem(refused).await;
    assert_eq!(problem["code"], "rate_limited");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("12/min, bursts of 3"),
        "{problem}"
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.post(&pageview("/after", NOW)).await.status(), 202);
    app.wait_for_counts(4, 0).await;
}

async fn a_batch_of_n_events_costs_n_and_another_application_is_not_affected(backend: Backend) {
    let app = TestApp::spawn_with(backend, five_a_minute()).await;
    let other = app.write_token_for("other-app").await;
    assert_eq!(app.post(&batch(3)).await.status(), 202);
    assert_eq!(app.post(&batch(2)).await.status(), 202);
    // Two requests, five events: the limit is spent. The other application posts meanwhile.
    let (sixth, five) = (pageview("/sixth", NOW), batch(5));
    let (refused, theirs) = tokio::join!(app.post(&sixth), app.post_as(&other, &five));
    assert_eq!(refused.status(), 429);
    assert_eq!(problem(refused).await["code"], "rate_limited");
    assert_eq!(theirs.status(), 202);
    app.wait_for_counts(10, 0).await;
}

/// Posts `body` until the answer has `status`, for at most `bound`.
async fn post_until(
    app: &TestApp,
    body: &Value,
    status: u16,
    bound: Duration,
) -> reqwest::Response {
    let deadline = Instant::now() + bound;
    loop {
        let response = app.post(body).await;
        if response.status() == status {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after {bound:?}, expected {status}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_override_takes_effect_within_the_token_refresh_and_default_brings_the_default_back(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // The default (10000/s, bursts of 20000) lets a batch of 6 through.
    assert_eq!(app.post(&batch(6)).await.status(), 202);

    // What `eye app limit test-app --rate 5/min --burst 5` does.
    let set = rate_limits::set(&app.db, APPLICATION, Some(limit("5/min", 5)))
        .await
        .unwrap();
    assert_eq!(rate_limits::override_of(&set), Some(limit("5/min", 5)));
    let refresh = Duration::from_millis(app.settings.token_refresh_ms);
    // A batch above the burst can never pass: a distinct error, not a 429 to retry.
    let over = post_until(&app, &batch(6), 413, refresh * 10).await;
    assert!(over.headers().get("retry-after").is_none());
    let problem = problem(over).await;
    assert_eq!(problem["code"], "batch_over_burst");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("split the batch"),
        "{problem}"
    );
    assert_eq!(app.post(&batch(5)).await.status(), 202);
    assert_eq!(app.post(&pageview("/sixth", NOW)).await.status(), 429);

    // `eye app limit test-app --default`
    let cleared = rate_limits::set(&app.db, APPLICATION, None).await.unwrap();
    assert_eq!(rate_limits::override_of(&cleared), None);
    post_until(&app, &batch(6), 202, refresh * 10).await;
}

async fn refused_requests_and_their_events_are_counted_per_minute_in_rate_limited(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, five_a_minute()).await;
    assert_eq!(app.post(&batch(5)).await.status(), 202);
    assert_eq!(app.post(&pageview("/one", NOW)).await.status(), 429);
    assert_eq!(app.post(&batch(2)).await.status(), 429);
    let application = app.application_id_of(APPLICATION).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = rate_limited::Entity::find()
            .filter(rate_limited::Column::ApplicationId.eq(application))
            .all(&app.db)
            .await
            .unwrap();
        let counted: (i64, i64) = rows
            .iter()
            .fold((0, 0), |(r, e), row| (r + row.requests, e + row.events));
        if counted == (2, 3) {
            let now = chrono::Utc::now();
            assert!(rows.iter().all(|row| row.minute <= now
                && row.minute > now - chrono::Duration::minutes(2)
                && row.minute == rate_limits::minute_of(row.minute)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rate_limited holds {counted:?} (requests, events), expected (2, 3)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn counts_from_several_apis_add_up_and_rows_older_than_a_day_are_pruned(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let application = app.application_id_of(APPLICATION).await;
    let now = chrono::Utc::now();
    let minute = rate_limits::minute_of(now);
    let refused = |requests, events| rate_limits::Refused {
        application_id: application,
        requests,
        events,
    };
    // Two apis report the same minute; an old minute is there from yesterday.
    rate_limits::add_refused(&app.db, minute, &[refused(1, 10)])
        .await
        .unwrap();
    rate_limits::add_refused(&app.db, minute, &[refused(2, 5)])
        .await
        .unwrap();
    let old = minute - chrono::Duration::hours(25);
    rate_limits::add_refused(&app.db, old, &[refused(7, 7)])
        .await
        .unwrap();
    // The api's own report may have pruned it already.
    rate_limits::prune_refused(&app.db, now).await.unwrap();
    let rows = rate_limited::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].minute, rows[0].requests, rows[0].events),
        (minute, 3, 15)
    );
}

/// The `<tr>` of the application named `name` on the Applications page.
fn app_row<'a>(page: &'a str, name: &str) -> &'a str {
    let cell = format!("<td>{name}</td>");
    let start = page
        .find(&cell)
        .unwrap_or_else(|| panic!("{name} is not listed"));
    let row = &page[start..];
    &row[..row.find("</tr>").unwrap()]
}

async fn the_applications_page_shows_each_limit_and_sets_or_clears_an_override(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.admin().await;
    let (_, page) = client.get("/applications").await;
    assert!(
        app_row(&page, APPLICATION).contains("default: 10000/s, bursts of 20000"),
        "{page}"
    );

    let set = client
        .post(
            "/applications/limit",
            &[("name", APPLICATION), ("rate", "5/min"), ("burst", "5")],
        )
        .await;
    assert_eq!(set.status(), 303);
    let (_, page) = client.get("/applications").await;
    let row = app_row(&page, APPLICATION);
    assert!(
        row.contains("5/min, bursts of 5") && !row.contains("default:"),
        "{row}"
    );
    assert!(row.contains("Use default"), "{row}");
    let stored = eye_entity::tokens::find_application(&app.db, APPLICATION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rate_limits::override_of(&stored), Some(limit("5/min", 5)));

    let refused = [
        (APPLICATION, "fast", "5", "is not a rate"),
        (APPLICATION, "0/s", "5", "lets nothing through"),
        (APPLICATION, "5/s", "0", "a burst of 0"),
        (APPLICATION, "5/s", "many", "is not a number of events"),
        ("nobody", "5/s", "5", "No application is named `nobody`"),
    ];
    for (name, rate, burst, says) in refused {
        let response = client
            .post(
                "/applications/limit",
                &[("name", name), ("rate", rate), ("burst", burst)],
            )
            .await;
        assert_eq!(response.status(), 400, "{rate} {burst}");
        let page = response.text().await.unwrap();
        let error = &page[page.find("id=\"error\"").expect("the error is on the page")..];
        assert!(
            error[..error.find("</p>").unwrap()].contains(says),
            "{page}"
        );
        assert!(
            app_row(&page, APPLICATION).contains("5/min, bursts of 5"),
            "{page}"
        );
    }

    // Without the session's CSRF token nothing changes.
    let csrf = std::mem::replace(&mut client.csrf, "0".repeat(64));
    let forged = client
        .post(
            "/applications/limit",
            &[("name", APPLICATION), ("default", "1")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    client.csrf = csrf;
    let (_, page) = client.get("/applications").await;
    assert!(
        app_row(&page, APPLICATION).contains("5/min, bursts of 5"),
        "{page}"
    );

    let cleared = client
        .post(
            "/applications/limit",
            &[("name", APPLICATION), ("default", "1")],
        )
        .await;
    assert_eq!(cleared.status(), 303);
    let (_, page) = client.get("/applications").await;
    assert!(
        app_row(&page, APPLICATION).contains("default: 10000/s"),
        "{page}"
    );
}
