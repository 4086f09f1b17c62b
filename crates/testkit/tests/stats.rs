//! The stats api: counts from the per-minute rollups equal a count of the stored events for
//! any window, bucket and grouping (also after redelivery), session statistics equal those
//! computed from the events, each token reads its own application, and bad queries are named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, TimeZone, Utc};
use eye_core::token::Scope;
use eye_entity::{event_counts, events};
use eye_testkit::AdminClient;
use eye_testkit::{APPLICATION, Backend, Options, Seed, TestApp, on_both_backends, pageview};
use eye_worker::store::{self, EventRow, Row};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    counts_equal_the_stored_events_for_any_window_bucket_and_grouping,
    an_event_delivered_again_is_counted_once,
    session_stats_equal_those_computed_from_the_events,
    a_token_counts_its_own_application_and_an_all_token_every_one,
    bad_stats_queries_are_named_problems,
    the_stats_page_charts_counts_event_types_and_session_lengths,
    with_rollups_off_workers_store_without_counting_until_a_rebuild,
);

const OTHER: &str = "other-app";

/// A small deterministic generator, so a failing case can be run again.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

async fn read_token(app: &TestApp, scopes: &[Scope]) -> String {
    app.token_with(scopes, chrono::Duration::hours(1)).await.jwt
}

/// Events over three days in six types, two applications, at random seconds.
async fn seed_random(app: &TestApp, rng: &mut Rng, n: usize) {
    for application in [APPLICATION, OTHER] {
        let seeds: Vec<Seed> = (0..n)
            .map(|_| {
                let at = start() + TimeDelta::seconds(rng.below(3 * 24 * 3600) as i64);
                let category =
                    ["page interaction", "form interaction", "checkout"][rng.below(3) as usize];
                let name = ["click", "view"][rng.below(2) as usize];
                Seed::new(Uuid::new_v4(), category, name, json!({}), at)
            })
            .collect();
        app.seed_for(application, &seeds).await;
    }
}

