//! `/eye.js` in a real headless Chromium: a page served from an origin its publishable key
//! lists stores a page view and a click on a `data-eye` element; the same page from another
//! origin (another port) stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_testkit::browser::{Browser, serve_site};
use eye_testkit::{Backend, Scrape, TestApp, data_of};
use tokio::net::TcpListener;

fn page(api: &str, key: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><title>Shop</title>
<script src="{api}/eye.js" data-key="{key}" defer></script>
</head><body>
<h1>Shop</h1>
<button id="signup" data-eye="sign up"><span id="label">Sign up</span></button>
<button id="plain">Not tracked</button>
</body></html>"#
    )
}

/// The api's count of answers to the browser path with `status`.
async fn browser_answers(app: &TestApp, status: &str) -> f64 {
    Scrape::of(&app.client, &app.address)
        .await
        .samples
        .iter()
        .filter(|s| {
            s.name == "eye_api_requests_total"
                && s.labels.get("route").map(String::as_str) == Some("/v1/browser/events")
                && s.labels.get("status").map(String::as_str) == Some(status)
        })
        .map(|s| s.value)
        .sum()
}

async fn a_page_of_a_listed_origin_sends_page_views_and_clicks(backend: Backend, test: &str) {
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = TestApp::spawn(backend).await;
    // The same page on two ports, two origins: the key lists the first only.
    let listed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listed_port = listed.local_addr().unwrap().port();
    let other_port = other.local_addr().unwrap().port();
    let key = app
        .publishable_key(&[&format!("http://127.0.0.1:{listed_port}")])
        .await
        .jwt;
    let html = page(&app.address, &key);
    serve_site(listed, html.clone(), None);
    serve_site(other, html, None);

    // Another origin: the api refuses every send, and nothing is stored.
    browser
        .goto(&format!("http://127.0.0.1:{other_port}/shop"))
        .await;
    browser.click("#signup").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser_answers(&app, "403").await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the page of an unlisted origin was never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser_answers(&app, "202").await, 0.0);

    // The listed origin: a page view on load, then a click on the marked button (on the
    // label inside it) and none for the unmarked one.
    browser
        .goto(&format!("http://127.0.0.1:{listed_port}/shop"))
        .await;
    let stored = app
        .wait_for_events("the page view", |stored| stored.len() == 1)
        .await;
    assert_eq!(
        (stored[0].category.as_str(), stored[0].name.as_str()),
        ("page interaction", "pageview")
    );
    assert_eq!(
        data_of(&stored[0]),
        serde_json::json!({"host": format!("127.0.0.1:{listed_port}"), "path": "/shop"})
    );
    browser.click("#plain").await;
    browser.click("#label").await;
    let stored = app
        .wait_for_events("the click", |stored| stored.len() == 2)
        .await;
    let click = stored.iter().find(|e| e.name == "cta click").unwrap();
    assert_eq!(click.category, "page interaction");
    assert_eq!(
        data_of(click),
        serde_json::json!({"host": format!("127.0.0.1:{listed_port}"), "path": "/shop", "element": "sign up"})
    );
    assert_eq!(
        click.session_id, stored[0].session_id,
        "one session per tab, kept in sessionStorage"
    );

    // A reload is the same session; leaving the page sends what is queued.
    browser
        .goto(&format!("http://127.0.0.1:{listed_port}/shop"))
        .await;
    browser.click("#signup").await;
    browser.goto("about:blank").await;
    let stored = app
        .wait_for_events("the second visit", |stored| stored.len() == 4)
        .await;
    assert!(stored.iter().all(|e| e.session_id == stored[0].session_id));
    assert_eq!(app.counts().await, (4, 0), "nothing from the other origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_a_listed_origin_sends_page_views_and_clicks_on_sqlite() {
    a_page_of_a_listed_origin_sends_page_views_and_clicks(
        Backend::Embedded,
        "a_page_of_a_listed_origin_sends_page_views_and_clicks_on_sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_a_listed_origin_sends_page_views_and_clicks_on_postgres_rabbitmq() {
    let test = "a_page_of_a_listed_origin_sends_page_views_and_clicks_on_postgres_rabbitmq";
    if let Some(backend) = Backend::services(test) {
        a_page_of_a_listed_origin_sends_page_views_and_clicks(backend, test).await;
    }
}
