//! What the worker stores, what it rejects and why, and that it never loses what was accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use eye_core::settings::UnknownEventPolicy;
use eye_testkit::{Backend, Options, TestApp, event, on_both_backends, on_services, pageview};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    invalid_and_future_events_are_rejected_with_reasons_beside_the_valid_ones,
    unknown_event_types_follow_the_configured_policy,
    two_workers_count_a_thousand_events_of_one_session_exactly,
    an_event_with_a_nul_character_is_rejected_and_its_neighbours_stored,
);
on_services!(a_database_outage_delays_storage_but_loses_nothing);

/// The `(field, code)` pairs of a rejected event.
fn reasons(rejected: &eye_entity::rejected_events::Model) -> Vec<(String, String)> {
    rejected
        .reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["field"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn invalid_and_future_events_are_rejected_with_reasons_beside_the_valid_ones(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let future = (Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let slightly_ahead = (Utc::now() + chrono::Duration::seconds(20)).to_rfc3339();
    let body = json!([
        pageview("/", &future),
        event(
            "page interaction",
            "cta click",
            json!({"host": "h", "path": 7}),
            "2021-01-01 00:00:00"
        ),
        event(
            "form interaction",
            "submit",
            json!({"host": "h"}),
            "2021-01-01 00:00:00"
        ),
        event(
            "page interaction",
            "pageview",
            json!(["not", "an", "object"]),
            "2021-01-01 00:00:00"
        ),
        pageview("/ok", &slightly_ahead),
    ]);
    assert_eq!(app.post(&body).await.status(), 202);

    let outcome = app.worker().process_next_batch().await.unwrap();
    assert_eq!(
        (outcome.stored, outcome.rejected, outcome.dead_lettered),
        (1, 4, 0)
    );
    let stored = app.stored_events().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        eye_testkit::data_of(&stored[0])["path"],
        "/ok",
        "within the allowed clock skew"
    );

    let rejected = app.rejected_events().await;
    let mut found: Vec<(String, Vec<(String, String)>)> = rejected
        .iter()
        .map(|r| (r.name.clone(), reasons(r)))
        .collect();
    found.sort();
    let pair = |f: &str, c: &str| (f.to_owned(), c.to_owned());
    assert_eq!(
        found,
        [
            ("cta click".into(), vec![pair("data.path", "invalid_type")]),
            ("pageview".into(), vec![pair("data", "not_object")]),
            (
                "pageview".into(),
                vec![pair("timestamp", "timestamp_in_future")]
            ),
            (
                "submit".into(),
                vec![pair("data.form", "required"), pair("data.path", "required")]
            ),
        ]
    );
    let submit = rejected.iter().find(|r| r.name == "submit").unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&submit.payload).unwrap()["data"],
        json!({"host": "h"}),
        "the raw event is kept"
    );
    assert!(
        submit.reasons[0]["message"]
            .as_str()
            .unwrap()
            .contains("required")
    );
}

async fn unknown_event_types_follow_the_configured_policy(backend: Backend) {
    let accepting = TestApp::spawn(backend.clone()).await;
    let unknown = event(
        "video",
        "play",
        json!({"position": 12}),
        "2021-01-01 00:00:00",
    );
    assert_eq!(accepting.post(&unknown).await.status(), 202);
    accepting.wait_for_counts(1, 0).await;

    let options = Options {
        settings: |s| s.unknown_events = UnknownEventPolicy::Reject,
        ..Options::default()
    };
    let rejecting = TestApp::spawn_with(backend, options).await;
    assert_eq!(rejecting.post(&unknown).await.status(), 202);
    rejecting.wait_for_counts(0, 1).await;
    assert_eq!(
        reasons(&rejecting.rejected_events().await[0]),
        [("name".to_owned(), "unknown_event_type".to_owned())]
    );
}

async fn two_workers_count_a_thousand_events_of_one_session_exactly(backend: Backend) {
    let options = Options {
        workers: 2,
        settings: |s| {
            s.worker_batch_messages = 4;
            s.worker_prefetch = 8;
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let session = Uuid::new_v4();
    let start = eye_core::event::now() - chrono::Duration::hours(1);
    let posts = (0..100).map(|request| {
        let batch: Vec<Value> = (0..10)
            .map(|i| {
                let at = start + chrono::Duration::milliseconds(request * 10 + i);
                let mut e = pageview("/", &at.to_rfc3339());
                e["session_id"] = json!(session);
                e
            })
            .collect();
        let app = &app;
        async move { app.post(&Value::Array(batch)).await.status() }
    });
    let statuses = futures_util::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    app.wait_for_counts(1000, 0).await;
    let session = app.session(session).await.unwrap();
    assert_eq!(session.event_count, 1000);
    assert_eq!(session.first_seen, start);
    assert_eq!(
        session.last_seen,
        start + chrono::Duration::milliseconds(999)
    );
}

async fn a_database_outage_delays_storage_but_loses_nothing(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            proxy_database: true,
            ..Options::default()
        },
    )
    .await;
    let proxy = app.database_proxy.as_ref().unwrap();
    let first = pageview("/1", "2021-01-01 00:00:00");
    assert_eq!(app.post(&first).await.status(), 202);
    app.wait_for_counts(1, 0).await;

    proxy.cut();
    let during: Vec<Value> = (0..20)
        .map(|i| {
            event(
                "page interaction",
                "pageview",
                json!({"host": "h", "path": format!("/{i}")}),
                "2021-01-01 00:00:00",
            )
        })
        .collect();
    // The api checks tokens from its cache, so it keeps accepting while the database is away.
    assert_eq!(app.post(&Value::Array(during)).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.counts().await,
        (1, 0),
        "nothing can be stored while the database is away"
    );

    proxy.restore();
    app.wait_for_counts(21, 0).await;
}

async fn an_event_with_a_nul_character_is_rejected_and_its_neighbours_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let good = pageview("/", "2021-01-01 00:00:00");
    let nul = event(
        "page interaction",
        "pageview",
        json!({"host": "h\u{0}x", "path": "/"}),
        "2021-01-01 00:00:00",
    );
    assert_eq!(app.post(&json!([good, nul])).await.status(), 202);
    app.wait_for_counts(1, 1).await;
    let rejected = &app.rejected_events().await[0];
    assert_eq!(
        reasons(rejected),
        [("data.host".to_owned(), "invalid_character".to_owned())]
    );
    assert!(
        rejected.payload.contains(r#""host":"h\u0000x""#),
        "kept exactly as sent: {}",
        rejected.payload
    );
}