fn bucket_start(at: DateTime<Utc>, bucket: &str) -> DateTime<Utc> {
    let width = match bucket {
        "minute" => TimeDelta::minutes(1),
        "hour" => TimeDelta::hours(1),
        _ => TimeDelta::days(1),
    };
    at.duration_trunc(width).unwrap()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What the api should answer, counted from the stored rows of `application`.
fn expected(
    stored: &[events::Model],
    application: Uuid,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    bucket: &str,
    group_by: &[&str],
    category: Option<&str>,
) -> BTreeMap<(String, String), i64> {
    let mut counts = BTreeMap::new();
    for event in stored.iter().filter(|e| {
        e.application_id == application
            && e.timestamp >= from
            && e.timestamp < to
            && category.is_none_or(|c| e.category == c)
    }) {
        let mut group = Vec::new();
        for g in group_by {
            group.push(match *g {
                "category" => event.category.clone(),
                _ => event.name.clone(),
            });
        }
        *counts
            .entry((
                rfc3339(bucket_start(event.timestamp, bucket)),
                group.join("/"),
            ))
            .or_default() += 1;
    }
    counts
}

fn answered(body: &Value, group_by: &[&str]) -> BTreeMap<(String, String), i64> {
    body["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let group: Vec<&str> = group_by.iter().map(|g| row[g].as_str().unwrap()).collect();
            (
                (row["start"].as_str().unwrap().to_owned(), group.join("/")),
                row["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn counts_equal_the_stored_events_for_any_window_bucket_and_grouping(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut rng = Rng(0x5eed_1234_abcd);
    seed_random(&app, &mut rng, 400).await;
    let stored = app.stored_events().await;
    let application = app.application_id_of(APPLICATION).await;
    let token = read_token(&app, &[Scope::EventsRead]).await;
    let groupings: [&[&str]; 4] = [
        &[],
        &["category"],
        &["name", "category"],
        &["category", "name"],
    ];

    for case in 0..25 {
        let bucket = ["minute", "hour", "day"][rng.below(3) as usize];
        let group_by = groupings[rng.below(4) as usize];
        // Any second in the three days and around them; the api widens to whole minutes.
        let from = start() + TimeDelta::seconds(rng.below(4 * 24 * 3600) as i64 - 12 * 3600);
        let span = match bucket {
            "minute" => rng.below(6 * 3600),
            _ => rng.below(4 * 24 * 3600),
        };
        let to = from + TimeDelta::seconds(span as i64 + 1);
        let category = (rng.below(3) == 0).then_some("checkout");
        let widened = (
            from.duration_trunc(TimeDelta::minutes(1)).unwrap(),
            (to + TimeDelta::minutes(1) - TimeDelta::microseconds(1))
                .duration_trunc(TimeDelta::minutes(1))
                .unwrap(),
        );
        let utc = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S");
        let mut path = format!(
            "/api/v1/stats/counts?bucket={bucket}&group_by={}&from={}&to={}",
            group_by.join(","),
            utc(from),
            utc(to)
        );
        if let Some(category) = category {
            path.push_str(&format!("&category={category}"));
        }
        let (status, body) = app.read_api(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "case {case}: {path}: {body}");
        let want = expected(&stored, application, widened, bucket, group_by, category);
        assert_eq!(answered(&body, group_by), want, "case {case}: {path}");
        assert_eq!(
            body["total"].as_i64().unwrap(),
            want.values().sum::<i64>(),
            "case {case}"
        );
        assert_eq!(body["from"], rfc3339(widened.0), "case {case}");
        assert_eq!(body["to"], rfc3339(widened.1), "case {case}");
    }

    // The whole of it, by day: every stored event of the application, once.
    let (_, body) = app
        .read_api(
            &token,
            "/api/v1/stats/counts?bucket=day&from=2026-02-28&to=2026-03-05",
        )
        .await;
    let own = stored.iter().filter(|e| e.application_id == application);
    assert_eq!(body["total"].as_i64().unwrap(), own.count() as i64);
    assert_eq!(body["total"], 400);
}

/// A batch written again, as a worker does when it stopped before acknowledging it, and an
/// event posted twice through the api: each counts once, in the rollups as in `events`.
async fn an_event_delivered_again_is_counted_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let application = app.application_id_of(APPLICATION).await;
    let session = Uuid::new_v4();
    let batch: Vec<Row> = (0..30)
        .map(|i| {
            Row::Event(EventRow {
                application_id: application,
                id: Uuid::now_v7(),
                session_id: session,
                category: "checkout".into(),
                name: ["click", "view"][i % 2].into(),
                data: "{}".into(),
                timestamp: start() + TimeDelta::seconds(i as i64 * 17),
                source: None,
                received_at: Utc::now(),
            })
        })
        .collect();
    let first = store::write(&app.db, &batch).await.unwrap();
    let again = store::write(&app.db, &batch).await.unwrap();
    assert_eq!((first.stored, again.stored, again.duplicates), (30, 0, 30));

    let mut event = pageview("/twice", "2026-03-01 00:03:30");
    event["id"] = json!(Uuid::new_v4());
    assert_eq!(app.post(&event).await.status(), 202);
    assert_eq!(app.post(&json!([event, event])).await.status(), 202);
    // The last event stored proves the copies before it were handled.
    assert_eq!(
        app.post(&pageview("/last", "2026-03-01 00:04:00"))
            .await
            .status(),
        202
    );
    app.wait_for_counts(32, 0).await;

    let stored = events::Entity::find().count(&app.db).await.unwrap() as i64;
    let counted: i64 = event_counts::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum();
    assert_eq!((stored, counted), (32, 32));
    let token = read_token(&app, &[Scope::EventsRead]).await;
    let (_, body) = app.read_api(&token,
        "/api/v1/stats/counts?bucket=minute&group_by=category&from=2026-03-01T00:00&to=2026-03-01T00:10",
    )
    .await;
    let stored = app.stored_events().await;
    let want = expected(
        &stored,
        application,
        (start(), start() + TimeDelta::minutes(10)),
        "minute",
        &["category"],
        None,
    );
    assert_eq!(answered(&body, &["category"]), want);
    assert_eq!(body["total"], 32);
}

/// Linear interpolation between the two nearest ranks, as `percentile_cont`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - rank.floor())
}

async fn session_stats_equal_those_computed_from_the_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut rng = Rng(0xfeed_5eed_0042);
    // 60 sessions of 1 to 20 events, starting over two days, each lasting up to two hours.
    let mut seeds = Vec::new();
    for _ in 0..60 {
        let session = Uuid::new_v4();
        let began = start() + TimeDelta::seconds(rng.below(2 * 24 * 3600) as i64);
        for _ in 0..=rng.below(20) {
            let at = began + TimeDelta::milliseconds(rng.below(2 * 3600 * 1000) as i64);
            seeds.push(Seed::new(
                session,
                "page interaction",
                "view",
                json!({}),
                at,
            ));
        }
    }
    app.seed(&seeds).await;
    let token = read_token(&app, &[Scope::EventsRead]).await;
    let stored = app.stored_events().await;

    for (from, to) in [
        ("2026-03-01", "2026-03-03"),
        ("2026-03-01T06:00", "2026-03-01T18:30"),
        ("2026-03-02", "2026-03-02T23:59"),
        ("2026-02-01", "2026-02-02"),
    ] {
        let window = (
            eye_admin::parse_time("from", from).unwrap().unwrap(),
            eye_admin::parse_time("to", to).unwrap().unwrap(),
        );
        let mut sessions: BTreeMap<Uuid, (DateTime<Utc>, DateTime<Utc>, f64)> = BTreeMap::new();
        for e in &stored {
            let s = sessions
                .entry(e.session_id)
                .or_insert((e.timestamp, e.timestamp, 0.0));
            s.0 = s.0.min(e.timestamp);
            s.1 = s.1.max(e.timestamp);
            s.2 += 1.0;
        }
        let began: Vec<_> = sessions
            .values()
            .filter(|(first, _, _)| *first >= window.0 && *first < window.1)
            .collect();
        let mut counts: Vec<f64> = began.iter().map(|s| s.2).collect();
        let mut durations: Vec<f64> = began
            .iter()
            .map(|s| (s.1 - s.0).num_microseconds().unwrap() as f64 / 1e6)
            .collect();
        counts.sort_by(f64::total_cmp);
        durations.sort_by(f64::total_cmp);

        let path = format!("/api/v1/stats/sessions?from={from}&to={to}");
        let (status, body) = app.read_api(&token, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["sessions"], began.len(), "{path}");
        if began.is_empty() {
            assert_eq!(body["events_per_session"], Value::Null);
            assert_eq!(body["duration_seconds"], Value::Null);
            continue;
        }
        // SQLite's date functions keep milliseconds.
        for (field, values, tolerance) in [
            ("events_per_session", &counts, 1e-9),
            ("duration_seconds", &durations, 2e-3),
        ] {
            let average = values.iter().sum::<f64>() / values.len() as f64;
            for (key, want) in [
                ("average", average),
                ("p50", percentile(values, 0.5)),
                ("p90", percentile(values, 0.9)),
            ] {
                let got = body[field][key].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= tolerance * want.abs().max(1.0),
                    "{path}: {field}.{key} is {got}, computed {want}"
                );
            }
        }
    }
}

