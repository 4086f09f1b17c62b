//! Event types from JSON Schema files: checked by the workers, reloaded without a restart,
//! and a broken file never takes the types in force away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use eye_testkit::{Backend, Options, TestApp, event, logs, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    a_schema_file_checks_its_type_after_a_reload_and_a_broken_one_leaves_it_in_force,
    the_admin_lists_built_in_types_and_those_of_the_schema_files,
);

const ORDER_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "x-eye-category": "checkout",
  "x-eye-name": "order",
  "type": "object",
  "required": ["total"],
  "properties": {
    "total": {"type": "number", "minimum": 0},
    "items": {"type": "array", "items": {"properties": {"price": {"minimum": 0}}}}
  }
}"#;

fn order(total: i64) -> Value {
    event(
        "checkout",
        "order",
        json!({"total": total, "items": [{"price": 1}, {"price": -5}]}),
        "2021-01-01 00:00:00",
    )
}

/// Posts `body` and waits until it is stored or rejected; whether it was rejected, and the
/// `field code` of each reason if so.
async fn outcome_of(app: &TestApp, body: &Value) -> Option<Vec<String>> {
    let before = app.counts().await;
    assert_eq!(app.post(body).await.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = app.counts().await;
        if now.0 > before.0 {
            return None;
        }
        if now.1 > before.1 {
            let rejected = app.rejected_events().await;
            let reasons = rejected.last().unwrap().reasons.as_array().unwrap().clone();
            return Some(
                reasons
                    .iter()
                    .map(|r| {
                        format!(
                            "{} {}",
                            r["field"].as_str().unwrap(),
                            r["code"].as_str().unwrap()
                        )
                    })
                    .collect(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "the event was neither stored nor rejected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks every worker to reload, as `eye schemas reload` does.
async fn request_reload(app: &TestApp) {
    eye_entity::schema_reloads::request(&app.db).await.unwrap();
}

async fn wait_for_log(needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs::captured().contains(needle) {
        assert!(Instant::now() < deadline, "no log line names {needle}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_schema_file_checks_its_type_after_a_reload_and_a_broken_one_leaves_it_in_force(
    backend: Backend,
) {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(
        backend,
        Options {
            schema_dir: Some(dir.path().to_owned()),
            ..Options::default()
        },
    )
    .await;
    // No schema yet: an unknown type is stored after the common checks.
    assert_eq!(outcome_of(&app, &order(-1)).await, None);

    std::fs::write(dir.path().join("order.json"), ORDER_SCHEMA).unwrap();
    request_reload(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let reasons = loop {
        if let Some(reasons) = outcome_of(&app, &order(-1)).await {
            break reasons;
        }
        assert!(
            Instant::now() < deadline,
            "the schema was never put in force"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sorted(reasons),
        [
            "data.items[1].price schema.minimum",
            "data.total schema.minimum"
        ]
    );

    // A broken file is reported by name and the set in force stays.
    let broken = dir.path().join("refund.json");
    std::fs::write(&broken, r#"{"x-eye-category": "checkout", "x-eye-name": "#).unwrap();
    request_reload(&app).await;
    wait_for_log(&broken.display().to_string()).await;
    assert_eq!(
        sorted(outcome_of(&app, &order(-1)).await.unwrap()),
        [
            "data.items[1].price schema.minimum",
            "data.total schema.minimum"
        ]
    );
    let valid = event(
        "checkout",
        "order",
        json!({"total": 3}),
        "2021-01-01 00:00:00",
    );
    assert_eq!(outcome_of(&app, &valid).await, None);
    assert_refused_line(&broken);
}

/// The log line of a refused file says what is wrong and that the types in force stay.
fn assert_refused_line(file: &Path) {
    let logs = logs::captured();
    let line = logs
        .lines()
        .find(|l| l.contains(&file.display().to_string()))
        .unwrap();
    assert!(line.contains("is not JSON"), "{line}");
    assert!(line.contains("the event types in force stay"), "{line}");
}

fn sorted(mut reasons: Vec<String>) -> Vec<String> {
    reasons.sort();
    reasons
}

async fn the_admin_lists_built_in_types_and_those_of_the_schema_files(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schemas");
    for file in ["checkout-order.json", "pageview.json"] {
        std::fs::copy(examples.join(file), dir.path().join(file)).unwrap();
    }
    let app = TestApp::spawn_with(
        backend,
        Options {
            schema_dir: Some(dir.path().to_owned()),
            ..Options::default()
        },
    )
    .await;
    let mut client = app.admin().await;
    let (status, page) = client.get("/types").await;
    assert_eq!(status, 200, "{page}");
    let rows = |page: &str| -> Vec<String> {
        let table = page.split("id=\"event-types\"").nth(1).unwrap();
        table
            .split("<tr>")
            .skip(2)
            .map(|row| {
                let cells: Vec<String> = row
                    .split("<td>")
                    .skip(1)
                    .map(|c| {
                        let c = c.split("</td>").next().unwrap();
                        c.replace("<code>", "").replace("</code>", "")
                    })
                    .collect();
                cells.join(" | ")
            })
            .collect()
    };
    assert_eq!(
        rows(&page),
        [
            "checkout | order | schema checkout-order.json",
            "form interaction | submit | built-in",
            "page interaction | cta click | built-in",
            "page interaction | pageview | built-in + schema pageview.json",
        ]
    );
    assert!(page.contains(&dir.path().display().to_string()), "{page}");

    let loaded = rows(&page);

    // A broken file: the set this admin loaded whole stays listed as in force, beside it.
    std::fs::write(dir.path().join("refund.json"), "[").unwrap();
    let (_, page) = client.get("/types").await;
    let errors = page.split("id=\"schema-errors\"").nth(1).unwrap();
    assert!(errors.contains("refund.json: is not JSON"), "{errors}");
    assert!(errors.contains("id=\"schema-kept\""), "{errors}");
    assert!(errors.contains("still those in force"), "{errors}");
    assert_eq!(rows(&page), loaded, "the last set loaded whole: {page}");

    // Fixed: the directory as it is, and no notice.
    std::fs::remove_file(dir.path().join("refund.json")).unwrap();
    let (_, page) = client.get("/types").await;
    assert!(!page.contains("id=\"schema-errors\""), "{page}");
    assert_eq!(rows(&page), loaded);
}
