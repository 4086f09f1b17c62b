//! Publishable keys: sent from the pages of their origins only, never reading, limited per
//! client address, answered with CORS for their origins, managed in the panel; and secret
//! tokens as before.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_entity::tokens;
use eye_testkit::{Backend, Options, TestApp, on_both_backends, pageview};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    a_publishable_key_sends_only_from_the_pages_of_its_origins,
    a_publishable_key_never_reads,
    preflights_are_answered_for_the_origins_of_active_keys_only,
    a_revoked_publishable_key_is_refused_and_its_origin_no_longer_answered,
    secret_tokens_get_no_cors_headers_and_no_limit_per_address,
    each_client_address_has_its_own_limit_with_a_publishable_key,
    forwarded_addresses_count_only_behind_a_trusted_proxy,
    the_panel_issues_lists_and_revokes_publishable_keys,
);

const SHOP: &str = "https://shop.example";

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Posts to the browser path as a page would: a text/plain body holding the key.
async fn send_from(
    app: &TestApp,
    origin: Option<&str>,
    key: Option<&str>,
    events: Value,
) -> reqwest::Response {
    let mut body = json!({"events": events});
    if let Some(key) = key {
        body["key"] = json!(key);
    }
    let mut request = app
        .client
        .post(format!("{}/v1/browser/events", app.address))
        .header("Content-Type", "text/plain;charset=UTF-8")
        .body(body.to_string());
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

async fn problem(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    (status, problem["code"].as_str().unwrap().to_owned())
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn a_publishable_key_sends_only_from_the_pages_of_its_origins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app
        .publishable_key(&[SHOP, "http://localhost:3000"])
        .await
        .jwt;

    let sent = send_from(&app, Some(SHOP), Some(&key), pageview("/", &now())).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&sent, "access-control-allow-origin").unwrap(), SHOP);
    assert_eq!(header(&sent, "vary").unwrap(), "Origin");
    let batch = json!([pageview("/a", &now()), pageview("/b", &now())]);
    let sent = send_from(&app, Some("http://localhost:3000"), Some(&key), batch).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);

    // The same key as a bearer token on /v1/events, as a fetch with headers would send it.
    let bearer = app
        .client
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&key)
        .header("Origin", SHOP)
        .json(&pageview("/c", &now()))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(&bearer, "access-control-allow-origin").unwrap(),
        SHOP
    );

    let refused = [
        (
            send_from(&app, None, Some(&key), pageview("/", &now())).await,
            StatusCode::FORBIDDEN,
            "origin_required",
        ),
        (
            send_from(
                &app,
                Some("https://evil.example"),
                Some(&key),
                pageview("/", &now()),
            )
            .await,
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
        (
            send_from(
                &app,
                Some("http://shop.example"),
                Some(&key),
                pageview("/", &now()),
            )
            .await,
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
        (
            app.post_as(&key, &pageview("/", &now())).await,
            StatusCode::FORBIDDEN,
            "origin_required",
        ),
        (
            send_from(&app, Some(SHOP), None, pageview("/", &now())).await,
            StatusCode::UNAUTHORIZED,
            "missing_token",
        ),
        (
            send_from(&app, Some(SHOP), Some(&app.token), pageview("/", &now())).await,
            StatusCode::FORBIDDEN,
            "not_publishable",
        ),
    ];
    for (response, status, code) in refused {
        if code.starts_with("origin") {
            assert_eq!(header(&response, "access-control-allow-origin"), None);
        }
        assert_eq!(problem(response).await, (status, code.to_owned()));
    }
    let json_body = app
        .client
        .post(format!("{}/v1/browser/events", app.address))
        .header("Origin", SHOP)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(json!({"key": key, "events": pageview("/", &now())}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(json_body).await,
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );
    app.wait_for_counts(4, 0).await;
}

async fn a_publishable_key_never_reads(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.publishable_key(&[SHOP]).await.jwt;
    for path in [
        "/api/v1/events",
        "/api/v1/rejected-events",
        "/api/v1/events/stream",
        "/api/v1/sessions/e2085be5-9137-4e4e-80b5-f1ffddc25423",
    ] {
        for (origin, code) in [(Some(SHOP), "missing_scope"), (None, "origin_required")] {
            let mut request = app
                .client
                .get(format!("{}{path}", app.admin_address))
                .bearer_auth(&key);
            if let Some(origin) = origin {
                request = request.header("Origin", origin);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                problem(response).await,
                (StatusCode::FORBIDDEN, code.to_owned()),
                "{path} from {origin:?}"
            );
        }
    }
}

async fn preflight(app: &TestApp, path: &str, origin: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", app.address))
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,content-encoding",
        );
    if let Some(origin) = origin {
        request = request.header("Origin", origin);
    }
    request.send().await.unwrap()
}

/// Waits until a preflight from `origin` gets `status` (the api lists a new key's origins at
/// its next token refresh, 200 ms here).
async fn wait_for_preflight(app: &TestApp, origin: &str, status: StatusCode) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = preflight(app, "/v1/events", Some(origin)).await;
        if response.status() == status {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "the preflight from {origin} is still answered {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn preflights_are_answered_for_the_origins_of_active_keys_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.publishable_key(&[SHOP]).await;
    wait_for_preflight(&app, SHOP, StatusCode::NO_CONTENT).await;
    for path in ["/v1/events", "/v1/browser/events"] {
        let answered = preflight(&app, path, Some(SHOP)).await;
        assert_eq!(answered.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            header(&answered, "access-control-allow-origin").unwrap(),
            SHOP
        );
        assert_eq!(
            header(&answered, "access-control-allow-methods").unwrap(),
            "POST"
        );
        let headers = header(&answered, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        for needed in ["content-type", "authorization", "content-encoding"] {
            assert!(headers.contains(needed), "{headers}");
        }
        assert_eq!(header(&answered, "access-control-max-age").unwrap(), "7200");
        assert_eq!(header(&answered, "vary").unwrap(), "Origin");
    }
    for (origin, code) in [
        (Some("https://evil.example"), "origin_not_allowed"),
        (None, "origin_required"),
    ] {
        let refused = preflight(&app, "/v1/events", origin).await;
        assert_eq!(header(&refused, "access-control-allow-origin"), None);
        assert_eq!(
            problem(refused).await,
            (StatusCode::FORBIDDEN, code.to_owned())
        );
    }
}

async fn a_revoked_publishable_key_is_refused_and_its_origin_no_longer_answered(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.publishable_key(&[SHOP]).await;
    let sent = send_from(&app, Some(SHOP), Some(&key.jwt), pageview("/", &now())).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    assert!(tokens::revoke(&app.db, key.id).await.unwrap());
    wait_for_preflight(&app, SHOP, StatusCode::FORBIDDEN).await;
    let refused = send_from(&app, Some(SHOP), Some(&key.jwt), pageview("/", &now())).await;
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    assert_eq!(
        problem(refused).await,
        (StatusCode::UNAUTHORIZED, "token_revoked".into())
    );
    app.wait_for_counts(1, 0).await;
}

async fn secret_tokens_get_no_cors_headers_and_no_limit_per_address(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| {
                s.publishable_rate_limit = "1/h".parse().unwrap();
                s.publishable_rate_limit_burst = 1;
            },
            ..Options::default()
        },
    )
    .await;
    app.publishable_key(&[SHOP]).await;
    for _ in 0..3 {
        let sent = app
            .post(&json!([pageview("/", &now()), pageview("/x", &now())]))
            .await;
        assert_eq!(sent.status(), StatusCode::ACCEPTED);
        for name in ["access-control-allow-origin", "vary"] {
            assert_eq!(header(&sent, name), None, "{name}");
        }
    }
    app.wait_for_counts(6, 0).await;
}

