//! `X-Request-Id`: every answer of the api and the admin carries one, the client's own when it
//! is sane, and every problem body names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use eye_core::token::Scope;
use eye_testkit::{Backend, Options, TestApp, on_both_backends, pageview};
use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    a_sent_request_id_comes_back_on_a_202,
    a_sent_request_id_comes_back_in_the_header_and_body_of_every_problem,
    a_503_carries_the_sent_request_id,
    a_missing_or_insane_request_id_is_replaced_by_a_fresh_one_per_request,
    admin_pages_and_their_error_pages_carry_the_request_id,
    the_read_api_answers_with_the_request_id_in_its_header_and_problems,
);

const SENT: &str = "client-7f3a.retry:2_b";

fn event() -> Value {
    pageview("/", "2021-01-01 00:00:00")
}

fn post(app: &TestApp, body: &Value) -> RequestBuilder {
    app.client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&app.token)
        .json(body)
}

fn answered_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The id answered in the header, checked to be the one in the problem body too.
async fn problem_with_id(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let id = answered_id(&response);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["request_id"], id.as_str(), "{problem}");
    (status, id, problem)
}

async fn a_sent_request_id_comes_back_on_a_202(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = post(&app, &event())
        .header("X-Request-Id", SENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(answered_id(&response), SENT);
}

async fn a_sent_request_id_comes_back_in_the_header_and_body_of_every_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = format!("{}/v1/events", app.address);
    let cases = [
        // Refused by the token check, before the handler's own work.
        (app.client.post(&url).json(&event()), 401, "missing_token"),
        (
            post(&app, &json!({"session_id": "nope"})),
            400,
            "invalid_events",
        ),
        (
            app.client
                .post(&url)
                .bearer_auth(&app.token)
                .header("Content-Type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.header("X-Request-Id", SENT).send().await.unwrap();
        let (answered, id, problem) = problem_with_id(response).await;
        assert_eq!((answered, problem["code"].as_str()), (status, Some(code)));
        assert_eq!(id, SENT, "{code}");
    }
}

async fn a_503_carries_the_sent_request_id(backend: Backend) {
    let options = Options {
        proxy_broker: !backend.is_embedded(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    match &app.queue {
        eye_cli::stack::Queue::Memory { events, .. } => events.close(),
        eye_cli::stack::Queue::Amqp(_) => app.broker_proxy.as_ref().unwrap().cut(),
    }
    let response = post(&app, &event())
        .header("X-Request-Id", SENT)
        .send()
        .await
        .unwrap();
    let (status, id, problem) = problem_with_id(response).await;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(id, SENT);
}

async fn a_missing_or_insane_request_id_is_replaced_by_a_fresh_one_per_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let insane: [(&str, Option<HeaderValue>); 6] = [
        ("none", None),
        ("empty", Some(HeaderValue::from_static(""))),
        (
            "too long",
            Some(HeaderValue::from_str(&"a".repeat(65)).unwrap()),
        ),
        ("a space", Some(HeaderValue::from_static("two words"))),
        (
            "a control character",
            Some(HeaderValue::from_static("tab\there")),
        ),
        (
            "non-ASCII",
            Some(HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap()),
        ),
    ];
    let mut seen = Vec::new();
    for (what, sent) in insane {
        for body in [event(), json!([])] {
            let mut request = post(&app, &body);
            if let Some(sent) = &sent {
                request = request.header("X-Request-Id", sent.clone());
            }
            let response = request.send().await.unwrap();
            let id = answered_id(&response);
            assert!(Uuid::parse_str(&id).is_ok(), "{what}: {id}");
            if response.status() == 400 {
                let problem: Value = response.json().await.unwrap();
                assert_eq!(problem["request_id"], id.as_str(), "{what}");
            }
            assert!(!seen.contains(&id), "{what}: {id} answered twice");
            seen.push(id);
        }
    }
}

async fn admin_pages_and_their_error_pages_carry_the_request_id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin().await;
    let get = |path: &str| {
        admin
            .client
            .get(format!("{}{path}", app.admin_address))
            .header("X-Request-Id", SENT)
    };
    let page = get("/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(answered_id(&page), SENT);

    let missing = get("/events/not-an-id/either").send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(answered_id(&missing), SENT);
    let body = missing.text().await.unwrap();
    assert!(
        body.contains(&format!("request id: <code>{SENT}</code>")),
        "{body}"
    );

    // Answered before any handler: the login redirect of someone logged out.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = anonymous
        .get(format!("{}/events", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 303);
    assert!(Uuid::parse_str(&answered_id(&redirect)).is_ok());
}

async fn the_read_api_answers_with_the_request_id_in_its_header_and_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app
        .token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await
        .jwt;
    let get = |path: &str, token: &str| {
        app.client
            .get(format!("{}{path}", app.admin_address))
            .bearer_auth(token)
            .header("X-Request-Id", SENT)
    };
    let listed = get("/api/v1/events", &token).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(answered_id(&listed), SENT);

    let cases = [
        (
            get("/api/v1/events?from=soon", &token),
            400,
            "invalid_filter",
        ),
        (
            get(&format!("/api/v1/sessions/{}", Uuid::new_v4()), &token),
            404,
            "not_found",
        ),
        // The write token lacks the read scope: the token check's own problem.
        (get("/api/v1/events", &app.token), 403, "missing_scope"),
    ];
    for (request, status, code) in cases {
        let (answered, id, problem) = problem_with_id(request.send().await.unwrap()).await;
        assert_eq!((answered, problem["code"].as_str()), (status, Some(code)));
        assert_eq!(id, SENT, "{code}");
    }
}