async fn a_token_counts_its_own_application_and_an_all_token_every_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut rng = Rng(0xabc);
    seed_random(&app, &mut rng, 50).await;
    let window = "from=2026-03-01&to=2026-03-04";
    let own = read_token(&app, &[Scope::EventsRead]).await;
    let (_, body) = app
        .read_api(&own, &format!("/api/v1/stats/counts?bucket=day&{window}"))
        .await;
    assert_eq!(body["total"], 50);
    // Naming another application reads nothing, as the events listing does.
    let (status, body) = app
        .read_api(
            &own,
            &format!("/api/v1/stats/counts?application={OTHER}&{window}"),
        )
        .await;
    assert_eq!((status, body["total"].clone()), (StatusCode::OK, json!(0)));
    let (_, body) = app
        .read_api(
            &own,
            &format!("/api/v1/stats/sessions?application={OTHER}&{window}"),
        )
        .await;
    assert_eq!(body["sessions"], 0);

    let all = read_token(&app, &[Scope::EventsRead, Scope::EventsReadAll]).await;
    let (_, body) = app
        .read_api(
            &all,
            &format!("/api/v1/stats/counts?bucket=day&group_by=application&{window}"),
        )
        .await;
    assert_eq!(body["total"], 100);
    let mut by_application: BTreeMap<String, i64> = BTreeMap::new();
    for row in body["counts"].as_array().unwrap() {
        *by_application
            .entry(row["application"].as_str().unwrap().to_owned())
            .or_default() += row["count"].as_i64().unwrap();
    }
    assert_eq!(
        by_application,
        BTreeMap::from([(APPLICATION.to_owned(), 50), (OTHER.to_owned(), 50)])
    );
    let (_, body) = app
        .read_api(
            &all,
            &format!("/api/v1/stats/sessions?application={OTHER}&{window}"),
        )
        .await;
    assert_eq!(body["sessions"], 50);
}

