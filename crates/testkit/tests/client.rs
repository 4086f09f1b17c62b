//! `eye-client` and `eye send` against the real api: every event stored once, whatever the
//! network and the server do in between.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eye_cli::send::{SendOptions, Summary};
use eye_client::{Client, Event, Overflow, SendError};
use eye_entity::events;
use eye_testkit::{Backend, Options, Proxy, TestApp, on_both_backends, on_services, pageview};
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

on_both_backends!(
    every_event_sent_is_stored_once_under_the_id_send_returned,
    an_invalid_event_is_reported_with_its_fields_and_the_rest_of_its_batch_is_stored,
    events_sent_through_connections_that_keep_dropping_are_stored_exactly_once,
    a_rate_limited_client_waits_as_told_and_everything_is_stored_once,
    a_refused_token_is_reported_and_stops_further_sends,
    eye_send_stores_every_good_line_once_and_names_the_bad_ones,
    eye_send_strict_stops_at_the_first_bad_line,
    eye_send_takes_one_json_array_too,
);
on_services!(events_sent_while_the_broker_is_away_are_stored_once_it_is_back);

/// Fast retries, so tests that break the network do not wait long.
fn quick(url: &str, token: &str) -> eye_client::Builder {
    Client::builder(url, token)
        .backoff(Duration::from_millis(10), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(5))
}

fn an_event(i: usize) -> Event {
    let page = pageview(format!("/p/{i}"), "2021-01-01 09:15:27.243860");
    Event::from_json(&page.to_string()).unwrap()
}

/// The stored events' ids, checking that none is there twice.
async fn stored_ids(app: &TestApp) -> HashSet<Uuid> {
    let stored = events::Entity::find().all(&app.db).await.unwrap();
    let ids: HashSet<Uuid> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), stored.len(), "an event is stored twice");
    ids
}

async fn every_event_sent_is_stored_once_under_the_id_send_returned(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = Client::new(&app.address, &app.token).unwrap();
    let mut sent = HashSet::new();
    for i in 0..1_200 {
        let receipt = client.send(an_event(i)).await.unwrap();
        assert_eq!(receipt.seq, i as u64);
        assert_eq!(receipt.id.get_version_num(), 7);
        sent.insert(receipt.id);
    }
    let report = client.flush().await.unwrap();
    assert_eq!(report.accepted, 1_200, "{:?}", report.refused.first());
    assert!(report.refused.is_empty());

    // A flush with nothing new answers at once with an empty report.
    assert_eq!(client.flush().await.unwrap().accepted, 0);
    let last = client.send(an_event(1_200)).await.unwrap();
    sent.insert(last.id);
    assert_eq!(client.close().await.unwrap().accepted, 1);

    app.wait_for_counts(1_201, 0).await;
    assert_eq!(stored_ids(&app).await, sent);
}

async fn an_invalid_event_is_reported_with_its_fields_and_the_rest_of_its_batch_is_stored(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let client = Client::new(&app.address, &app.token).unwrap();
    let mut bad = Vec::new();
    for i in 0..20 {
        let event = match i {
            3 => {
                let mut page = pageview("/", "2021-01-01 09:15:27");
                page.as_object_mut().unwrap().remove("name");
                Event::from_json(&page.to_string()).unwrap()
            }
            11 => Event::from_json(&pageview("/", "yesterday").to_string()).unwrap(),
            _ => an_event(i),
        };
        let receipt = client.send(event).await.unwrap();
        if i == 3 || i == 11 {
            bad.push(receipt);
        }
    }
    let report = client.close().await.unwrap();
    assert_eq!(report.accepted, 18);
    let mut refused = report.refused.clone();
    refused.sort_by_key(|r| r.seq);
    assert_eq!(
        refused.iter().map(|r| (r.seq, r.id)).collect::<Vec<_>>(),
        bad.iter().map(|r| (r.seq, r.id)).collect::<Vec<_>>()
    );
    assert!(
        refused
            .iter()
            .all(|r| r.status == Some(400) && r.code == "invalid_events")
    );
    assert_eq!(refused[0].errors[0].field, "name");
    assert_eq!(refused[0].errors[0].code, "required");
    assert_eq!(refused[1].errors[0].field, "timestamp");
    assert_eq!(refused[1].errors[0].code, "invalid_timestamp");
    app.wait_for_counts(18, 0).await;
}

