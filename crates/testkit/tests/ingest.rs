//! What applications see when they post events, and what ends up stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use chrono::{DateTime, Utc};
use eye_testkit::{Backend, Options, TestApp, canonical_events, on_both_backends, pageview};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    the_three_canonical_events_are_stored_with_their_fields_in_utc,
    every_accepted_event_gets_an_id_and_a_given_id_is_kept,
    the_same_event_id_posted_twice_is_stored_once,
    copies_of_one_event_in_one_batch_count_once_for_their_session,
    a_gzip_body_is_accepted,
    shape_errors_answer_400_with_a_problem_per_field,
    wrong_media_types_and_encodings_answer_415,
    oversize_requests_answer_413_and_store_nothing,
    health_and_readiness_answer_200,
);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn the_three_canonical_events_are_stored_with_their_fields_in_utc(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = Uuid::new_v4();
    let response = app.post(&canonical_events(session)).await;
    assert_eq!(response.status(), 202);
    let ids: Vec<Uuid> =
        serde_json::from_value(response.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    assert_eq!(ids.len(), 3);

    app.wait_for_counts(3, 0).await;
    let stored = app.stored_events().await;
    let summary: Vec<_> = stored
        .iter()
        .map(|e| (e.category.as_str(), e.name.as_str(), e.timestamp))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "page interaction",
                "pageview",
                utc("2021-01-01T09:15:27.243860Z")
            ),
            (
                "page interaction",
                "cta click",
                utc("2021-01-01T09:15:28.5Z")
            ),
            ("form interaction", "submit", utc("2021-01-01T09:15:29Z")),
        ]
    );
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(stored.iter().all(|e| e.session_id == session));
    assert_eq!(
        eye_testkit::data_of(&stored[1]),
        json!({"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"})
    );
    assert_eq!(
        eye_testkit::data_of(&stored[2])["form"]["first_name"],
        "John"
    );
    assert!(
        stored
            .iter()
            .all(|e| e.received_at <= e.stored_at && e.received_at > utc("2026-01-01T00:00:00Z"))
    );

    let session = app
        .session(session)
        .await
        .expect("the session was recorded");
    assert_eq!(session.event_count, 3);
    assert_eq!(session.first_seen, utc("2021-01-01T09:15:27.243860Z"));
    assert_eq!(session.last_seen, utc("2021-01-01T09:15:29Z"));
}

async fn every_accepted_event_gets_an_id_and_a_given_id_is_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mine = Uuid::new_v4();
    let mut given = pageview("/", "2021-01-01 00:00:00");
    given["id"] = json!(mine);
    let generated = pageview("/a", "2021-01-01 00:00:01");
    let response = app.post(&json!([given, generated])).await;
    assert_eq!(response.status(), 202);
    let ids: Vec<Uuid> =
        serde_json::from_value(response.json::<Value>().await.unwrap()["ids"].clone()).unwrap();
    assert_eq!(ids[0], mine);
    assert_eq!(ids[1].get_version_num(), 7, "generated ids are UUIDv7");
    app.wait_for_counts(2, 0).await;
}

/// A pageview of `session` with a client-chosen id.
fn event_with_id(session: Uuid) -> Value {
    let mut event = pageview("/", "2021-01-01 00:00:00");
    event["id"] = json!(Uuid::new_v4());
    event["session_id"] = json!(session);
    event
}

async fn the_same_event_id_posted_twice_is_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = Uuid::new_v4();
    let once = event_with_id(session);
    assert_eq!(app.post(&once).await.status(), 202);
    assert_eq!(app.post(&json!([once, once])).await.status(), 202);
    let other = pageview("/b", "2021-01-01 00:00:05");
    assert_eq!(app.post(&other).await.status(), 202);
    // The last event stored proves the duplicates before it were handled.
    app.wait_for_counts(2, 0).await;
    assert_eq!(
        app.session(session).await.unwrap().event_count,
        1,
        "a duplicate does not count twice"
    );
}

async fn copies_of_one_event_in_one_batch_count_once_for_their_session(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let session = Uuid::new_v4();
    let once = event_with_id(session);
    let other = pageview("/b", "2021-01-01 00:00:05");
    let mut other = other;
    other["session_id"] = json!(session);
    assert_eq!(
        app.post(&json!([once, once, other, once])).await.status(),
        202
    );
    let outcome = app.worker().process_next_batch().await.unwrap();
    assert_eq!((outcome.stored, outcome.duplicates), (2, 2));
    assert_eq!(app.session(session).await.unwrap().event_count, 2);
}

