//! The JSON read api: events:read tokens, the events filters with cursors, one session, and
//! rejected events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use eye_core::token::Scope;
use eye_testkit::{Backend, Seed, TestApp, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    the_read_api_needs_a_token_with_the_read_scope,
    events_are_read_page_by_page_with_the_same_filters,
    events_sharing_one_timestamp_page_without_repeats_or_gaps,
    a_session_reads_as_its_summary_and_events_in_time_order,
    rejected_events_are_read_with_their_reasons_and_payload,
);

async fn read_token(app: &TestApp) -> String {
    app.token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await
        .jwt
}

async fn get(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.admin_address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn the_read_api_needs_a_token_with_the_read_scope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .client
        .get(format!("{}/api/v1/events", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, problem) = get(&app, &app.token, "/api/v1/events").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("missing_scope"))
    );
    let (status, body) = get(&app, &read_token(&app).await, "/api/v1/events").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"], json!([]));
}

async fn events_are_read_page_by_page_with_the_same_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let seeds: Vec<Seed> = (0..23)
        .map(|i| {
            let category = if i % 2 == 0 {
                "page interaction"
            } else {
                "form interaction"
            };
            let time = Utc.with_ymd_and_hms(2021, 3, 1, 0, i, 0).unwrap();
            Seed::new(Uuid::new_v4(), category, "x", json!({"i": i}), time)
        })
        .collect();
    app.seed(&seeds).await;
    let token = read_token(&app).await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/events?category=page+interaction&limit=5".to_owned();
    loop {
        let (status, body) = get(&app, &token, &path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let events = body["events"].as_array().unwrap();
        assert!(events.len() <= 5);
        seen.extend(events.iter().map(|e| e["data"]["i"].as_i64().unwrap()));
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/events?category=page+interaction&limit=5&cursor={cursor}")
            }
            None => break,
        }
    }
    let expected: Vec<i64> = (0..23).rev().filter(|i| i % 2 == 0).collect();
    assert_eq!(seen, expected, "newest first, every match once");

    let (_, body) = get(
        &app,
        &token,
        "/api/v1/events?from=2021-03-01T00:10&to=2021-03-01T00:12",
    )
    .await;
    let times: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        ["2021-03-01T00:11:00.000000Z", "2021-03-01T00:10:00.000000Z"]
    );
    assert_eq!(body["events"][0]["application"], "test-app");

    for bad in [
        "from=soon",
        "session=nope",
        "cursor=123",
        "limit=0",
        "limit=100000",
    ] {
        let (status, problem) = get(&app, &token, &format!("/api/v1/events?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(problem["code"], "invalid_filter", "{bad}");
    }
}

async fn a_session_reads_as_its_summary_and_events_in_time_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = Uuid::new_v4();
    let times = [5, 1, 3].map(|m| Utc.with_ymd_and_hms(2021, 3, 1, 8, m, 0).unwrap());
    let seeds: Vec<Seed> = times
        .iter()
        .map(|t| Seed::new(session, "page interaction", "pageview", json!({}), *t))
        .collect();
    app.seed(&seeds).await;
    let token = read_token(&app).await;
    let (status, body) = get(&app, &token, &format!("/api/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["event_count"], 3);
    assert_eq!(body["session"]["first_seen"], "2021-03-01T08:01:00.000000Z");
    assert_eq!(body["session"]["last_seen"], "2021-03-01T08:05:00.000000Z");
    let order: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "2021-03-01T08:01:00.000000Z",
            "2021-03-01T08:03:00.000000Z",
            "2021-03-01T08:05:00.000000Z"
        ]
    );
    let (status, problem) = get(
        &app,
        &token,
        &format!("/api/v1/sessions/{}", Uuid::new_v4()),
    )
    .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

async fn rejected_events_are_read_with_their_reasons_and_payload(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = Utc::now();
    let future = app
        .seed_rejected(
            "page interaction",
            json!({"path": "/"}),
            &[("timestamp", "timestamp_in_future")],
            now,
        )
        .await;
    app.seed_rejected(
        "page interaction",
        json!({}),
        &[("data.host", "required")],
        now,
    )
    .await;
    let token = read_token(&app).await;
    let (status, body) = get(
        &app,
        &token,
        "/api/v1/rejected-events?reason=timestamp_in_future",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["rejected_events"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], future.to_string());
    assert_eq!(rows[0]["payload"], json!({"path": "/"}));
    assert_eq!(rows[0]["reasons"][0]["code"], "timestamp_in_future");
    let (_, body) = get(&app, &token, "/api/v1/rejected-events?application=test-app").await;
    assert_eq!(body["rejected_events"].as_array().unwrap().len(), 2);
    let (_, body) = get(
        &app,
        &token,
        "/api/v1/rejected-events?application=elsewhere",
    )
    .await;
    assert_eq!(body["rejected_events"], json!([]));
}

async fn events_sharing_one_timestamp_page_without_repeats_or_gaps(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let time = Utc.with_ymd_and_hms(2021, 3, 1, 12, 0, 0).unwrap();
    let seeds: Vec<Seed> = (0..12)
        .map(|i| {
            Seed::new(
                Uuid::new_v4(),
                "page interaction",
                "x",
                json!({"i": i}),
                time,
            )
        })
        .collect();
    let mut ids: Vec<String> = app.seed(&seeds).await.iter().map(Uuid::to_string).collect();
    let token = read_token(&app).await;
    let (mut seen, mut sizes) = (Vec::new(), Vec::new());
    let mut path = "/api/v1/events?limit=5".to_owned();
    loop {
        let (_, body) = get(&app, &token, &path).await;
        let events = body["events"].as_array().unwrap();
        sizes.push(events.len());
        seen.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/events?limit=5&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [5, 5, 2]);
    ids.sort();
    ids.reverse();
    assert_eq!(seen, ids, "ties are broken by id, newest id first");
}
