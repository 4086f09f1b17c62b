//! The admin under pressure: guesses sent at once, clients that claim another address or https,
//! usernames typed as passwords, text searches that would run for ever, and text search that
//! means the same on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{TimeZone, Utc};
use eye_core::token::Scope;
use eye_testkit::{
    ADMIN_PASSWORD, ADMIN_USER, AdminClient, Backend, Options, Seed, TestApp, on_both_backends,
    on_services,
};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    wrong_logins_sent_at_once_are_throttled_at_the_limit,
    usernames_over_150_characters_are_refused_before_the_throttle,
    failed_logins_are_logged_with_a_tag_never_the_typed_name,
    forwarded_addresses_count_only_through_a_trusted_proxy,
    strict_transport_security_only_over_https_as_a_trusted_proxy_says,
    text_search_finds_the_same_events_on_both_backends,
    dashboard_totals_past_ten_thousand_are_estimates_and_say_so,
);

on_services!(
    a_text_search_that_runs_too_long_is_stopped_with_a_clear_message,
    a_dashboard_query_that_runs_too_long_shows_unknown_instead_of_waiting,
);

fn three_attempts(options: Options) -> Options {
    Options {
        settings: |s| s.admin_login_attempts = 3,
        ..options
    }
}

/// Three attempts per name, twelve per address, and `127.0.0.1` (where tests connect from) is
/// a trusted proxy.
fn behind_a_proxy(options: Options) -> Options {
    Options {
        settings: |s| {
            s.admin_login_attempts = 3;
            s.admin_trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        },
        ..options
    }
}

/// A client that fetched the login form, so that its POST carries a matching CSRF token.
async fn at_the_login_form(app: &TestApp) -> AdminClient {
    let mut client = AdminClient::new(&app.admin_address);
    client.get("/login").await;
    client
}

async fn login_from(
    client: &mut AdminClient,
    username: &str,
    password: &str,
    forwarded_for: &str,
) -> StatusCode {
    let (_, page) = client.get("/login").await;
    client
        .client
        .post(format!("{}/login", client.base))
        .header("X-Forwarded-For", forwarded_for)
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", &eye_testkit::csrf_of(&page)),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap()
        .status()
}

async fn wrong_logins_sent_at_once_are_throttled_at_the_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, three_attempts(Options::default())).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(at_the_login_form(&app).await);
    }
    let guesses = clients.into_iter().enumerate().map(|(i, mut client)| {
        tokio::spawn(async move {
            client
                .post(
                    "/login",
                    &[
                        ("username", ADMIN_USER),
                        ("password", &format!("guess {i}")),
                        ("next", "/"),
                    ],
                )
                .await
                .status()
        })
    });
    let mut statuses = Vec::new();
    for guess in guesses.collect::<Vec<_>>() {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        (checked, throttled),
        (3, 7),
        "only three guesses are checked: {statuses:?}"
    );
    let mut client = AdminClient::new(&app.admin_address);
    assert_eq!(
        client.login(ADMIN_USER, ADMIN_PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the right password waits too"
    );
}

async fn usernames_over_150_characters_are_refused_before_the_throttle(backend: Backend) {
    let app = TestApp::spawn_with(backend, three_attempts(Options::default())).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut client = AdminClient::new(&app.admin_address);
    let long = "x".repeat(151);
    // More than the address's twelve attempts: none of them counts.
    for _ in 0..13 {
        let response = client.login(&long, "anything").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let page = response.text().await.unwrap();
        assert!(
            page.contains("Usernames have at most 150 characters."),
            "{page}"
        );
        assert!(!page.contains(&long), "the long name is not shown back");
    }
    let exactly = "y".repeat(150);
    assert_eq!(
        client.login(&exactly, "anything").await.status(),
        StatusCode::UNAUTHORIZED,
        "150 characters are checked as usual"
    );
    assert_eq!(
        client.login(ADMIN_USER, ADMIN_PASSWORD).await.status(),
        StatusCode::SEE_OTHER,
        "the address was never throttled"
    );
}

async fn failed_logins_are_logged_with_a_tag_never_the_typed_name(backend: Backend) {
    eye_testkit::logs::capture();
    let app = TestApp::spawn_with(backend, three_attempts(Options::default())).await;
    let mut client = AdminClient::new(&app.admin_address);
    // Someone types their password into the name field, four times.
    let typed = format!("Pa55-{}", Uuid::new_v4().simple());
    for expected in [
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::UNAUTHORIZED,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(client.login(&typed, "whatever").await.status(), expected);
    }
    let text = eye_testkit::logs::captured();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("login failed") || l.contains("login throttled"))
        // Other tests of this binary throttle by address alone, with no name to tag.
        .filter(|l| l.contains("user="))
        .collect();
    assert!(lines.len() >= 4, "the failures are logged: {text}");
    assert!(
        !text.contains(&typed) && !text.to_lowercase().contains(&typed.to_lowercase()),
        "the typed name is never logged"
    );
    let tag = |line: &str| {
        let at = line.find("user=").unwrap() + "user=".len();
        line[at..at + 12].to_owned()
    };
    let tags: Vec<String> = lines.iter().map(|l| tag(l)).collect();
    assert!(
        tags.iter()
            .all(|t| t.chars().all(|c| c.is_ascii_hexdigit())),
        "{tags:?}"
    );
}

