//! The admin panel in a real headless Chromium: log in, filter, page, open a session, revoke a
//! token and see the api refuse it, replay a dead letter, read the dashboard of a busy day. With `EYE_SCREENSHOTS=docs/screenshots` it also saves
//! the pictures the README shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDateTime, Utc};
use eye_testkit::browser::Browser;
use eye_testkit::{ADMIN_PASSWORD, ADMIN_USER, Backend, Options, Seed, TestApp};
use sea_orm::EntityTrait;
use serde_json::json;
use uuid::Uuid;

const PAGE: u64 = 20;

/// A day of traffic: 40 visits of a few pages each, and some refused events.
async fn seed_day(app: &TestApp) -> usize {
    let now = Utc::now();
    let mut seeds = Vec::new();
    for visit in 0..40i64 {
        let session = Uuid::new_v4();
        let start = now - chrono::Duration::minutes(visit * 36 + 3);
        let host = ["www.shop.example", "blog.example", "help.example"][visit as usize % 3];
        for step in 0..(4 + visit % 5) {
            let at = start + chrono::Duration::seconds(step * 40);
            let path = ["/", "/pricing", "/signup", "/docs", "/contact"][step as usize % 5];
            let (category, name, data) = match step % 4 {
                0 | 1 => (
                    "page interaction",
                    "pageview",
                    json!({"host": host, "path": path}),
                ),
                2 => (
                    "page interaction",
                    "cta click",
                    json!({"host": host, "path": path, "element": "start trial"}),
                ),
                _ => (
                    "form interaction",
                    "submit",
                    json!({"host": host, "path": path, "form": {"plan": "team", "seats": 5}}),
                ),
            };
            seeds.push(Seed::new(session, category, name, data, at));
        }
    }
    app.seed(&seeds).await;
    for minutes in [5, 50, 200] {
        let at = now - chrono::Duration::minutes(minutes);
        app.seed_rejected(
            "page interaction",
            json!({"host": "www.shop.example", "timestamp": "2031-01-01 00:00:00"}),
            &[("timestamp", "timestamp_in_future")],
            at,
        )
        .await;
    }
    app.seed_rejected(
        "form interaction",
        json!({"host": "help.example", "path": "/contact"}),
        &[("data.form", "required")],
        now,
    )
    .await;
    seeds.len()
}