async fn events_sent_through_connections_that_keep_dropping_are_stored_exactly_once(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let proxy = Arc::new(Proxy::start(app.address.trim_start_matches("http://").into()).await);
    let url = format!("http://{}", proxy.addr());
    let client = quick(&url, &app.token)
        .max_batch_events(50)
        .linger(Duration::from_millis(5))
        .build()
        .unwrap();
    // Cut every connection, in flight or not, every few tens of milliseconds.
    let cutter = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(40)).await;
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(15)).await;
                proxy.restore();
            }
        })
    };
    let mut sent = HashSet::new();
    for i in 0..3_000 {
        sent.insert(client.send(an_event(i)).await.unwrap().id);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let report = client.close().await.unwrap();
    cutter.abort();
    assert_eq!(report.accepted, 3_000, "{:?}", report.refused.first());
    app.wait_for_counts(3_000, 0).await;
    assert_eq!(stored_ids(&app).await, sent);
}

async fn a_rate_limited_client_waits_as_told_and_everything_is_stored_once(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| {
                s.rate_limit = "1000/s".parse().unwrap();
                s.rate_limit_burst = 1_000;
            },
            ..Options::default()
        },
    )
    .await;
    let client = Client::builder(&app.address, &app.token)
        .max_batch_events(250)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut sent = HashSet::new();
    for i in 0..3_000 {
        sent.insert(client.send(an_event(i)).await.unwrap().id);
    }
    let report = client.close().await.unwrap();
    assert_eq!(report.accepted, 3_000, "{:?}", report.refused.first());
    // 1,000 at once, then 1,000 a second: at least two seconds of 429s waited out.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    app.wait_for_counts(3_000, 0).await;
    assert_eq!(stored_ids(&app).await, sent);
}

async fn a_refused_token_is_reported_and_stops_further_sends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let client = Client::new(&app.address, "not-a-token").unwrap();
    let receipt = client.send(an_event(0)).await.unwrap();
    let report = client.flush().await.unwrap();
    assert_eq!(report.accepted, 0);
    assert_eq!(report.refused.len(), 1);
    assert_eq!(report.refused[0].id, receipt.id);
    assert_eq!(report.refused[0].status, Some(401));
    assert!(matches!(
        client.send(an_event(1)).await,
        Err(SendError::Unauthorized(_))
    ));
    assert_eq!(app.counts().await, (0, 0));
}

async fn events_sent_while_the_broker_is_away_are_stored_once_it_is_back(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            proxy_broker: true,
            settings: |s| s.publish_timeout_ms = 500,
            ..Options::default()
        },
    )
    .await;
    let broker = app.broker_proxy.as_ref().unwrap();
    let client = quick(&app.address, &app.token).build().unwrap();
    let mut sent = HashSet::new();
    for i in 0..100 {
        sent.insert(client.send(an_event(i)).await.unwrap().id);
    }
    let before = client.flush().await.unwrap();
    assert_eq!(before.accepted, 100);
    broker.cut();
    for i in 100..300 {
        sent.insert(client.send(an_event(i)).await.unwrap().id);
    }
    // The api answers 503/504 meanwhile; the client keeps the events and retries.
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.restore();
    // Each report counts what was answered since the previous one.
    let report = client.close().await.unwrap();
    assert_eq!(report.accepted, 200, "{:?}", report.refused.first());
    app.wait_for_counts(300, 0).await;
    assert_eq!(stored_ids(&app).await, sent);
}

/// An api that answers `503` with `Retry-After: 1` to the first `failures` requests, then
/// `202`, and keeps each request's time and ids.
async fn flaky_api(failures: usize) -> (String, Arc<Mutex<Vec<(Instant, Vec<String>)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                loop {
                    let Some(body) = read_request(&mut stream).await else {
                        return;
                    };
                    let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
                    let ids = events.iter().map(|e| e["id"].as_str().unwrap().to_owned());
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push((Instant::now(), ids.collect()));
                        log.len()
                    };
                    let answer = if n <= failures {
                        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-type: application/problem+json\r\ncontent-length: 24\r\n\r\n{\"code\":\"broker_closed\"}"
                    } else {
                        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                    };
                    stream.write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, seen)
}

/// One HTTP/1.1 request's body (Content-Length only), or None when the connection closed.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

#[tokio::test]
async fn a_503_with_retry_after_is_waited_out_and_retried_with_the_same_ids() {
    let (url, seen) = flaky_api(2).await;
    let client = quick(&url, "token").gzip_above(None).build().unwrap();
    for i in 0..10 {
        client.send(an_event(i)).await.unwrap();
    }
    let report = client.close().await.unwrap();
    assert_eq!(report.accepted, 10);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|(_, ids)| *ids == seen[0].1 && ids.len() == 10)
    );
    for pair in seen.windows(2) {
        let waited = pair[1].0 - pair[0].0;
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    }
}

