//! The OpenAPI descriptions each service serves, kept in `docs/` so that a change to an api is a
//! visible diff, and Swagger UI showing them in a real browser under the admin's policy.
//! `EYE_UPDATE_OPENAPI=1 cargo test --test openapi` rewrites the files after a deliberate change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use eye_testkit::browser::Browser;
use eye_testkit::{Backend, TestApp, on_both_backends};
use serde_json::Value;

on_both_backends!(the_served_descriptions_are_the_committed_ones,);

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file)
}

async fn served(app: &TestApp, base: &str) -> String {
    let response = app
        .client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let description: Value = response.json().await.unwrap();
    assert_eq!(description["openapi"], "3.1.0");
    serde_json::to_string_pretty(&description).unwrap() + "\n"
}

async fn the_served_descriptions_are_the_committed_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let update = std::env::var("EYE_UPDATE_OPENAPI").is_ok_and(|v| v == "1");
    for (base, file) in [
        (&app.address, "openapi.json"),
        (&app.admin_address, "openapi-read.json"),
    ] {
        let served = served(&app, base).await;
        let path = docs(file);
        if update {
            std::fs::write(&path, &served).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            served == committed,
            "{base}/openapi.json differs from docs/{file}: if the api changed on purpose, \
             run `EYE_UPDATE_OPENAPI=1 cargo test --test openapi` and commit the diff"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_shows_each_description_in_a_browser_despite_the_admin_policy() {
    let Some(browser) = Browser::start("swagger_ui_shows_each_description").await else {
        return;
    };
    let app = TestApp::spawn(Backend::Embedded).await;
    // The admin's policy, unrelaxed: Swagger UI's page runs only scripts served as files.
    let page = app
        .client
        .get(format!("{}/swagger-ui/", app.admin_address))
        .send()
        .await
        .unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!page.text().await.unwrap().contains("<script>"));
    browser.goto(&format!("{}/login", app.admin_address)).await;
    browser.click("#read-api-docs").await;
    browser.wait_for_url("/swagger-ui/").await;
    for (base, title) in [
        (&app.admin_address, "The Eye read api"),
        (&app.address, "The Eye ingestion api"),
    ] {
        browser.goto(&format!("{base}/swagger-ui/")).await;
        let shown = browser.text(".swagger-ui .info .title").await;
        assert!(shown.contains(title), "{base}/swagger-ui/ shows {shown:?}");
        // Every operation is listed, drawn by the scripts the policy lets run.
        browser.find(".opblock-summary").await;
    }
}