async fn a_gzip_body_is_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = serde_json::to_vec(&canonical_events(Uuid::new_v4())).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&body).unwrap();
    let response = app
        .post_raw(
            Some(&app.token),
            "application/json",
            Some("gzip"),
            encoder.finish().unwrap(),
        )
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_counts(3, 0).await;

    let response = app
        .post_raw(
            Some(&app.token),
            "application/json",
            Some("gzip"),
            b"plain".to_vec(),
        )
        .await;
    assert_eq!(problem(response).await, (400, "invalid_gzip".into()));
}

async fn shape_errors_answer_400_with_a_problem_per_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let good = pageview("/", "2021-01-01 00:00:00");
    let body = json!([good, {"session_id": "not-a-uuid", "category": "c", "name": "n", "data": {}, "timestamp": "noon"}]);
    let response = app.post(&body).await;
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let details: Value = response.json().await.unwrap();
    assert_eq!(details["code"], "invalid_events");
    let fields: Vec<(&str, &str)> = details["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    // serde stops at the first bad field of an event; the good event is not queued either.
    assert_eq!(fields, [("[1].session_id", "invalid_uuid")]);

    for (body, code) in [
        (&b"{not json"[..], "invalid_json"),
        (b"42", "not_an_event"),
        (b"[]", "not_an_event"),
    ] {
        let response = app
            .post_raw(Some(&app.token), "application/json", None, body.to_vec())
            .await;
        assert_eq!(
            problem(response).await,
            (400, code.into()),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    expect_only_a_later_event_stored(&app).await;
}

async fn wrong_media_types_and_encodings_answer_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = serde_json::to_vec(&canonical_events(Uuid::new_v4())).unwrap();
    let form = app
        .post_raw(
            Some(&app.token),
            "application/x-www-form-urlencoded",
            None,
            body.clone(),
        )
        .await;
    assert_eq!(problem(form).await, (415, "unsupported_media_type".into()));
    let brotli = app
        .post_raw(
            Some(&app.token),
            "application/json",
            Some("br"),
            body.clone(),
        )
        .await;
    assert_eq!(problem(brotli).await, (415, "unsupported_encoding".into()));
    let charset = app
        .post_raw(
            Some(&app.token),
            "application/json; charset=utf-8",
            None,
            body,
        )
        .await;
    assert_eq!(charset.status(), 202);
}

async fn oversize_requests_answer_413_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let big_event = pageview("x".repeat(33 * 1024), "2021-01-01 00:00:00");
    assert_eq!(
        problem(app.post(&big_event).await).await,
        (413, "event_too_large".into())
    );

    let small = pageview("/", "2021-01-01 00:00:00");
    let too_many = Value::Array(vec![small.clone(); 501]);
    assert_eq!(
        problem(app.post(&too_many).await).await,
        (413, "too_many_events".into())
    );

    let padding = pageview("p".repeat(30 * 1024), "2021-01-01 00:00:00");
    let too_big = Value::Array(vec![padding; 20]);
    assert_eq!(
        problem(app.post(&too_big).await).await,
        (413, "payload_too_large".into())
    );

    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(b"[").unwrap();
    for _ in 0..5000 {
        bomb.write_all(serde_json::to_string(&small).unwrap().as_bytes())
            .unwrap();
        bomb.write_all(b",").unwrap();
    }
    let bomb = bomb.finish().unwrap();
    assert!(
        bomb.len() < 64 * 1024,
        "the compressed body itself is small"
    );
    let response = app
        .post_raw(Some(&app.token), "application/json", Some("gzip"), bomb)
        .await;
    assert_eq!(problem(response).await, (413, "payload_too_large".into()));

    let exactly_500 = Value::Array(vec![small; 500]);
    assert_eq!(app.post(&exactly_500).await.status(), 202);
    // Each copy gets its own id; nothing refused above was stored.
    app.wait_for_counts(500, 0).await;
}

async fn health_and_readiness_answer_200(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["healthz", "readyz"] {
        let response = app
            .client
            .get(format!("{}/{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// Status and `code` of a problem response.
async fn problem(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// Posts one valid event and waits for it: one worker takes messages in order, so anything
/// queued before it would have been stored or rejected first.
async fn expect_only_a_later_event_stored(app: &TestApp) {
    let later = pageview("/", "2021-01-01 00:00:00");
    assert_eq!(app.post(&later).await.status(), 202);
    app.wait_for_counts(1, 0).await;
}