async fn forwarded_addresses_count_only_through_a_trusted_proxy(backend: Backend) {
    // Trusted: each client address behind the proxy has its own twelve attempts.
    let app = TestApp::spawn_with(backend.clone(), behind_a_proxy(Options::default())).await;
    let mut client = AdminClient::new(&app.admin_address);
    for i in 0..12 {
        let status = login_from(&mut client, &format!("name{i}"), "x", "198.51.100.1").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_from(&mut client, "name-new", "x", "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS,
        "that client is throttled"
    );
    assert_eq!(
        login_from(&mut client, "name-new", "x", "198.51.100.2, 10.0.0.5").await,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxies is not"
    );
    drop(app);

    // Not trusted: the header is the client's word, and every request counts for the peer.
    let app = TestApp::spawn_with(backend, three_attempts(Options::default())).await;
    let mut client = AdminClient::new(&app.admin_address);
    for i in 0..12 {
        let forwarded = format!("198.51.100.{i}");
        let status = login_from(&mut client, &format!("name{i}"), "x", &forwarded).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_from(&mut client, "name-new", "x", "203.0.113.99").await,
        StatusCode::TOO_MANY_REQUESTS,
        "a made-up X-Forwarded-For does not escape the throttle"
    );
}

async fn hsts(app: &TestApp, proto: Option<&str>) -> Option<String> {
    let mut request = reqwest::Client::new().get(format!("{}/login", app.admin_address));
    if let Some(proto) = proto {
        request = request.header("X-Forwarded-Proto", proto);
    }
    let response = request.send().await.unwrap();
    response
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn strict_transport_security_only_over_https_as_a_trusted_proxy_says(backend: Backend) {
    let app = TestApp::spawn_with(backend.clone(), behind_a_proxy(Options::default())).await;
    assert_eq!(
        hsts(&app, Some("https")).await.as_deref(),
        Some("max-age=31536000")
    );
    assert_eq!(hsts(&app, Some("http")).await, None);
    assert_eq!(hsts(&app, None).await, None, "plain http");
    drop(app);
    let app = TestApp::spawn(backend).await;
    assert_eq!(
        hsts(&app, Some("https")).await,
        None,
        "an untrusted peer's word is not taken"
    );
}

/// Events whose `data` differ in case and spacing, by label.
async fn seed_texts(app: &TestApp) -> Vec<(Uuid, &'static str)> {
    let labels = [
        ("upper-umlaut", json!({"city": "ÜBER"})),
        ("lower-umlaut", json!({"city": "über"})),
        ("ascii", json!({"city": "Uber"})),
        ("greek", json!({"word": "ΣΟΦΙΑ"})),
        ("pair", json!({"k": "v", "n": 1})),
        ("pair-other", json!({"k": "vv"})),
        ("sentence", json!({"note": "Hello, World: again"})),
    ];
    let at = Utc.with_ymd_and_hms(2021, 3, 1, 12, 0, 0).unwrap();
    let seeds: Vec<Seed> = labels
        .iter()
        .enumerate()
        .map(|(i, (_, data))| {
            Seed::new(
                Uuid::new_v4(),
                "custom",
                "thing",
                data.clone(),
                at + chrono::Duration::minutes(i as i64),
            )
        })
        .collect();
    let ids = app.seed(&seeds).await;
    ids.into_iter()
        .zip(labels.iter().map(|(label, _)| *label))
        .collect()
}

async fn text_search_finds_the_same_events_on_both_backends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let labels = seed_texts(&app).await;
    let token = app
        .token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await;
    let client = reqwest::Client::new();
    for (q, expected) in [
        ("ü", vec!["lower-umlaut", "upper-umlaut"]),
        ("Ü", vec!["lower-umlaut", "upper-umlaut"]),
        ("übEr", vec!["lower-umlaut", "upper-umlaut"]),
        ("uber", vec!["ascii"]),
        ("σοφία", vec![]),
        ("σοφια", vec!["greek"]),
        ("\"k\": \"v\"", vec!["pair"]),
        ("\"k\":\"v\"", vec!["pair"]),
        ("\"k\":", vec!["pair", "pair-other"]),
        ("\"n\": 1", vec!["pair"]),
        ("hello, world: again", vec!["sentence"]),
        ("hello,world:again", vec!["sentence"]),
        ("\"note\": \"hello", vec!["sentence"]),
        ("[*]?", vec![]),
    ] {
        let response = client
            .get(format!(
                "{}/api/v1/events?{}",
                app.admin_address,
                reqwest::Url::parse_with_params("http://x/", [("q", q)])
                    .unwrap()
                    .query()
                    .unwrap()
            ))
            .bearer_auth(&token.jwt)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{q}");
        let body: serde_json::Value = response.json().await.unwrap();
        let mut found: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id: Uuid = e["id"].as_str().unwrap().parse().unwrap();
                labels.iter().find(|(i, _)| *i == id).unwrap().1
            })
            .collect();
        found.sort_unstable();
        assert_eq!(found, expected, "q={q}");
    }
}