async fn each_client_address_has_its_own_limit_with_a_publishable_key(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| {
                s.publishable_rate_limit = "2/min".parse().unwrap();
                s.publishable_rate_limit_burst = 2;
            },
            ..Options::default()
        },
    )
    .await;
    let key = app.publishable_key(&[SHOP]).await.jwt;
    let two = json!([pageview("/a", &now()), pageview("/b", &now())]);
    let sent = send_from(&app, Some(SHOP), Some(&key), two.clone()).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let limited = send_from(&app, Some(SHOP), Some(&key), pageview("/c", &now())).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // One event refills in 30 s.
    let retry_after: u64 = header(&limited, "retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&limited, "access-control-allow-origin").unwrap(),
        SHOP
    );
    assert_eq!(
        problem(limited).await,
        (StatusCode::TOO_MANY_REQUESTS, "address_rate_limited".into())
    );
    // Without a trusted proxy a client cannot choose the address that is counted.
    let forwarded = app
        .client
        .post(format!("{}/v1/browser/events", app.address))
        .header("Origin", SHOP)
        .header("X-Forwarded-For", "198.51.100.7")
        .header("Content-Type", "text/plain")
        .body(json!({"key": key, "events": pageview("/d", &now())}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), StatusCode::TOO_MANY_REQUESTS);
    let three = json!([
        pageview("/e", &now()),
        pageview("/f", &now()),
        pageview("/g", &now())
    ]);
    assert_eq!(
        problem(send_from(&app, Some(SHOP), Some(&key), three).await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "batch_over_burst".into())
    );
    // The application's secret token is not held to it.
    assert_eq!(app.post(&two).await.status(), StatusCode::ACCEPTED);
    app.wait_for_counts(4, 0).await;
}

