//! `@segment/analytics-next`, unmodified from npm, in a real headless Chromium: configured with
//! The Eye as its api host, no CDN and a publishable key, a page of a listed origin stores a
//! page view and a click; the same page from another origin (another port) stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use eye_testkit::browser::{Browser, serve_site};
use eye_testkit::{Backend, Scrape, TestApp, data_of, sdk};
use serde_json::json;
use tokio::net::TcpListener;

/// Where analytics-next loads its chunks from, under its CDN address (`analytics._cdn`).
const BUNDLES: &str = "/analytics-next/bundles/";

/// A page that loads analytics-next as its documentation shows for a self-hosted api and
/// bundle: the settings given in place of the CDN's, the Segment.io destination pointed at The
/// Eye, the chunks loaded from the page's own site (`analytics._cdn`, set before the bundle
/// loads: it fixes where chunks come from as it starts).
fn page(api_host: &str, key: &str) -> String {
    let settings = json!({
        "integrations": {"Segment.io": {"apiKey": key, "apiHost": api_host, "protocol": "http"}}
    });
    format!(
        r#"<!doctype html>
<html><head><title>Shop</title>
<script>
  // What the SDK reports as going wrong, for the test to read.
  window.errors = [];
  addEventListener("error", (e) => errors.push(String(e.message)));
  addEventListener("unhandledrejection", (e) => errors.push(String(e.reason)));
  const report = console.error;
  console.error = (...args) => {{ errors.push(args.join(" ")); report(...args); }};
  // Self-hosted: the bundle takes its chunks' address from here when it loads.
  window.analytics = {{ _cdn: location.origin }};
</script>
<script src="/analytics-next/bundles/index.js"></script>
<script>
  window.analytics = AnalyticsNext.AnalyticsBrowser.load({{
    writeKey: "{key}", cdnSettings: {settings},
  }});
  analytics.page();
</script>
</head><body>
<h1>Shop</h1>
<button id="signup">Sign up</button>
<script>analytics.trackLink(document.getElementById("signup"), "Sign Up", {{ plan: "pro" }});</script>
</body></html>"#
    )
}

/// The api's count of answers with `code`, or with `status` to Segment's one-message paths.
async fn answers(app: &TestApp, status: &str, code: Option<&str>) -> f64 {
    Scrape::of(&app.client, &app.address)
        .await
        .samples
        .iter()
        .filter(|s| {
            let label = |name: &str| s.labels.get(name).map(String::as_str);
            s.name == "eye_api_requests_total"
                && label("status") == Some(status)
                && match code {
                    Some(code) => label("code") == Some(code),
                    None => matches!(label("route"), Some("/v1/p" | "/v1/t")),
                }
        })
        .map(|s| s.value)
        .sum()
}

async fn analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click(
    backend: Backend,
    test: &str,
) {
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let bundle = sdk::segment_next();
    let app = TestApp::spawn(backend).await;
    let listed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listed_port = listed.local_addr().unwrap().port();
    let other_port = other.local_addr().unwrap().port();
    let key = app
        .publishable_key(&[&format!("http://127.0.0.1:{listed_port}")])
        .await
        .jwt;
    let api_host = format!("{}/v1", app.address.trim_start_matches("http://"));
    let html = page(&api_host, &key);
    serve_site(listed, html.clone(), Some((BUNDLES, bundle.clone())));
    serve_site(other, html, Some((BUNDLES, bundle)));

    // Another origin: the page view and the click are refused (their preflights, as
    // analytics-next asks for one), and nothing is stored.
    browser
        .goto(&format!("http://127.0.0.1:{other_port}/shop"))
        .await;
    browser.click("#signup").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answers(&app, "403", Some("origin_not_allowed")).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "analytics-next on an unlisted origin was never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answers(&app, "200", None).await, 0.0);

    browser
        .goto(&format!("http://127.0.0.1:{listed_port}/shop"))
        .await;
    let stored = app
        .wait_for_events("the page view", |stored| stored.len() == 1)
        .await;
    let view = &stored[0];
    assert_eq!(
        (view.category.as_str(), view.name.as_str()),
        ("page interaction", "pageview")
    );
    let data = data_of(view);
    assert_eq!(
        data["host"],
        format!("127.0.0.1:{listed_port}"),
        "as /eye.js gives it"
    );
    assert_eq!(data["path"], "/shop");
    assert_eq!(
        data["title"], "Shop",
        "the rest of the properties kept: {data}"
    );
    let source: serde_json::Value =
        serde_json::from_str(view.source.as_deref().expect("the message is kept")).unwrap();
    assert_eq!(source["type"], "page");
    assert!(source["anonymousId"].is_string(), "{source}");
    assert!(
        source.get("writeKey").is_none(),
        "the key is not stored: {source}"
    );

    browser.click("#signup").await;
    let stored = app
        .wait_for_events("the click", |stored| stored.len() == 2)
        .await;
    let click = stored.iter().find(|e| e.name == "Sign Up").unwrap();
    assert_eq!(click.category, "track");
    assert_eq!(data_of(click), json!({"plan": "pro"}));
    assert_eq!(
        click.session_id, view.session_id,
        "one session per browser, from analytics-next's anonymous id"
    );
    assert_eq!(app.counts().await, (2, 0), "nothing from the other origin");
    assert_eq!(
        browser.execute("return window.errors").await,
        json!([]),
        "analytics-next reported no error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click_on_sqlite() {
    analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click(
        Backend::Embedded,
        "analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click_on_sqlite",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click_on_postgres_rabbitmq() {
    let test =
        "analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click_on_postgres_rabbitmq";
    if let Some(backend) = Backend::services(test) {
        analytics_next_on_a_listed_origin_sends_a_page_view_and_a_click(backend, test).await;
    }
}