async fn bad_stats_queries_are_named_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = read_token(&app, &[Scope::EventsRead]).await;
    for (query, names) in [
        ("group_by=category,colour", "`colour`"),
        ("bucket=week", "`bucket`"),
        ("from=yesterday", "`from`"),
        ("from=2026-03-02&to=2026-03-01", "`from` is later than `to`"),
        (
            "bucket=minute&from=2026-03-01&to=2026-03-09",
            "11520 buckets of a minute",
        ),
    ] {
        let (status, problem) = app
            .read_api(&token, &format!("/api/v1/stats/counts?{query}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {problem}");
        assert_eq!(problem["code"], "invalid_filter", "{query}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(names), "{query}: {detail}");
    }
    let (status, problem) = app.read_api(&token, "/api/v1/stats/sessions?to=soon").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_filter"))
    );
    let (status, problem) = app.read_api(&app.token, "/api/v1/stats/counts").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("missing_scope"))
    );
    // A week of minutes is the most one answer spans; an empty window counts nothing.
    let (status, _) = app
        .read_api(
            &token,
            "/api/v1/stats/counts?bucket=minute&from=2026-03-01&to=2026-03-08",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .read_api(
            &token,
            "/api/v1/stats/counts?from=2026-03-01T10:00&to=2026-03-01T10:00",
        )
        .await;
    assert_eq!((status, body["total"].clone()), (StatusCode::OK, json!(0)));
}

async fn the_stats_page_charts_counts_event_types_and_session_lengths(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let at = |h: u32, m: u32, s: u32| Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap();
    let (long, short, form) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let view = |session, t| Seed::new(session, "page interaction", "pageview", json!({}), t);
    let submit = |t| Seed::new(form, "form interaction", "submit", json!({}), t);
    app.seed(&[
        view(long, at(10, 0, 0)),
        view(long, at(10, 20, 0)),
        view(long, at(10, 40, 0)),
        view(short, at(11, 5, 0)),
        submit(at(11, 30, 0)),
        submit(at(11, 30, 30)),
    ])
    .await;
    app.seed_for(OTHER, &[view(Uuid::new_v4(), at(10, 10, 0))])
        .await;

    let mut anonymous = AdminClient::new(&app.admin_address);
    let (status, _) = anonymous.get("/stats").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the page needs a login");

    let mut admin = app.admin().await;
    let window = "from=2026-03-01T10:00&to=2026-03-01T12:00";
    let (status, page) = admin.get(&format!("/stats?bucket=hour&{window}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for shown in [
        "7 events from 2026-03-01 10:00 to 2026-03-01 12:00 UTC",
        "<td>2026-03-01 10:00</td><td>4</td>",
        "<td>2026-03-01 11:00</td><td>3</td>",
        "<title>2026-03-01 10:00 UTC: 4</title>",
        "<td>page interaction</td><td>pageview</td><td>5</td>",
        "<td>form interaction</td><td>submit</td><td>2</td>",
        "4 sessions.",
        "<td>under 1 s</td><td>2</td>",
        "<td>10 s–1 min</td><td>1</td>",
        "<td>15 min–1 h</td><td>1</td>",
        "<title>15 min–1 h: 1</title>",
    ] {
        assert!(
            page.contains(shown),
            "{shown} missing from the page:\n{page}"
        );
    }

    // One application, by minute: the other's event is gone, empty minutes show as zero.
    let (_, page) = admin
        .get(&format!(
            "/stats?bucket=minute&application={APPLICATION}&{window}"
        ))
        .await;
    for shown in [
        "6 events from",
        "<td>2026-03-01 10:00</td><td>1</td>",
        "<td>2026-03-01 10:10</td><td>0</td>",
        "<td>2026-03-01 11:30</td><td>2</td>",
        "3 sessions.",
    ] {
        assert!(
            page.contains(shown),
            "{shown} missing from the page:\n{page}"
        );
    }

    let (status, page) = admin
        .get("/stats?bucket=minute&from=2026-03-01&to=2026-03-03")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("at most 600 are counted"), "{page}");
    let (status, page) = admin.get("/stats?from=2026-02-01&to=2026-02-02").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No session began in this window"), "{page}");
}

async fn with_rollups_off_workers_store_without_counting_until_a_rebuild(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| s.worker_rollups = false,
            ..Default::default()
        },
    )
    .await;
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let batch: Vec<Value> = (0..3).map(|i| pageview(format!("/{i}"), &now)).collect();
    assert_eq!(
        app.post(&Value::Array(batch)).await.status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_counts(3, 0).await;
    assert_eq!(
        event_counts::Entity::find().count(&app.db).await.unwrap(),
        0
    );
    let hour = TimeDelta::hours(1);
    let counted = eye_entity::rollups::rebuild(&app.db, Utc::now() - hour, Utc::now() + hour)
        .await
        .unwrap();
    assert_eq!(counted, 3);
    let rows = event_counts::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.count).sum::<i64>(), 3);
}