async fn forwarded_addresses_count_only_behind_a_trusted_proxy(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| {
                s.publishable_rate_limit = "1/h".parse().unwrap();
                s.publishable_rate_limit_burst = 1;
                s.api_trusted_proxies = vec!["127.0.0.1".into()];
            },
            ..Options::default()
        },
    )
    .await;
    let key = app.publishable_key(&[SHOP]).await.jwt;
    let from = |client: &'static str| {
        app.client
            .post(format!("{}/v1/browser/events", app.address))
            .header("Origin", SHOP)
            .header("X-Forwarded-For", client)
            .header("Content-Type", "text/plain")
            .body(json!({"key": key, "events": pageview("/", &now())}).to_string())
            .send()
    };
    assert_eq!(
        from("198.51.100.7").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        from("198.51.100.8").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        from("198.51.100.7").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    app.wait_for_counts(2, 0).await;
}

async fn the_panel_issues_lists_and_revokes_publishable_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.admin().await;
    let form = |origins: &'static str, read: bool| {
        let mut form = vec![
            ("application", "shop"),
            ("write", "1"),
            ("days", "30"),
            ("publishable", "1"),
            ("origins", origins),
        ];
        if read {
            form.push(("read", "1"));
        }
        form
    };
    for (origins, read, says) in [
        ("", false, "needs the origin of the pages"),
        ("https://shop.example/cart", false, "has a path"),
        (SHOP, true, "untick events:read"),
    ] {
        let refused = client.post("/tokens", &form(origins, read)).await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{origins}");
        let page = refused.text().await.unwrap();
        assert!(page.contains(says), "{says}: {page}");
        assert!(!page.contains("id=\"token-jwt\""));
    }

    let issued = client
        .post(
            "/tokens",
            &form("https://shop.example\nhttp://localhost:3000", false),
        )
        .await;
    assert_eq!(issued.status(), StatusCode::OK);
    let page = issued.text().await.unwrap();
    let start = page.find("id=\"token-jwt\">").unwrap() + "id=\"token-jwt\">".len();
    let jwt = page[start..start + page[start..].find('<').unwrap()].to_owned();
    let claims = app.keys.verify(&jwt).expect("a valid key");
    assert!(
        page.contains("http://localhost:3000 https://shop.example"),
        "{page}"
    );
    assert!(page.contains("/eye.js"), "the page says how to embed it");

    let (_, list) = client.get("/applications").await;
    let row_start = list.find(&format!("id=\"t-{}\"", claims.jti)).unwrap();
    let row = &list[row_start..row_start + list[row_start..].find("</tr>").unwrap()];
    assert!(row.contains("publishable"), "{row}");
    assert!(row.contains("<li>https://shop.example</li>"), "{row}");
    assert!(row.contains("<li>http://localhost:3000</li>"), "{row}");
    assert!(!list.contains(&jwt), "the key is shown once, not listed");

    let sent = send_from(&app, Some(SHOP), Some(&jwt), pageview("/", &now())).await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let revoked = client
        .post(&format!("/tokens/{}/revoke", claims.jti), &[])
        .await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let (_, list) = client.get("/applications").await;
    let row_start = list.find(&format!("id=\"t-{}\"", claims.jti)).unwrap();
    let row = &list[row_start..row_start + list[row_start..].find("</tr>").unwrap()];
    assert!(row.contains("revoked"), "{row}");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = send_from(&app, Some(SHOP), Some(&jwt), pageview("/", &now())).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_eq!(
                problem(response).await,
                (StatusCode::UNAUTHORIZED, "token_revoked".into())
            );
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snippet_is_served_as_a_cacheable_script() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let script = app
        .client
        .get(format!("{}/eye.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(
        header(&script, "content-type").unwrap(),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        header(&script, "cache-control").unwrap(),
        "public, max-age=3600"
    );
    assert_eq!(
        header(&script, "x-content-type-options").unwrap(),
        "nosniff"
    );
    let tag = header(&script, "etag").unwrap();
    assert_eq!(script.text().await.unwrap(), eye_api::browser::SCRIPT);
    let again = app
        .client
        .get(format!("{}/eye.js", app.address))
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, "etag").unwrap(), tag);
    assert!(again.bytes().await.unwrap().is_empty());
}