async fn a_text_search_that_runs_too_long_is_stopped_with_a_clear_message(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| s.admin_search_timeout_ms = 300,
            ..Options::default()
        },
    )
    .await;
    seed_texts(&app).await;
    let mut client = app.admin().await;
    let token = app
        .token_with(&[Scope::EventsRead], chrono::Duration::hours(1))
        .await;
    // Another session holds the table: any search waits for it, as a slow one would run.
    let blocker = app.db.begin().await.unwrap();
    blocker
        .execute_unprepared("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let (status, page) =
        tokio::time::timeout(Duration::from_secs(10), client.get("/events?q=uber"))
            .await
            .expect("the page answers instead of waiting for the lock");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.contains("took longer than 0.3 s and was stopped: narrow the time range"),
        "{page}"
    );
    assert!(
        page.contains("id=\"f-q\" value=\"uber\""),
        "the filters are there to change"
    );
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::Client::new()
            .get(format!("{}/api/v1/events?q=uber", app.admin_address))
            .bearer_auth(&token.jwt)
            .send(),
    )
    .await
    .expect("the read api answers too")
    .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "search_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    blocker.rollback().await.unwrap();

    let (status, page) = client.get("/events?q=uber").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.matches("href=\"/events/").count(), 1, "{page}");
}

fn dashboard_number(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page.find(&marker).unwrap() + marker.len();
    page[start..start + page[start..].find('<').unwrap()].to_owned()
}

async fn dashboard_totals_past_ten_thousand_are_estimates_and_say_so(backend: Backend) {
    let app = TestApp::spawn(backend.clone()).await;
    let session = Uuid::new_v4();
    let at = Utc.with_ymd_and_hms(2021, 3, 1, 0, 0, 0).unwrap();
    let seeds: Vec<Seed> = (0..10_050)
        .map(|i| {
            Seed::new(
                session,
                "custom",
                "thing",
                json!({"i": i}),
                at + chrono::Duration::seconds(i),
            )
        })
        .collect();
    app.seed(&seeds).await;
    if !backend.is_embedded() {
        // What autovacuum does on its own after enough writes: it analyses the partitions
        // that hold the rows, never the partitioned table.
        let partitions = app
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT DISTINCT tableoid::regclass::text AS p FROM events",
            ))
            .await
            .unwrap();
        for row in partitions {
            let partition: String = row.try_get("", "p").unwrap();
            app.db
                .execute_unprepared(&format!("ANALYZE {partition}"))
                .await
                .unwrap();
        }
    }
    let mut client = app.admin().await;
    let (_, page) = client.get("/").await;
    assert_eq!(dashboard_number(&page, "total-events"), "about 10,050");
    assert_eq!(
        dashboard_number(&page, "total-sessions"),
        "1",
        "small: exact"
    );
    assert_eq!(dashboard_number(&page, "total-rejected"), "0");
    assert!(page.contains("Totals above 10,000 are estimates"));

    // Within the cache's few seconds the same numbers are shown without asking again.
    app.seed_rejected("custom", json!({}), &[("data", "invalid")], Utc::now())
        .await;
    let (_, again) = client.get("/").await;
    assert_eq!(dashboard_number(&again, "total-rejected"), "0");
    assert!(again.contains("computed at most every 5 s"));
}

async fn a_dashboard_query_that_runs_too_long_shows_unknown_instead_of_waiting(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    eye_admin::create_user(&app.db, ADMIN_USER, ADMIN_PASSWORD)
        .await
        .unwrap();
    let mut client = AdminClient::new(&app.admin_address);
    // Log in (which lands on the dashboard) only once the table is held.
    let blocker = app.db.begin().await.unwrap();
    blocker
        .execute_unprepared("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let response = client.login(ADMIN_USER, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, page) = tokio::time::timeout(Duration::from_secs(10), client.get("/"))
        .await
        .expect("the dashboard answers instead of waiting for the lock");
    let elapsed = started.elapsed();
    blocker.rollback().await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dashboard_number(&page, "total-events"), "unknown");
    assert!(
        page.contains(
            "Not counted this time, because counting took too long: ingest rate, worker lag, \
             applications, rate-limited requests, rejections, totals,"
        ),
        "{page}"
    );
    assert_eq!(dashboard_number(&page, "ingest-1m"), "unknown");
    assert!(
        elapsed < Duration::from_secs(5),
        "one timeout, not one per part: {elapsed:?}"
    );
}
