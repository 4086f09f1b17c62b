//! Each service's `/metrics`: what it counted, with bounded labels, read from the exposition
//! format the way Prometheus reads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::Utc;
use eye_core::rate_limit::{Rate, RateLimit};
use eye_core::token::Scope;
use eye_testkit::{AdminClient, Backend, Options, Scrape, TestApp, on_both_backends, pageview};
use serde_json::json;

on_both_backends!(
    each_service_counts_what_it_did_with_bounded_labels,
    with_metrics_disabled_nothing_is_served,
);

/// Scrapes until `ready` holds (the services count after they answer), for at most 10 s.
async fn scrape_until(app: &TestApp, base: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = Scrape::of(&app.client, base).await;
        if ready(&scrape) || Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn each_service_counts_what_it_did_with_bounded_labels(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = Utc::now().to_rfc3339();
    let future = (Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let other = app.write_token_for("<b>other</b> app").await;

    // Three accepted requests of test-app (five events, one dated in the future), one of
    // another application, requests of a third until its limit refuses one, one that is not
    // JSON, one without a token, one to no route.
    let batch = json!([
        pageview("/a", &now),
        pageview("/b", &now),
        pageview("/c", &future)
    ]);
    assert_eq!(app.post(&batch).await.status(), 202);
    assert_eq!(app.post(&pageview("/d", &now)).await.status(), 202);
    assert_eq!(app.post(&pageview("/e", &now)).await.status(), 202);
    assert_eq!(
        app.post_as(&other, &pageview("/o", &now)).await.status(),
        202
    );
    // A third application limited to one event a minute: posted to until it is refused.
    let limited = app.write_token_for("limited").await;
    let one_a_minute = RateLimit::new(Rate::new(1, 60).unwrap(), 1).unwrap();
    eye_entity::rate_limits::set(&app.db, "limited", Some(one_a_minute))
        .await
        .unwrap();
    let mut limited_accepted = 0.0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.post_as(&limited, &pageview("/l", &now)).await.status();
        if status == 429 {
            break;
        }
        assert_eq!(status, 202);
        limited_accepted += 1.0;
        assert!(Instant::now() < deadline, "the limit never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.post_text("{not json").await.status(), 400);
    let anonymous = app
        .post_raw(None, "application/json", None, b"{}".to_vec())
        .await;
    assert_eq!(anonymous.status(), 401);
    let stray = app
        .client
        .get(format!(
            "{}/wp-admin/secret-{}",
            app.address,
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 404);
    app.wait_for_counts(5 + limited_accepted as u64, 1).await;

    // The api.
    let api = scrape_until(&app, &app.address, |s| {
        s.value(
            "eye_api_requests_total",
            &[("route", "unmatched"), ("status", "404"), ("code", "")],
        )
        .is_some()
    })
    .await;
    let requests = |status: &str, code: &str| {
        api.value(
            "eye_api_requests_total",
            &[("route", "/v1/events"), ("status", status), ("code", code)],
        )
    };
    assert_eq!(requests("202", ""), Some(4.0 + limited_accepted));
    assert_eq!(requests("429", "rate_limited"), Some(1.0));
    assert_eq!(
        api.value("eye_api_rate_limited_total", &[("application", "limited")]),
        Some(1.0)
    );
    assert_eq!(
        api.value("eye_api_rate_limited_total", &[("application", "test-app")]),
        None
    );
    assert_eq!(
        api.value(
            "eye_api_events_accepted_total",
            &[("application", "limited")]
        ),
        Some(limited_accepted)
    );
    assert_eq!(requests("400", "invalid_json"), Some(1.0));
    assert_eq!(requests("401", "missing_token"), Some(1.0));
    let routes = api.label_values("eye_api_requests_total", "route");
    assert!(
        routes
            .iter()
            .all(|r| ["/v1/events", "/readyz", "/metrics", "unmatched"].contains(&r.as_str())),
        "a route label never holds the path a client chose: {routes:?}"
    );
    assert_eq!(
        api.value(
            "eye_api_events_accepted_total",
            &[("application", "test-app")]
        ),
        Some(5.0)
    );
    assert_eq!(
        api.value(
            "eye_api_events_accepted_total",
            &[("application", "<b>other</b> app")]
        ),
        Some(1.0)
    );
    // Bodies are measured once read: the accepted ones, the limited one and the one that was
    // not JSON.
    assert_eq!(
        api.value("eye_api_request_body_bytes_count", &[]),
        Some(6.0 + limited_accepted)
    );
    // Each accepted request's envelope left in a message that the broker confirmed.
    let accepted_requests = 4.0 + limited_accepted;
    assert_eq!(
        api.value("eye_api_outbox_envelopes_per_message_sum", &[]),
        Some(accepted_requests)
    );
    let messages = api
        .value("eye_api_broker_confirm_seconds_count", &[])
        .unwrap();
    assert!(
        (1.0..=accepted_requests).contains(&messages),
        "{messages} messages"
    );
    assert_eq!(api.value("eye_api_messages_in_flight", &[]), Some(0.0));
    assert!(api.value("eye_api_token_cache_tokens", &[]).unwrap() >= 1.0);
    let age = api.value("eye_api_token_cache_age_seconds", &[]).unwrap();
    assert!((0.0..5.0).contains(&age), "token cache {age} s old");
    assert_eq!(api.types["eye_api_request_duration_seconds"], "histogram");
    assert_eq!(
        api.value(
            "eye_api_request_duration_seconds_count",
            &[("route", "/v1/events")]
        ),
        Some(7.0 + limited_accepted)
    );
    // Every failure reason shows, at zero: none happened.
    let failures = api.all("eye_api_publish_failures_total");
    assert_eq!(failures.len(), 7);
    assert!(failures.iter().all(|s| s.value == 0.0), "{failures:?}");

    // The workers, on their own listener.
    let worker_address = app
        .worker_metrics_address
        .clone()
        .expect("workers serve metrics");
    let worker = scrape_until(&app, &worker_address, |s| {
        s.value("eye_worker_events_consumed_total", &[]) == Some(6.0 + limited_accepted)
    })
    .await;
    assert_eq!(
        worker.value("eye_worker_events_consumed_total", &[]),
        Some(6.0 + limited_accepted)
    );
    assert_eq!(
        worker.value(
            "eye_worker_events_stored_total",
            &[("application", "test-app")]
        ),
        Some(4.0)
    );
    assert_eq!(
        worker.value(
            "eye_worker_events_stored_total",
            &[("application", "<b>other</b> app")]
        ),
        Some(1.0)
    );
    assert_eq!(
        worker.value(
            "eye_worker_events_rejected_total",
            &[
                ("application", "test-app"),
                ("reason", "timestamp_in_future")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        worker.value("eye_worker_messages_total", &[]),
        Some(messages)
    );
    assert_eq!(
        worker.value("eye_worker_batch_events_sum", &[]),
        Some(6.0 + limited_accepted)
    );
    assert!(
        worker
            .value("eye_worker_commit_seconds_count", &[])
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        worker.value("eye_worker_dead_letters_total", &[("source", "unreadable")]),
        Some(0.0)
    );
    assert_eq!(
        worker.value("eye_worker_retries_total", &[("class", "database")]),
        Some(0.0)
    );
    let lag = worker.value("eye_worker_lag_seconds", &[]).unwrap();
    assert!((0.0..30.0).contains(&lag), "lag {lag} s");
    assert!(
        worker.all("eye_api_requests_total").is_empty(),
        "one service per scrape"
    );

    // The admin: a failed login, a page, a read-api request.
    let mut browser = AdminClient::new(&app.admin_address);
    assert_eq!(browser.login("nobody", "wrong").await.status(), 401);
    let admin = app.admin().await;
    drop(admin);
    let reader = app
        .token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await
        .jwt;
    let read = app
        .client
        .get(format!("{}/api/v1/events", app.admin_address))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let unauthenticated = app
        .client
        .get(format!("{}/api/v1/events", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let admin = scrape_until(&app, &app.admin_address, |s| {
        s.value(
            "eye_admin_read_api_requests_total",
            &[("application", "none"), ("status", "401")],
        )
        .is_some()
    })
    .await;
    assert_eq!(
        admin.value(
            "eye_admin_logins_failed_total",
            &[("reason", "credentials")]
        ),
        Some(1.0)
    );
    assert_eq!(
        admin.value("eye_admin_logins_failed_total", &[("reason", "throttled")]),
        Some(0.0)
    );
    assert_eq!(
        admin.value(
            "eye_admin_read_api_requests_total",
            &[("application", "test-app"), ("status", "200")]
        ),
        Some(1.0)
    );
    assert_eq!(
        admin.value(
            "eye_admin_read_api_requests_total",
            &[("application", "none"), ("status", "401")]
        ),
        Some(1.0)
    );
    assert!(
        admin
            .value(
                "eye_admin_request_duration_seconds_count",
                &[("route", "/login")]
            )
            .unwrap()
            >= 2.0
    );
    assert!(admin.all("eye_worker_messages_total").is_empty());
}

async fn with_metrics_disabled_nothing_is_served(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| s.metrics_enabled = false,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        app.post(&pageview("/", &Utc::now().to_rfc3339()))
            .await
            .status(),
        202
    );
    app.wait_for_counts(1, 0).await;
    for base in [&app.address, &app.admin_address] {
        let response = app
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{base}");
        assert!(response.text().await.unwrap().contains("metrics_enabled"));
    }
    assert_eq!(app.worker_metrics_address, None);
}
