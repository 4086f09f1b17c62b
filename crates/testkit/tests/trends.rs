//! Per-minute trends: two workers offering the same minutes publish each once, with the
//! minute's counts per type and top pages; every subscriber of the admin's stream gets each
//! minute once, narrowed to the applications its token reads; and, in real time, the minute
//! that just ended is published once by one of two workers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use eye_cli::stack;
use eye_core::token::Scope;
use eye_entity::rollups::minute_of;
use eye_testkit::{APPLICATION, Backend, Options, Seed, Sse, TestApp, on_both_backends};
use eye_worker::trends::{Outcome, TrendRunner};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

on_both_backends!(
    two_workers_offering_the_same_minutes_publish_each_once_with_its_counts_and_pages,
    the_minute_that_ended_is_published_once_by_one_of_two_workers,
);

const TRENDS: &str = "/api/v1/trends/stream";

/// The next trend of `stream`, or none within `wait`.
async fn trend(stream: &mut Sse, wait: Duration) -> Option<Value> {
    let (kind, trend) = stream.event(wait).await?;
    assert_eq!(kind, "trend", "{trend}");
    Some(trend)
}

fn minute_text(minute: DateTime<Utc>) -> String {
    minute.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The trend's counts as `(application, category, name, count)`.
fn counts(trend: &Value) -> BTreeSet<(String, String, String, i64)> {
    trend["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["application"].as_str().unwrap().to_owned(),
                c["category"].as_str().unwrap().to_owned(),
                c["name"].as_str().unwrap().to_owned(),
                c["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The trend's pages as `(application, host, path, count)`, in the order sent.
fn pages(trend: &Value) -> Vec<(String, Option<String>, String, i64)> {
    trend["top_pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["application"].as_str().unwrap().to_owned(),
                p["host"].as_str().map(str::to_owned),
                p["path"].as_str().unwrap().to_owned(),
                p["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn seed(category: &str, name: &str, data: Value, at: DateTime<Utc>) -> Seed {
    Seed::new(Uuid::new_v4(), category, name, data, at)
}

async fn runner(app: &TestApp) -> TrendRunner {
    // A connection of its own, as another worker process has.
    let db = stack::connect(app.settings.database_url().unwrap())
        .await
        .unwrap();
    TrendRunner::new(db, app.queue.trend_publisher(&app.settings))
}

async fn two_workers_offering_the_same_minutes_publish_each_once_with_its_counts_and_pages(
    backend: Backend,
) {
    // No worker of the app's own: this test decides which minutes are offered.
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let first = minute_of(Utc::now()) - TimeDelta::minutes(10);
    let at =
        |minute: i64, second: i64| first + TimeDelta::minutes(minute) + TimeDelta::seconds(second);
    let page = |path: &str| json!({"host": "shop.example", "path": path});
    let mut shop = Vec::new();
    for second in [0, 10, 59] {
        shop.push(seed(
            "page interaction",
            "pageview",
            page("/a"),
            at(0, second),
        ));
    }
    for second in [5, 6] {
        shop.push(seed(
            "page interaction",
            "pageview",
            page("/b"),
            at(0, second),
        ));
    }
    // A click on /a counts for the page too; an event without a path does not.
    shop.push(seed("page interaction", "cta click", page("/a"), at(0, 30)));
    shop.push(seed("ui", "resize", json!({"width": 800}), at(0, 31)));
    // The next minute, and one just outside the first (its last microsecond is inside).
    shop.push(seed("page interaction", "pageview", page("/c"), at(1, 0)));
    shop.push(seed(
        "page interaction",
        "pageview",
        json!({"path": "/no-host"}),
        at(1, 0) - TimeDelta::microseconds(1),
    ));
    app.seed_for("shop", &shop).await;
    app.seed_for(
        "blog",
        &[seed(
            "page interaction",
            "pageview",
            json!({"host": "blog.example", "path": "/x"}),
            at(0, 1),
        )],
    )
    .await;

    let all = app
        .token_for("shop", &[Scope::EventsReadAll], TimeDelta::hours(1))
        .await
        .jwt;
    let own = app
        .token_for("shop", &[Scope::EventsRead], TimeDelta::hours(1))
        .await
        .jwt;
    let mut everyone = Sse::open(&app, &all, TRENDS).await;
    let mut shop_only = Sse::open(&app, &own, TRENDS).await;

    let (a, b) = (runner(&app).await, runner(&app).await);
    for minute in [first, at(1, 0), at(2, 0)] {
        let offers = tokio::join!(
            a.offer(minute),
            b.offer(minute),
            a.offer(minute),
            b.offer(minute)
        );
        let published = [offers.0, offers.1, offers.2, offers.3]
            .into_iter()
            .filter(|o| matches!(o.as_ref().unwrap(), Outcome::Published(_)))
            .count();
        assert_eq!(
            published, 1,
            "minute {minute}: one of four offers publishes"
        );
    }
    // A minute before the last published is never published again.
    assert!(matches!(a.offer(first).await.unwrap(), Outcome::NotElected));

    let wait = Duration::from_secs(10);
    let mut trends = Vec::new();
    for _ in 0..3 {
        trends.push(
            trend(&mut everyone, wait)
                .await
                .expect("a trend for each minute"),
        );
    }
    assert_eq!(
        trend(&mut everyone, Duration::from_secs(2)).await,
        None,
        "each minute once"
    );
    let minutes: Vec<_> = trends.iter().map(|t| t["minute"].clone()).collect();
    assert_eq!(
        minutes,
        [first, at(1, 0), at(2, 0)].map(|m| json!(minute_text(m)))
    );

    let of = |application: &str, category: &str, name: &str, count: i64| {
        (application.into(), category.into(), name.into(), count)
    };
    let first_counts = BTreeSet::from([
        of("shop", "page interaction", "pageview", 6),
        of("shop", "page interaction", "cta click", 1),
        of("shop", "ui", "resize", 1),
        of("blog", "page interaction", "pageview", 1),
    ]);
    assert_eq!(counts(&trends[0]), first_counts);
    let host = |h: &str| Some(h.to_owned());
    let mut first_pages = pages(&trends[0]);
    first_pages.sort_by(|x, y| x.0.cmp(&y.0).then(y.3.cmp(&x.3)));
    assert_eq!(
        first_pages,
        [
            ("blog".into(), host("blog.example"), "/x".into(), 1),
            ("shop".into(), host("shop.example"), "/a".into(), 4),
            ("shop".into(), host("shop.example"), "/b".into(), 2),
            ("shop".into(), None, "/no-host".into(), 1),
        ]
    );
    assert_eq!(trends[0]["pages_counted"], true);
    assert_eq!(
        counts(&trends[1]),
        BTreeSet::from([of("shop", "page interaction", "pageview", 1)])
    );
    assert_eq!(
        pages(&trends[1]),
        [("shop".into(), host("shop.example"), "/c".into(), 1)]
    );
    // A minute with nothing stored still comes, empty.
    assert!(counts(&trends[2]).is_empty() && pages(&trends[2]).is_empty());

    // The counts equal the stored events of each minute.
    for trend in &trends {
        let minute: DateTime<Utc> = serde_json::from_value(trend["minute"].clone()).unwrap();
        let stored = app
            .stored_events()
            .await
            .into_iter()
            .filter(|e| minute_of(e.timestamp.to_utc()) == minute)
            .count() as i64;
        let counted: i64 = counts(trend).iter().map(|c| c.3).sum();
        assert_eq!(counted, stored, "minute {minute}");
    }

    // A token of one application gets the same minutes with only its own numbers.
    for expected in &trends {
        let trend = trend(&mut shop_only, wait).await.unwrap();
        assert_eq!(trend["minute"], expected["minute"]);
        let own_counts: BTreeSet<_> = counts(expected)
            .into_iter()
            .filter(|c| c.0 == "shop")
            .collect();
        assert_eq!(counts(&trend), own_counts);
        assert!(pages(&trend).iter().all(|p| p.0 == "shop"));
        assert!(!trend.to_string().contains("blog"), "{trend}");
    }
}

async fn the_minute_that_ended_is_published_once_by_one_of_two_workers(backend: Backend) {
    // One worker process in the app, and a second trends publisher on its own connection.
    let app = TestApp::spawn(backend).await;
    let second = runner(&app).await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(second.run_until_stopped(stop.clone()));
    let token = app
        .token_for(APPLICATION, &[Scope::EventsRead], TimeDelta::hours(1))
        .await
        .jwt;
    let mut stream = Sse::open(&app, &token, TRENDS).await;

    let minute = minute_of(Utc::now());
    let posted: Vec<Value> = (0..3)
        .map(|i| {
            eye_testkit::event(
                "page interaction",
                "pageview",
                json!({"host": "h", "path": format!("/{}", i % 2)}),
                &minute.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
        })
        .collect();
    assert_eq!(
        app.post(&Value::Array(posted)).await.status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_counts(3, 0).await;

    // Published 10 s after the minute ends, by the first tick after: 75 s at most.
    let mut seen = Vec::new();
    let ours = loop {
        let trend = trend(&mut stream, Duration::from_secs(90))
            .await
            .expect("the minute is published within 90 s");
        seen.push(trend["minute"].as_str().unwrap().to_owned());
        if trend["minute"] == json!(minute_text(minute)) {
            break trend;
        }
    };
    let mut once = seen.clone();
    once.dedup();
    assert_eq!(once, seen, "each minute comes once: {seen:?}");
    assert_eq!(
        counts(&ours),
        BTreeSet::from([(
            APPLICATION.to_owned(),
            "page interaction".to_owned(),
            "pageview".to_owned(),
            3
        )])
    );
    assert_eq!(
        pages(&ours),
        [
            (APPLICATION.into(), Some("h".into()), "/0".into(), 2),
            (APPLICATION.into(), Some("h".into()), "/1".into(), 1),
        ]
    );
    // Both publishers offer every 5 s; none publishes the minute again.
    assert_eq!(trend(&mut stream, Duration::from_secs(6)).await, None);
    stop.cancel();
    task.await.unwrap();
}
