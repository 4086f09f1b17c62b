//! The JSON read api: events:read tokens, the events filters with cursors, one session, and
//! rejected events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeZone, Utc};
use eye_core::token::Scope;
use eye_testkit::{Backend, Seed, TestApp, on_both_backends};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    the_read_api_needs_a_token_with_the_read_scope,
    events_are_read_page_by_page_with_the_same_filters,
    events_sharing_one_timestamp_page_without_repeats_or_gaps,
    a_session_reads_as_its_summary_and_events_in_time_order,
    rejected_events_are_read_with_their_reasons_and_payload,
    a_read_token_reads_only_its_own_applications_events_sessions_and_rejections,
    an_all_applications_token_reads_every_application_and_names_a_sessions_application,
);

async fn read_token(app: &TestApp) -> String {
    app.token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await
        .jwt
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
    let (status, problem) = app.read_api(&app.token, "/api/v1/events").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("missing_scope"))
    );
    let (status, body) = app
        .read_api(&read_token(&app).await, "/api/v1/events")
        .await;
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
        let (status, body) = app.read_api(&token, &path).await;
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

    let (_, body) = app
        .read_api(
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
        let (status, problem) = app.read_api(&token, &format!("/api/v1/events?{bad}")).await;
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
    let (status, body) = app
        .read_api(&token, &format!("/api/v1/sessions/{session}"))
        .await;
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
    let (status, problem) = app
        .read_api(&token, &format!("/api/v1/sessions/{}", Uuid::new_v4()))
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
    let (status, body) = app
        .read_api(&token, "/api/v1/rejected-events?reason=timestamp_in_future")
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["rejected_events"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], future.to_string());
    assert_eq!(rows[0]["payload"], json!({"path": "/"}));
    assert_eq!(rows[0]["reasons"][0]["code"], "timestamp_in_future");
    let (_, body) = app
        .read_api(&token, "/api/v1/rejected-events?application=test-app")
        .await;
    assert_eq!(body["rejected_events"].as_array().unwrap().len(), 2);
    let (_, body) = app
        .read_api(&token, "/api/v1/rejected-events?application=elsewhere")
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
        let (_, body) = app.read_api(&token, &path).await;
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

const OTHER: &str = "other-app";

/// Two applications, each with a session of events and a rejected event.
struct TwoApplications {
    own: Uuid,
    other: Uuid,
    own_session: Uuid,
    other_session: Uuid,
}

async fn two_applications(app: &TestApp) -> TwoApplications {
    let (own_session, other_session) = (Uuid::new_v4(), Uuid::new_v4());
    let at = |m| Utc.with_ymd_and_hms(2021, 3, 1, 8, m, 0).unwrap();
    let seed = |session, i: u32| {
        Seed::new(
            session,
            "page interaction",
            "pageview",
            json!({"i": i}),
            at(i),
        )
    };
    app.seed(&[seed(own_session, 1), seed(own_session, 2)])
        .await;
    app.seed_for(OTHER, &[seed(other_session, 3)]).await;
    let reasons = [("timestamp", "timestamp_in_future")];
    app.seed_rejected("page interaction", json!({"i": 4}), &reasons, at(4))
        .await;
    app.seed_rejected_for(OTHER, "page interaction", json!({"i": 5}), &reasons, at(5))
        .await;
    TwoApplications {
        own: app.application_id().await,
        other: app.application_named(OTHER).await,
        own_session,
        other_session,
    }
}

/// The `data.i` (events) or `payload.i` (rejections) of every row of a list answer.
async fn seen(app: &TestApp, token: &str, path: &str) -> Vec<i64> {
    let (status, body) = app.read_api(token, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    let (rows, field) = match body.get("events") {
        Some(events) => (events, "data"),
        None => (&body["rejected_events"], "payload"),
    };
    let mut seen: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[field]["i"].as_i64().unwrap())
        .collect();
    seen.sort_unstable();
    seen
}

async fn a_read_token_reads_only_its_own_applications_events_sessions_and_rejections(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let two = two_applications(&app).await;
    let own = read_token(&app).await;
    let other = app
        .token_for(OTHER, &[Scope::EventsRead], chrono::Duration::hours(1))
        .await
        .jwt;

    assert_eq!(seen(&app, &own, "/api/v1/events").await, [1, 2]);
    assert_eq!(seen(&app, &other, "/api/v1/events").await, [3]);
    let asks_for_other = format!("/api/v1/events?application={OTHER}");
    assert_eq!(seen(&app, &own, &asks_for_other).await, Vec::<i64>::new());
    let by_session = format!("/api/v1/events?session={}", two.other_session);
    assert_eq!(seen(&app, &own, &by_session).await, Vec::<i64>::new());

    assert_eq!(seen(&app, &own, "/api/v1/rejected-events").await, [4]);
    assert_eq!(seen(&app, &other, "/api/v1/rejected-events").await, [5]);
    let asks_for_other = format!("/api/v1/rejected-events?application={OTHER}");
    assert_eq!(seen(&app, &own, &asks_for_other).await, Vec::<i64>::new());

    let (status, body) = app
        .read_api(&own, &format!("/api/v1/sessions/{}", two.own_session))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["application_id"], two.own.to_string());
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    for path in [
        format!("/api/v1/sessions/{}", two.other_session),
        format!(
            "/api/v1/sessions/{}?application_id={}",
            two.other_session, two.other
        ),
        format!(
            "/api/v1/sessions/{}?application_id={}",
            two.own_session, two.other
        ),
    ] {
        let (status, problem) = app.read_api(&own, &path).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{path}"
        );
    }
    let (status, body) = app
        .read_api(&other, &format!("/api/v1/sessions/{}", two.other_session))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["events"][0]["data"]["i"], 3);
}

async fn an_all_applications_token_reads_every_application_and_names_a_sessions_application(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let two = two_applications(&app).await;
    let issued = app
        .token_for(
            "analytics",
            &[Scope::EventsReadAll],
            chrono::Duration::hours(1),
        )
        .await;
    assert!(
        issued.scopes.contains(&Scope::EventsRead),
        "read:all implies read"
    );
    let all = issued.jwt;

    assert_eq!(seen(&app, &all, "/api/v1/events").await, [1, 2, 3]);
    let only_other = format!("/api/v1/events?application={OTHER}");
    assert_eq!(seen(&app, &all, &only_other).await, [3]);
    assert_eq!(seen(&app, &all, "/api/v1/rejected-events").await, [4, 5]);

    let (status, problem) = app
        .read_api(&all, &format!("/api/v1/sessions/{}", two.own_session))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("application_required"))
    );
    let session =
        |id: Uuid, application: Uuid| format!("/api/v1/sessions/{id}?application_id={application}");
    let (status, body) = app.read_api(&all, &session(two.own_session, two.own)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["event_count"], 2);
    let (status, body) = app
        .read_api(&all, &session(two.other_session, two.other))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["application"], OTHER);
    let (status, _) = app
        .read_api(&all, &session(two.own_session, two.other))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, problem) = app
        .read_api(
            &all,
            &format!("/api/v1/sessions/{}?application_id=shop", two.own_session),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_filter"))
    );
}
