//! Queue settings an operator may change are broker policies: they change on a live queue,
//! an older queue is used as it is, and what the broker dead-letters lands in `dead_letters`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use eye_cli::stack::{self, Queue};
use eye_core::queue::{Publisher, Topology};
use eye_testkit::{Backend, Options, TestApp, on_services, pageview};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

on_services!(
    a_changed_delivery_limit_takes_effect_on_the_live_queue_without_an_outage,
    a_queue_declared_with_arguments_by_an_older_version_is_used_as_it_is,
    a_message_past_the_delivery_limit_is_kept_in_dead_letters_with_the_reason,
);

fn amqp_url(app: &TestApp) -> String {
    match &app.queue {
        Queue::Amqp(url) => url.clone(),
        Queue::Memory { .. } => unreachable!("services only"),
    }
}

/// The policy RabbitMQ has in force for the app's ingest queue, once it has the delivery
/// limit `expected` (the management api's statistics lag by a few seconds).
async fn policy_in_force(app: &TestApp, expected: u32) -> Value {
    let mut last = Value::Null;
    for _ in 0..150 {
        last = app.ingest_queue().await["effective_policy_definition"].clone();
        if last["delivery-limit"] == expected {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the policy in force on the ingest queue never had delivery-limit {expected}: {last}");
}

async fn post_and_store(app: &TestApp, api_port: u16, path: &str, stored: u64) {
    let response = app
        .client
        .post(format!("http://127.0.0.1:{api_port}/v1/events"))
        .bearer_auth(&app.token)
        .json(&pageview(path, "2021-01-01 00:00:00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    app.wait_for_counts(stored, 0).await;
}

async fn a_changed_delivery_limit_takes_effect_on_the_live_queue_without_an_outage(
    backend: Backend,
) {
    let mut app = TestApp::spawn(backend).await;
    let policy = policy_in_force(&app, 10).await;
    assert_eq!(policy["dead-letter-strategy"], "at-least-once");
    assert_eq!(policy["overflow"], "reject-publish");
    assert_eq!(
        app.post(&pageview("/before", "2021-01-01 00:00:00"))
            .await
            .status(),
        202
    );
    app.wait_for_counts(1, 0).await;

    // A rolling deploy with another limit: the new api and worker start, answer and store.
    app.shutdown().await;
    let settings = eye_core::Settings {
        delivery_limit: 4,
        ..app.settings.clone()
    };
    let running =
        stack::start_with_workers(&settings, &app.service_db, &app.queue, 1, &app.metrics)
            .await
            .unwrap();
    post_and_store(&app, running.api_port, "/after", 2).await;
    policy_in_force(&app, 4).await;
    running.shutdown().await;
}

async fn a_queue_declared_with_arguments_by_an_older_version_is_used_as_it_is(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    app.shutdown().await;
    // Re-create the ingest queue the way an older version declared it.
    let topology = Topology::new(&app.settings.queue_prefix);
    let connection = lapin::Connection::connect(&amqp_url(&app), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            topology.queue.as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let mut old = FieldTable::default();
    old.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    old.insert("x-delivery-limit".into(), AMQPValue::LongInt(10));
    old.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_exchange.as_str().into()),
    );
    channel
        .queue_declare(
            topology.queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            old,
        )
        .await
        .unwrap();
    connection.close(200, "OK".into()).await.unwrap();

    let running =
        stack::start_with_workers(&app.settings, &app.service_db, &app.queue, 1, &app.metrics)
            .await
            .unwrap();
    post_and_store(&app, running.api_port, "/on-the-old-queue", 1).await;
    running.shutdown().await;
}

async fn a_message_past_the_delivery_limit_is_kept_in_dead_letters_with_the_reason(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            settings: |s| s.delivery_limit = 1,
            ..Options::default()
        },
    )
    .await;
    let body = br#"{"a message":"that every worker gives back"}"#;
    let publisher: Publisher = app.queue.publisher(&app.settings).unwrap();
    publisher.publish(body).await.unwrap();

    // A consumer that keeps giving the message back, as a worker that crashes on it would.
    let topology = Topology::new(&app.settings.queue_prefix);
    let connection = lapin::Connection::connect(&amqp_url(&app), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for _ in 0..20 {
        let got = channel
            .basic_get(topology.queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap();
        match got {
            Some(message) => {
                message
                    .delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    connection.close(200, "OK".into()).await.unwrap();

    let stop = CancellationToken::new();
    let mover = app
        .queue
        .dead_letter_mover(&app.settings, &app.service_db, &stop, &app.metrics.worker)
        .unwrap();
    let dead = app.wait_for_dead_letters(1).await;
    stop.cancel();
    mover.await.unwrap();
    assert_eq!(dead.len(), 1, "kept once");
    assert_eq!(dead[0].body, body);
    assert!(
        dead[0].reason.contains("delivery limit"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].headers.contains("x-death"), "{}", dead[0].headers);
}