fn shown_time(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .unwrap()
        .and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_events_follows_a_session_and_revokes_a_token_in_a_browser() {
    let Some(browser) = Browser::start("admin_browser").await else {
        return;
    };
    let app = TestApp::spawn_with(
        Backend::Embedded,
        Options {
            settings: |s| s.admin_page_size = PAGE,
            ..Options::default()
        },
    )
    .await;
    let seeded = seed_day(&app).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let admin = &app.admin_address;

    // A shared link asks for a login first, then opens.
    browser.goto(&format!("{admin}/events")).await;
    browser.wait_for_url("/login").await;
    browser.fill("#username", ADMIN_USER).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.screenshot("login").await;
    browser.click("#login").await;
    browser.wait_for_url("/events").await;
    browser.find("#events").await;

    // Filter by category and a time range.
    let to = Utc::now() - chrono::Duration::hours(2);
    let from = to - chrono::Duration::hours(10);
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M").to_string();
    browser.fill("#f-category", "page interaction").await;
    browser.fill("#f-from", &minute(from)).await;
    browser.fill("#f-to", &minute(to)).await;
    browser.click("#apply-filters").await;
    browser.wait_for_url("category=page+interaction").await;
    let categories = browser.texts("td.category").await;
    assert_eq!(categories.len() as u64, PAGE);
    assert!(
        categories.iter().all(|c| c == "page interaction"),
        "{categories:?}"
    );
    let first_page = browser.texts("a.event-link").await;
    let whole_minute = |t: DateTime<Utc>| t.duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let (from, to) = (whole_minute(from), whole_minute(to));
    for time in &first_page {
        let time = shown_time(time);
        assert!(from <= time && time < to, "{time} outside {from}..{to}");
    }
    browser.screenshot("events").await;

    // Forward and back again.
    browser.click("#next-page").await;
    browser.wait_for_url("after=").await;
    let second_page = browser.texts("a.event-link").await;
    assert!(!second_page.is_empty());
    assert!(
        shown_time(&second_page[0]) <= shown_time(first_page.last().unwrap()),
        "older events follow"
    );
    assert!(
        second_page
            .iter()
            .all(|t| !first_page.contains(t) || t == first_page.last().unwrap())
    );
    browser.click("#prev-page").await;
    browser.wait_for_url("before=").await;
    assert_eq!(browser.texts("a.event-link").await, first_page);
    assert_eq!(
        browser.texts("td.category").await.len() as u64,
        PAGE,
        "the filters stay on"
    );

    // What did this session do?
    browser.click("a.session-link").await;
    browser.wait_for_url("/sessions/").await;
    let count: usize = browser.text("#session-count").await.parse().unwrap();
    let steps = browser.texts("#timeline li time").await;
    assert_eq!(steps.len(), count);
    assert!(
        steps
            .windows(2)
            .all(|w| shown_time(&w[0]) <= shown_time(&w[1])),
        "time order: {steps:?}"
    );
    browser.screenshot("session").await;
    browser.click("#timeline li a").await;
    browser.wait_for_url("/events/").await;
    assert!(browser.text("#event-data").await.contains("\"host\""));
    browser.screenshot("event").await;

    browser.goto(&format!("{admin}/rejected")).await;
    assert_eq!(browser.texts("code.reason-code").await.len(), 4);
    browser.screenshot("rejected").await;

    // Issue a read token, use it, revoke it, and watch the api refuse it.
    browser.goto(&format!("{admin}/applications")).await;
    browser.fill("#token-app", "analytics").await;
    browser.click("#scope-read").await;
    browser.click("#issue").await;
    let jwt = browser.text("#token-jwt").await;
    let id = browser.text("#token-id").await;
    browser.screenshot("token-issued").await;
    let read = || async {
        reqwest::Client::new()
            .get(format!("{admin}/api/v1/events?limit=1"))
            .bearer_auth(&jwt)
            .send()
            .await
            .unwrap()
    };
    assert_eq!(read().await.status(), 200);
    browser.goto(&format!("{admin}/applications")).await;
    browser.click(&format!("#t-{id} button.revoke")).await;
    browser.wait_for_url("revoked=").await;
    assert!(browser.text("#notice").await.contains("is revoked"));
    assert_eq!(browser.text(&format!("#t-{id} td.state")).await, "revoked");
    browser.screenshot("applications").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = read().await;
        if response.status() == 401 {
            let problem: serde_json::Value = response.json().await.unwrap();
            assert_eq!(problem["code"], "token_revoked");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the api still accepts the revoked token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    browser.goto(&format!("{admin}/")).await;
    assert_eq!(browser.text("#total-events").await, seeded.to_string());
    assert!(browser.exists("figure.chart svg").await);

    // A message from a newer api version is a dead letter; once repaired it replays into storage.
    let event_id = Uuid::now_v7();
    let mut envelope = json!({
        "v": 2,
        "application_id": app.application_id().await,
        "token_id": Uuid::new_v4(),
        "received_at": Utc::now(),
        "events": [{"id": event_id, "session_id": Uuid::new_v4(), "category": "page interaction",
                    "name": "pageview", "data": {"host": "www.shop.example", "path": "/new"},
                    "timestamp": Utc::now()}],
    });
    let publisher = app.queue.publisher(&app.settings).unwrap();
    publisher
        .publish(&serde_json::to_vec(&envelope).unwrap())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let dead = loop {
        if let Some(dead) = eye_entity::dead_letters::Entity::find()
            .one(&app.db)
            .await
            .unwrap()
        {
            break dead;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The dashboard's numbers are cached for a few seconds.
    let shown = Instant::now() + Duration::from_secs(15);
    loop {
        browser.goto(&format!("{admin}/")).await;
        if browser.text("#total-dead").await == "1" {
            break;
        }
        assert!(
            Instant::now() < shown,
            "the dashboard never showed the dead letter"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    browser.click("#total-dead").await;
    browser.wait_for_url("/dead-letters").await;
    browser.screenshot("dead-letters").await;
    browser.click(&format!("#d-{} a", dead.id)).await;
    browser
        .wait_for_url(&format!("/dead-letters/{}", dead.id))
        .await;
    assert_eq!(
        browser.text("#dead-reason").await,
        "envelope version 2 is not supported"
    );
    assert!(browser.text("#dead-body").await.contains("\"v\":2"));
    browser.screenshot("dead-letter").await;
    envelope["v"] = json!(1);
    let mut repaired: eye_entity::dead_letters::ActiveModel = dead.into();
    repaired.body = sea_orm::Set(serde_json::to_vec(&envelope).unwrap());
    sea_orm::ActiveModelTrait::update(repaired, &app.db)
        .await
        .unwrap();
    browser.click("#replay button").await;
    browser.wait_for_url("replayed=").await;
    assert!(browser.text("#notice").await.contains("1 replayed"));
    assert!(browser.exists("#no-dead-letters").await);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.stored_events().await.iter().any(|e| e.id == event_id) {
        assert!(
            Instant::now() < deadline,
            "the replayed event is not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    browser.click("#logout").await;
    browser.wait_for_url("/login").await;
    browser.goto(&format!("{admin}/events")).await;
    browser.wait_for_url("/login").await;
}

/// A busy day of several applications: one went quiet hours ago, one is disabled, one hits its
/// rate limit; some events are refused.
async fn seed_operations(app: &TestApp) {
    let now = Utc::now();
    let kinds = [
        ("page interaction", "pageview"),
        ("page interaction", "pageview"),
        ("page interaction", "cta click"),
        ("form interaction", "submit"),
    ];
    // (name, seconds between events, quiet for the last minutes)
    for (name, every, quiet) in [
        ("checkout-web", 20, 0),
        ("marketing-site", 45, 0),
        ("ios-app", 60, 0),
        ("android-app", 90, 0),
        ("partner-feed", 300, 240),
    ] {
        let mut seeds = Vec::new();
        let mut i = 0i64;
        loop {
            i += 1;
            let at = now - chrono::Duration::seconds(i * every + quiet * 60 + 3);
            if now - at > chrono::Duration::hours(24) {
                break;
            }
            // Busier in the day than at night.
            let hour = i64::from(chrono::Timelike::hour(&at));
            if (i % 10) >= 2 + (hour + 18) % 24 / 3 {
                continue;
            }
            let (category, event) = kinds[i as usize % kinds.len()];
            let data = json!({"host": format!("{name}.example"), "path": "/", "element": "buy",
                              "form": {"plan": "team"}});
            seeds.push(Seed::new(Uuid::new_v4(), category, event, data, at));
        }
        app.seed_for(name, &seeds).await;
    }
    eye_entity::tokens::ensure_application(&app.db, "legacy-importer")
        .await
        .unwrap();
    eye_entity::tokens::set_application_disabled(&app.db, "legacy-importer", true)
        .await
        .unwrap();
    for (i, (application, field, code)) in [
        ("checkout-web", "data.element", "required"),
        ("checkout-web", "data.element", "required"),
        ("ios-app", "timestamp", "timestamp_in_future"),
        ("checkout-web", "data.element", "required"),
        ("android-app", "data", "not_object"),
        ("ios-app", "timestamp", "timestamp_in_future"),
        ("marketing-site", "data.path", "invalid_type"),
        ("checkout-web", "data.element", "required"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - chrono::Duration::minutes(i as i64 * 6 + 1);
        app.seed_rejected_for(
            application,
            "page interaction",
            json!({"host": "x.example"}),
            &[(field, code)],
            at,
        )
        .await;
    }
    let minute = now.duration_trunc(chrono::Duration::minutes(1)).unwrap();
    for (application, minutes_ago, requests) in [
        ("checkout-web", 2, 14),
        ("checkout-web", 3, 31),
        ("checkout-web", 4, 9),
        ("marketing-site", 40, 2),
    ] {
        eye_entity::rate_limited::Entity::insert(eye_entity::rate_limited::ActiveModel {
            application_id: sea_orm::Set(app.application_named(application).await),
            minute: sea_orm::Set(minute - chrono::Duration::minutes(minutes_ago)),
            requests: sea_orm::Set(requests),
            events: sea_orm::Set(requests * 25),
        })
        .exec(&app.db)
        .await
        .unwrap();
    }
    // One message from an api version no worker reads.
    let envelope = json!({"v": 2, "application_id": app.application_named("ios-app").await,
                          "token_id": Uuid::new_v4(), "received_at": now, "events": []});
    let publisher = app.queue.publisher(&app.settings).unwrap();
    publisher
        .publish(&serde_json::to_vec(&envelope).unwrap())
        .await
        .unwrap();
    app.wait_for_dead_letters(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_reads_a_busy_day_on_the_dashboard_in_a_browser() {
    let Some(browser) = Browser::start("admin_browser").await else {
        return;
    };
    let app = TestApp::spawn(Backend::Embedded).await;
    seed_operations(&app).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.goto(&format!("{}/", app.admin_address)).await;
    browser.wait_for_url("/login").await;
    browser.fill("#username", ADMIN_USER).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.click("#login").await;
    browser.find("#health").await;

    assert_eq!(browser.text("#total-dead").await, "1");
    assert_eq!(browser.text("#rejected-hour").await, "8");
    assert_eq!(browser.text("#rate-limited-requests").await, "56");
    assert_eq!(browser.text("#silent-applications").await, "1");
    assert_eq!(browser.text("#worker-lag").await, "caught up");
    let partner = app.application_named("partner-feed").await;
    assert_eq!(
        browser.text(&format!("#app-{partner} .app-state")).await,
        "silent"
    );
    assert_ne!(browser.text("#ingest-1m").await, "0");
    browser.screenshot("dashboard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_reads_a_days_stats_in_a_browser() {
    let Some(browser) = Browser::start("admin_browser").await else {
        return;
    };
    let app = TestApp::spawn(Backend::Embedded).await;
    let seeded = seed_day(&app).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    browser.goto(&format!("{}/stats", app.admin_address)).await;
    browser.wait_for_url("/login").await;
    browser.fill("#username", ADMIN_USER).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.click("#login").await;
    browser.find("#stats-buckets").await;

    // The last day, per hour: every seeded event and visit.
    let window = browser.text("#stats-window").await;
    assert!(
        window.starts_with(&format!("{seeded} events from")),
        "{window}"
    );
    assert_eq!(browser.text("#session-count").await, "40 sessions.");
    let types = browser.texts("#stats-types tbody tr").await;
    assert_eq!(types.len(), 3, "{types:?}");
    browser.screenshot("stats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analyst_starts_reports_and_downloads_one_in_a_browser() {
    let Some(browser) = Browser::start("admin_browser").await else {
        return;
    };
    // 40 sessions: more rows than a report may hold here, so that one fails.
    let options = eye_testkit::Options {
        settings: |s| s.report_max_rows = 30,
        ..eye_testkit::Options::default()
    };
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    seed_day(&app).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    browser
        .goto(&format!("{}/reports", app.admin_address))
        .await;
    browser.wait_for_url("/login").await;
    browser.fill("#username", ADMIN_USER).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.click("#login").await;
    browser.find("#no-reports").await;

    browser.select("#r-kind", "Sessions").await;
    browser.click("#start").await;
    browser.wait_for_url("started=").await;
    browser.find("tr.status-failed").await;
    let failed = browser.text("tr.status-failed .reason").await;
    assert!(
        failed.contains("more than 30 rows (report_max_rows)"),
        "{failed}"
    );

    browser.select("#r-kind", "Events by type").await;
    browser.click("#start").await;
    // The page reloads itself while a report runs.
    browser.find("tr.status-complete a.download").await;
    let rows = browser.texts("#reports tbody tr").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0].contains("Events by type") && rows[0].contains("complete"),
        "{rows:?}"
    );
    browser.screenshot("reports").await;
}
