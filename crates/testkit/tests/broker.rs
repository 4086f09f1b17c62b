//! A 202 means the broker has the message: when it cannot, the api says 503.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_testkit::{Backend, Options, TestApp, on_both_backends, on_services, pageview};
use serde_json::Value;

on_both_backends!(a_shut_queue_answers_503_with_retry_after);
on_services!(
    an_unreachable_broker_answers_503_never_202,
    a_broker_that_goes_away_answers_503_until_it_returns
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

async fn a_shut_queue_answers_503_with_retry_after(backend: Backend) {
    let options = Options {
        proxy_broker: !backend.is_embedded(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    assert_eq!(app.post(&body()).await.status(), 202);
    match &app.queue {
        eye_cli::stack::Queue::Memory(queue) => queue.close(),
        eye_cli::stack::Queue::Amqp(_) => app.broker_proxy.as_ref().unwrap().cut(),
    }
    assert_unavailable(app.post(&body()).await).await;
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
    app.broker_proxy.as_ref().unwrap().cut();
    for _ in 0..3 {
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
    assert_unavailable(app.post(&body()).await).await;

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