#[tokio::test]
async fn a_full_buffer_fails_fast_naming_the_server_and_the_last_error() {
    // An address where nothing listens.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let client = quick(&url, "token")
        .max_buffered_events(5)
        .overflow(Overflow::Fail)
        .give_up_after(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    for i in 0..5 {
        client.send(an_event(i)).await.unwrap();
    }
    // Let a request fail, so the error can say why.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let error = client.send(an_event(5)).await.unwrap_err();
    assert!(matches!(error, SendError::BufferFull { capacity: 5, .. }));
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("last:"), "{message}");

    // Given up on, the events are reported as undelivered and make room again.
    let report = client.flush().await.unwrap();
    assert_eq!(report.refused.len(), 5);
    assert!(report.refused.iter().all(|r| r.code == "undelivered"));
    client.send(an_event(6)).await.unwrap();
}

#[test]
fn a_client_outside_a_runtime_or_with_a_wrong_url_is_refused() {
    assert!(matches!(
        Client::new("http://127.0.0.1:1", "t"),
        Err(eye_client::ClientError::NoRuntime)
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        assert!(matches!(
            Client::new("127.0.0.1:8080", "t"),
            Err(eye_client::ClientError::InvalidUrl(_))
        ));
    });
}

/// A file of `lines` JSON Lines, with these lines (from 1) replaced.
fn file_of(lines: usize, replaced: &[(usize, &str)]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut text = String::new();
    for line in 1..=lines {
        match replaced.iter().find(|(n, _)| *n == line) {
            Some((_, replacement)) => text.push_str(replacement),
            None => text.push_str(&pageview(format!("/{line}"), "2021-01-01 09:15:27").to_string()),
        }
        text.push('\n');
    }
    file.write_all(text.as_bytes()).unwrap();
    file
}

async fn eye_send(app: &TestApp, file: &tempfile::NamedTempFile, strict: bool) -> Summary {
    let options = SendOptions {
        file: Some(file.path().to_owned()),
        strict,
        progress: false,
    };
    eye_cli::send::run(options, Client::builder(&app.address, &app.token))
        .await
        .unwrap()
}

/// Without `name`: valid JSON that only the server refuses.
fn nameless() -> String {
    let mut event = pageview("/", "2021-01-01 09:15:27");
    event.as_object_mut().unwrap().remove("name");
    event.to_string()
}

fn lines_of(problems: &[(u64, String)]) -> Vec<u64> {
    let mut lines: Vec<u64> = problems.iter().map(|(line, _)| *line).collect();
    lines.sort();
    lines
}

async fn eye_send_stores_every_good_line_once_and_names_the_bad_ones(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| {
                s.rate_limit = "1000000/s".parse().unwrap();
                s.rate_limit_burst = 1_000_000;
            },
            ..Options::default()
        },
    )
    .await;
    let nameless = nameless();
    let file = file_of(
        10_000,
        &[(17, "{not json"), (5_000, "[1, 2]"), (9_999, &nameless)],
    );
    let summary = eye_send(&app, &file, false).await;
    assert_eq!(summary.sent, 9_998);
    assert_eq!(summary.accepted, 9_997);
    assert_eq!(lines_of(&summary.bad), [17, 5_000]);
    assert_eq!(lines_of(&summary.refused), [9_999]);
    assert!(
        summary.refused[0].1.contains("name"),
        "{:?}",
        summary.refused
    );
    assert!(!summary.all_accepted());
    let rendered = summary.render();
    for line in [
        "line 17: not JSON",
        "line 5000: not an event",
        "line 9999: refused (400 invalid_events): name",
    ] {
        assert!(rendered.contains(line), "{rendered}");
    }
    assert!(
        rendered.contains("sent 9998 events: 9997 accepted, 1 refused; 2 lines not sent"),
        "{rendered}"
    );

    app.wait_for_counts(9_997, 0).await;
    assert_eq!(stored_ids(&app).await.len(), 9_997);
}

async fn eye_send_strict_stops_at_the_first_bad_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = file_of(100, &[(10, "{not json"), (20, "nope")]);
    let summary = eye_send(&app, &file, true).await;
    assert_eq!(summary.stopped_at, Some(10));
    assert_eq!(lines_of(&summary.bad), [10]);
    assert_eq!((summary.sent, summary.accepted), (9, 9));
    assert!(summary.render().contains("stopped at line 10 (--strict)"));
    app.wait_for_counts(9, 0).await;
}

async fn eye_send_takes_one_json_array_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let events = json!([
        pageview("/a", "2021-01-01 09:15:27"),
        "not an event",
        pageview("/b", "2021-01-01 09:15:28"),
    ]);
    file.write_all(serde_json::to_string_pretty(&events).unwrap().as_bytes())
        .unwrap();
    let summary = eye_send(&app, &file, false).await;
    assert_eq!((summary.sent, summary.accepted), (2, 2));
    assert_eq!(lines_of(&summary.bad), [2]);
    assert!(summary.render().contains("event 2: not an event"));
    app.wait_for_counts(2, 0).await;
}
