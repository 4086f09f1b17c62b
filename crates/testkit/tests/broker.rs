//! A 202 means the broker has the message: when it cannot, the api says 503.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_testkit::{Backend, Options, RabbitNode, TestApp, on_both_backends, on_services, pageview};
use serde_json::Value;
use uuid::Uuid;

on_both_backends!(a_shut_queue_answers_503_with_retry_after);

/// Only the in-process queue can be made to hold publishes on demand (no room in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_outbox_byte_bound_a_request_is_refused_at_once_with_queue_full() {
    let options = Options {
        workers: 0,
        settings: |s| {
            s.api_workers = Some(1);
            s.memory_queue_capacity = 0;
            s.outbox_max_bytes = 5_000;
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    // Three events of about 1.2 KB each: one such request fits the bound, two do not.
    let events = || {
        Value::Array(
            (0..3)
                .map(|_| pageview("/".repeat(1200), "2021-01-01 00:00:00"))
                .collect(),
        )
    };
    let waiting = {
        let (client, url, token, body) = (
            app.client.clone(),
            format!("{}/v1/events", app.address),
            app.token.clone(),
            events(),
        );
        tokio::spawn(async move { client.post(url).bearer_auth(token).json(&body).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let response = app.post(&events()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "queue_full", "{problem}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refused only after {:?}",
        start.elapsed()
    );
    // The first one waited for room that never came, and was not accepted either.
    assert_eq!(waiting.await.unwrap().unwrap().status(), 503);
}
on_services!(
    when_a_broker_node_goes_the_services_move_to_the_next_and_every_202_is_stored,
    an_unreachable_broker_answers_503_never_202,
    a_broker_that_goes_away_answers_503_until_it_returns,
    a_memory_alarm_answers_503_at_once_and_nothing_refused_is_stored_after_it_clears
);

fn body() -> Value {
    pageview("/", "2021-01-01 00:00:00")
}

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["code"].as_str().unwrap().starts_with("broker_") || problem["code"] == "queue_full",
        "{problem}"
    );
}

/// After the broker's connection was cut: a publish written before the api read the broken
/// connection cannot be known lost, so it may be answered 504 ("retry with the same ids");
/// once the api has seen the cut (`/readyz` says so), every request is answered 503.
async fn assert_unavailable_after_cut(app: &TestApp) {
    let racing = app.post(&body()).await;
    if racing.status() == 504 {
        let problem: Value = racing.json().await.unwrap();
        assert_eq!(problem["code"], "broker_unconfirmed", "{problem}");
        wait_for_readyz(app, 503).await;
    } else {
        assert_unavailable(racing).await;
    }
    assert_unavailable(app.post(&body()).await).await;
}

async fn a_shut_queue_answers_503_with_retry_after(backend: Backend) {
    let options = Options {
        proxy_broker: !backend.is_embedded(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    assert_eq!(app.post(&body()).await.status(), 202);
    match &app.queue {
        eye_cli::stack::Queue::Memory { events, .. } => events.close(),
        eye_cli::stack::Queue::Amqp(_) => app.broker_proxy.as_ref().unwrap().cut(),
    }
    assert_unavailable_after_cut(&app).await;
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
}

async fn an_unreachable_broker_answers_503_never_202(backend: Backend) {
    let options = Options {
        proxy_broker: true,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    // One URL (a node, or a balancer before a cluster): RabbitMQ's own default applies.
    assert!(
        app.ingest_queue().await["arguments"]["x-quorum-initial-group-size"].is_null(),
        "one URL sets no replica count"
    );
    app.broker_proxy.as_ref().unwrap().cut();
    assert_unavailable_after_cut(&app).await;
    for _ in 0..2 {
        assert_unavailable(app.post(&body()).await).await;
    }
}

async fn a_broker_that_goes_away_answers_503_until_it_returns(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            proxy_broker: true,
            ..Options::default()
        },
    )
    .await;
    let proxy = app.broker_proxy.as_ref().unwrap();
    assert_eq!(app.post(&body()).await.status(), 202);

    proxy.cut();
    assert_unavailable_after_cut(&app).await;

    proxy.restore();
    let start = Instant::now();
    loop {
        let status = app.post(&body()).await.status();
        if status == 202 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the api did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.wait_for_counts(2, 0).await;
}

/// `/readyz`'s status and body.
async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn wait_for_readyz(app: &TestApp, status: u16) -> Value {
    let start = Instant::now();
    loop {
        let (found, body) = readyz(app).await;
        if found == status {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "/readyz still answers {found} {body}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pageview with an id of the test's choosing, so refused events can be looked for later.
fn event_with_id(id: Uuid) -> Value {
    let mut event = body();
    event["id"] = id.to_string().into();
    event
}

async fn a_memory_alarm_answers_503_at_once_and_nothing_refused_is_stored_after_it_clears(
    backend: Backend,
) {
    // The alarm is set on a node of the test's own: other tests share the main one.
    let Some(node) = RabbitNode::start("a_memory_alarm_answers_503_at_once") else {
        return;
    };
    let Backend::Services { database_url, .. } = backend else {
        unreachable!("a services test")
    };
    let backend = Backend::Services {
        database_url,
        amqp_url: node.amqp_url(),
    };
    let options = Options {
        // One HTTP thread on one channel, opened before the alarm.
        settings: |s| {
            s.api_workers = Some(1);
            s.publish_channels = 1;
        },
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let mut accepted = vec![Uuid::now_v7()];
    assert_eq!(app.post(&event_with_id(accepted[0])).await.status(), 202);
    wait_for_readyz(&app, 200).await;

    node.raise_memory_alarm();
    let ready = wait_for_readyz(&app, 503).await;
    assert_eq!(ready["broker"], "blocked", "{ready}");
    assert!(
        ready["reason"].as_str().unwrap().contains("alarm"),
        "{ready}"
    );
    let mut refused = Vec::new();
    for _ in 0..10 {
        let id = Uuid::now_v7();
        let start = Instant::now();
        let response = app.post(&event_with_id(id)).await;
        let status = response.status().as_u16();
        assert_eq!(response.headers()["retry-after"], "1");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 503, "{problem}");
        assert_eq!(problem["code"], "broker_blocked", "{problem}");
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "a blocked broker answered only after {:?}",
            start.elapsed()
        );
        refused.push(id);
    }

    node.clear_memory_alarm();
    wait_for_readyz(&app, 200).await;
    for _ in 0..5 {
        let id = Uuid::now_v7();
        let response = app.post(&event_with_id(id)).await;
        assert_eq!(response.status(), 202);
        accepted.push(id);
    }
    // The events accepted after the alarm are queued behind anything sent during it, so once
    // they are stored, a refused event would be too.
    let start = Instant::now();
    while !stored_ids(&app)
        .await
        .is_superset(&accepted.iter().copied().collect())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the accepted events are not all stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = stored_ids(&app).await;
    for id in &refused {
        assert!(
            !stored.contains(id),
            "{id} was answered 503 and stored anyway"
        );
    }
    drop(app);
    drop(node);
}

async fn stored_ids(app: &TestApp) -> std::collections::HashSet<Uuid> {
    app.stored_events().await.iter().map(|e| e.id).collect()
}

/// Posts until `wanted` more events were accepted; returns them and those answered 504 (sent,
/// not confirmed: they may be stored). Refusals (503) are allowed while connections move.
async fn accepted_across_a_move(app: &TestApp, wanted: u64) -> (u64, u64) {
    let start = Instant::now();
    let (mut accepted, mut unconfirmed) = (0, 0);
    while accepted < wanted {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "only {accepted} of {wanted} accepted in 30 s"
        );
        match app.post(&body()).await.status().as_u16() {
            202 => accepted += 1,
            504 => unconfirmed += 1,
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected {other}"),
        }
    }
    (accepted, unconfirmed)
}

/// Every accepted event is stored, and at most those not confirmed besides.
async fn all_stored(app: &TestApp, accepted: u64, unconfirmed: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (stored, _) = app.counts().await;
        if stored >= accepted {
            assert!(
                stored <= accepted + unconfirmed,
                "{stored} stored of {accepted} accepted"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} stored of {accepted} accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes in `amqp_url` (two proxies to the one broker): the api and the worker use the
/// first; when it goes they move to the second, and back when the second goes.
async fn when_a_broker_node_goes_the_services_move_to_the_next_and_every_202_is_stored(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            proxy_broker: true,
            second_broker_node: true,
            ..Options::default()
        },
    )
    .await;
    let first = app.broker_proxy.as_ref().unwrap();
    let second = app.second_broker_proxy.as_ref().unwrap();
    // Two nodes listed: the queues are declared with two replicas (`queue_replicas` unset).
    assert_eq!(
        app.ingest_queue().await["arguments"]["x-quorum-initial-group-size"],
        2
    );
    let mut total = (0, 0);
    let mut add = |(a, u): (u64, u64)| {
        total = (total.0 + a, total.1 + u);
        total
    };
    let (accepted, unconfirmed) = add(accepted_across_a_move(&app, 5).await);
    all_stored(&app, accepted, unconfirmed).await;

    first.cut();
    let (accepted, unconfirmed) = add(accepted_across_a_move(&app, 20).await);
    all_stored(&app, accepted, unconfirmed).await;

    first.restore();
    second.cut();
    let (accepted, unconfirmed) = add(accepted_across_a_move(&app, 20).await);
    all_stored(&app, accepted, unconfirmed).await;
    assert!(app.dead_letters().await.is_empty());
}
