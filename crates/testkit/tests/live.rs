//! Watching events arrive: the admin's Server-Sent Events stream for read tokens, its filters
//! and its application boundary, rejected events marked, a client too slow to keep up, and the
//! Live page in a real browser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_cli::stack::Queue;
use eye_core::queue::Topology;
use eye_core::token::Scope;
use eye_testkit::browser::Browser;
use eye_testkit::{
    ADMIN_PASSWORD, ADMIN_USER, Backend, Sse, TestApp, event, on_both_backends, on_services,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

on_both_backends!(
    an_event_posted_after_the_stream_opened_arrives_within_a_second_and_filters_leave_others_out,
    a_read_token_watches_only_its_own_application,
    a_rejected_event_arrives_marked_with_its_reason_codes,
    a_client_that_never_reads_is_dropped_with_a_notice_and_storage_does_not_wait_for_it,
    stopping_ends_open_streams_with_a_notice_instead_of_waiting_for_them,
);

on_services!(with_nobody_watching_a_worker_sends_nothing_live_and_the_first_watcher_misses_nothing);

/// How soon a stored event must show on a stream.
const WITHIN: Duration = Duration::from_secs(1);
const OTHER: &str = "other-app";

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

async fn read_token(app: &TestApp, application: &str) -> String {
    app.token_for(
        application,
        &[Scope::EventsRead],
        chrono::Duration::hours(1),
    )
    .await
    .jwt
}

/// The events' stream, with a query string (or none).
async fn watch(app: &TestApp, token: &str, query: &str) -> Sse {
    Sse::open(app, token, &format!("/api/v1/events/stream{query}")).await
}

async fn an_event_posted_after_the_stream_opened_arrives_within_a_second_and_filters_leave_others_out(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    let mut all = watch(&app, &token, "").await;
    let mut pageviews = watch(&app, &token, "?name=pageview").await;

    let session = Uuid::new_v4();
    let click = json!({"session_id": session, "category": "page interaction", "name": "cta click",
        "data": {"host": "h", "path": "/", "element": "buy"}, "timestamp": now()});
    let view = json!({"session_id": session, "category": "page interaction", "name": "pageview",
        "data": {"host": "h", "path": "/live"}, "timestamp": now()});
    let posted = Instant::now();
    assert_eq!(
        app.post(&json!([click, view])).await.status(),
        StatusCode::ACCEPTED
    );

    let (kind, first) = all.event(WITHIN).await.expect("no event within a second");
    let took = posted.elapsed();
    assert_eq!(kind, "event");
    assert_eq!(first["name"], "cta click");
    assert_eq!(first["application"], eye_testkit::APPLICATION);
    assert_eq!(first["session_id"], session.to_string());
    assert_eq!(first["rejected"], false);
    let data: Value = serde_json::from_str(first["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["element"], "buy");
    eprintln!("posted to shown on the stream: {took:?}");
    let (_, second) = all.event(WITHIN).await.unwrap();
    assert_eq!(second["name"], "pageview");

    // The click came first in the batch: the filtered stream's first event is the pageview.
    let (_, only) = pageviews.event(WITHIN).await.unwrap();
    assert_eq!(only["name"], "pageview");
    assert_eq!(only["data"], r#"{"host":"h","path":"/live"}"#);
    assert!(pageviews.event(Duration::from_millis(300)).await.is_none());

    let bad = app
        .client
        .get(format!(
            "{}/api/v1/events/stream?session_id=nope",
            app.admin_address
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let unauthenticated = app
        .client
        .get(format!("{}/api/v1/events/stream", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
}

async fn a_read_token_watches_only_its_own_application(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let other_writes = app.write_token_for(OTHER).await;
    let own = read_token(&app, eye_testkit::APPLICATION).await;
    let mut mine = watch(&app, &own, "").await;
    // Naming another application shows nothing rather than its events.
    let mut theirs = watch(&app, &own, &format!("?application={OTHER}")).await;

    let foreign = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/theirs"}),
        &now(),
    );
    assert_eq!(
        app.post_as(&other_writes, &json!([foreign])).await.status(),
        StatusCode::ACCEPTED
    );
    let home = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/mine"}),
        &now(),
    );
    assert_eq!(
        app.post(&json!([home])).await.status(),
        StatusCode::ACCEPTED
    );

    let (_, seen) = mine.event(WITHIN * 2).await.unwrap();
    assert!(seen["data"].as_str().unwrap().contains("/mine"), "{seen}");
    assert!(theirs.event(Duration::from_millis(500)).await.is_none());

    // A token that reads every application sees the other one's events.
    let all = app
        .token_for(
            "reader",
            &[Scope::EventsRead, Scope::EventsReadAll],
            chrono::Duration::hours(1),
        )
        .await
        .jwt;
    let mut every = watch(&app, &all, &format!("?application={OTHER}")).await;
    let again = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/theirs-again"}),
        &now(),
    );
    app.post_as(&other_writes, &json!([again])).await;
    let (_, seen) = every.event(WITHIN).await.unwrap();
    assert_eq!(seen["application"], OTHER);
}

async fn a_rejected_event_arrives_marked_with_its_reason_codes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    let mut stream = watch(&app, &token, "").await;
    let future = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/"}),
        "2999-01-01 00:00:00",
    );
    assert_eq!(
        app.post(&json!([future])).await.status(),
        StatusCode::ACCEPTED
    );
    let (kind, rejected) = stream.event(WITHIN).await.unwrap();
    assert_eq!(kind, "rejected");
    assert_eq!(rejected["rejected"], true);
    assert_eq!(rejected["reasons"], json!(["timestamp_in_future"]));
    assert_eq!(rejected["name"], "pageview");
    assert_eq!(rejected["data"], r#"{"host":"h","path":"/"}"#);
}

async fn a_client_that_never_reads_is_dropped_with_a_notice_and_storage_does_not_wait_for_it(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    // A plain socket with a small receive buffer, so the admin's writes back up soon.
    let address: std::net::SocketAddr = app
        .admin_address
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(address).await.unwrap();
    client
        .write_all(
            format!(
                "GET /api/v1/events/stream HTTP/1.1\r\nHost: {address}\r\n\
                 Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut client, &mut seen, ": watching", Duration::from_secs(5)).await;

    // Far more events than a stream may hold back (1000), enough to fill the socket too.
    const POSTS: usize = 300;
    const EVENTS: usize = 10;
    let data = json!({"host": "h", "path": format!("/{}", "x".repeat(2000))});
    let started = Instant::now();
    for _ in 0..POSTS {
        let events: Vec<Value> = (0..EVENTS)
            .map(|_| event("page interaction", "pageview", data.clone(), &now()))
            .collect();
        assert_eq!(
            app.post(&Value::Array(events)).await.status(),
            StatusCode::ACCEPTED
        );
    }
    app.wait_for_counts((POSTS * EVENTS) as u64, 0).await;
    eprintln!(
        "{} events posted and stored in {:?} beside a stalled stream",
        POSTS * EVENTS,
        started.elapsed()
    );

    // Reading again, the client finds the notice and the end of the stream.
    seen.clear();
    read_until(
        &mut client,
        &mut seen,
        "event: dropped",
        Duration::from_secs(10),
    )
    .await;
    read_until(
        &mut client,
        &mut seen,
        "\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
}

async fn stopping_ends_open_streams_with_a_notice_instead_of_waiting_for_them(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    let mut stream = watch(&app, &token, "").await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("stopping waited for the open stream");
    eprintln!("stopped beside an open stream in {:?}", started.elapsed());
    let (kind, notice) = stream.event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(kind, "closed");
    assert!(notice["reason"].as_str().unwrap().contains("stopping"));
}

/// Reads `client` into `seen` until it holds `wanted`, failing after `wait`.
async fn read_until(
    client: &mut tokio::net::TcpStream,
    seen: &mut Vec<u8>,
    wanted: &str,
    wait: Duration,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buffer = vec![0; 64 * 1024];
    while !String::from_utf8_lossy(seen).contains(wanted) {
        let read = tokio::time::timeout_at(deadline, client.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("`{wanted}` did not come"))
            .unwrap();
        assert!(read > 0, "the stream closed before `{wanted}`");
        seen.extend_from_slice(&buffer[..read]);
        // Only the tail matters; the events before the notice can be many.
        if seen.len() > 1 << 20 {
            seen.drain(..seen.len() - 4096);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_a_posted_event_without_a_reload_and_holds_rows_while_paused() {
    let Some(browser) = Browser::start("live_page").await else {
        return;
    };
    let app = TestApp::spawn(Backend::Embedded).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let admin = &app.admin_address;
    browser.goto(&format!("{admin}/live")).await;
    browser.wait_for_url("/login").await;
    browser.fill("#username", ADMIN_USER).await;
    browser.fill("#password", ADMIN_PASSWORD).await;
    browser.click("#login").await;
    browser.wait_for_url("/live").await;
    wait_for_text(&browser, "#live-status", "watching").await;

    let seen = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/shown-live"}),
        &now(),
    );
    app.post(&json!([seen])).await;
    browser.find("#live-rows tr").await;
    let rows = browser.texts("#live-rows tr").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("/shown-live"), "{rows:?}");
    assert!(rows[0].contains(eye_testkit::APPLICATION), "{rows:?}");

    browser.click("#live-pause").await;
    let held = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/held"}),
        &now(),
    );
    app.post(&json!([held])).await;
    wait_for_text(&browser, "#live-status", "paused, 1 waiting").await;
    assert_eq!(browser.texts("#live-rows tr").await.len(), 1);
    browser.click("#live-pause").await;
    let rows = browser.texts("#live-rows tr").await;
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains("/held"), "{rows:?}");

    // A rejected event is marked.
    let future = event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/late"}),
        "2999-01-01 00:00:00",
    );
    app.post(&json!([future])).await;
    browser.find("#live-rows tr.rejected").await;
    let marked = browser.text("#live-rows tr.rejected").await;
    assert!(marked.contains("rejected: timestamp_in_future"), "{marked}");
    browser.screenshot("live").await;
}

async fn wait_for_text(browser: &Browser, css: &str, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = browser.text(css).await;
        if text == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{css}` shows `{text}`, not `{wanted}`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_stream_limit_a_new_stream_is_refused_with_503_until_one_closes() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    let mut open = Vec::new();
    for _ in 0..64 {
        open.push(watch(&app, &token, "").await);
    }
    let refused = app
        .client
        .get(format!("{}/api/v1/events/stream", app.admin_address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_streams");

    // A closed stream frees its place once the admin notices, when writing to it fails.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        app.post(&json!([event(
            "page interaction",
            "pageview",
            json!({"host": "h", "path": "/"}),
            &now()
        )]))
        .await;
        let response = app
            .client
            .get(format!("{}/api/v1/events/stream", app.admin_address))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A queue of the test's own bound to the live exchange: it receives what workers send live,
/// whether or not a watcher is registered.
async fn bound_to_the_live_exchange(app: &TestApp) -> (lapin::Connection, lapin::Channel, String) {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let Queue::Amqp(url) = &app.queue else {
        unreachable!("services only")
    };
    let topology = Topology::new(&app.settings.queue_prefix);
    let connection = lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            topology.live_exchange.as_str().into(),
            lapin::ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .unwrap()
        .name()
        .to_string();
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.live_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (connection, channel, queue)
}

async fn messages_in(channel: &lapin::Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .unwrap()
        .message_count()
}

async fn with_nobody_watching_a_worker_sends_nothing_live_and_the_first_watcher_misses_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (_connection, channel, spy) = bound_to_the_live_exchange(&app).await;
    let session = Uuid::new_v4();
    let view = |path: &str| {
        json!({"session_id": session, "category": "page interaction", "name": "pageview",
            "data": {"host": "h", "path": path}, "timestamp": now()})
    };
    for path in ["/a", "/b", "/c"] {
        assert_eq!(app.post(&view(path)).await.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_counts(3, 0).await;
    // Past the time a worker trusts an answer, so a late copy would have shown by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        messages_in(&channel, &spy).await,
        0,
        "nothing is sent live while nobody watches"
    );

    // The first watcher gets the very next event, though the worker had just learned, while
    // storing `/e`, that nobody watched.
    let token = read_token(&app, eye_testkit::APPLICATION).await;
    assert_eq!(app.post(&view("/e")).await.status(), StatusCode::ACCEPTED);
    app.wait_for_counts(4, 0).await;
    let mut stream = watch(&app, &token, "").await;
    assert_eq!(app.post(&view("/d")).await.status(), StatusCode::ACCEPTED);
    let (_, shown) = stream
        .event(WITHIN)
        .await
        .expect("no event within a second");
    assert_eq!(shown["data"], r#"{"host":"h","path":"/d"}"#);
    assert_eq!(messages_in(&channel, &spy).await, 1, "one batch, sent once");
}
