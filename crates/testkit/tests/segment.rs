//! The Segment HTTP API with the real SDKs, unmodified, from their registries: every message
//! they send is stored exactly once, mapped as `docs/INTEGRATIONS.md` says, also when the api
//! answers 503 for a while and when an answer it gave is lost on the way back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use eye_api::segment::map::{MESSAGE_NAMESPACE, SESSION_NAMESPACE};
use eye_entity::events;
use eye_testkit::{Backend, Front, Options, TestApp, on_both_backends, sdk};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    analytics_python_sends_page_track_and_identify_and_each_is_stored_once,
    analytics_node_sends_page_track_and_identify_and_each_is_stored_once,
    messages_posted_by_hand_follow_the_segment_http_api,
);

const PYTHON: &str = r#"
import json, sys
import segment.analytics as analytics

write_key, host, run = sys.argv[1:4]
errors = []
analytics.write_key = write_key
analytics.host = host
analytics.on_error = lambda error, batch: errors.append(repr(error))
anon = "anon-" + run
analytics.page(anonymous_id=anon, name="Pricing",
               properties={"url": "https://shop.example/pricing?plan=pro", "title": "Pricing", "price": 19.99})
analytics.track(user_id="user-" + run, anonymous_id=anon, event="Order Completed", message_id="order-" + run,
                properties={"category": "checkout", "total": 19.99, "items": 3})
analytics.identify(user_id="user-" + run, anonymous_id=anon, traits={"plan": "pro", "email": "a@shop.example"})
for i in range(20):
    analytics.track(anonymous_id=anon, event="Scrolled", properties={"depth": i})
analytics.flush()
analytics.shutdown()
print(json.dumps({"errors": errors}))
"#;

const NODE: &str = r#"
const { Analytics } = require('@segment/analytics-node')
const [writeKey, host, run] = process.argv.slice(2)
const errors = []
const analytics = new Analytics({ writeKey, host, maxRetries: 10, flushInterval: 200 })
analytics.on('error', (e) => errors.push(String((e && e.reason) || (e && e.code) || e)))
const anon = 'anon-' + run
analytics.page({ anonymousId: anon, name: 'Pricing',
  properties: { url: 'https://shop.example/pricing?plan=pro', title: 'Pricing', price: 19.99 } })
analytics.track({ userId: 'user-' + run, anonymousId: anon, event: 'Order Completed', messageId: 'order-' + run,
  properties: { category: 'checkout', total: 19.99, items: 3 } })
analytics.identify({ userId: 'user-' + run, anonymousId: anon, traits: { plan: 'pro', email: 'a@shop.example' } })
for (let i = 0; i < 20; i++) analytics.track({ anonymousId: anon, event: 'Scrolled', properties: { depth: i } })
analytics.closeAndFlush({ timeout: 60000 }).then(() => console.log(JSON.stringify({ errors })))
"#;

/// Each script sends a page, a track with a `messageId` of its own, an identify and 20 more
/// tracks, then flushes.
const SENT: u64 = 23;

struct Sdk {
    library: &'static str,
    command: fn(&Path) -> Command,
}

fn python(script: &Path) -> Command {
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", sdk::segment_python()).arg(script);
    command
}

fn node(script: &Path) -> Command {
    let mut command = Command::new("node");
    command.env("NODE_PATH", sdk::segment_node()).arg(script);
    command
}

async fn analytics_python_sends_page_track_and_identify_and_each_is_stored_once(backend: Backend) {
    let sdk = Sdk {
        library: "analytics-python",
        command: python,
    };
    every_message_is_stored_once(backend, &sdk, PYTHON, "py").await;
}

async fn analytics_node_sends_page_track_and_identify_and_each_is_stored_once(backend: Backend) {
    let sdk = Sdk {
        library: "@segment/analytics-node",
        command: node,
    };
    every_message_is_stored_once(backend, &sdk, NODE, "js").await;
}

async fn every_message_is_stored_once(backend: Backend, sdk: &Sdk, script: &str, extension: &str) {
    let on_services = !backend.is_embedded();
    let app = TestApp::spawn_with(
        backend,
        Options {
            proxy_broker: on_services,
            settings: |s| s.publish_timeout_ms = 500,
            ..Options::default()
        },
    )
    .await;
    let key = app.write_token_for("shop").await;
    // The first answer the api gives with success is lost: the SDK retries a request that
    // was taken, and the message ids keep it from being stored twice.
    let front = Front::start(&app.address, true).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("send.{extension}"));
    std::fs::write(&path, script).unwrap();
    let run = Uuid::new_v4().simple().to_string();
    let mut command = (sdk.command)(&path);
    command.args([key.as_str(), front.url.as_str(), run.as_str()]);
    let started = Utc::now();

    // On RabbitMQ the broker is away first, for two seconds: the api itself answers 503.
    let broker = app.broker_proxy.as_ref();
    if let Some(broker) = broker {
        broker.cut();
    }
    let running = tokio::task::spawn_blocking(move || command.output());
    if let Some(broker) = broker {
        tokio::time::sleep(Duration::from_secs(2)).await;
        broker.restore();
    }
    let output = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the SDK did not finish within two minutes")
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("the script printed no report ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(report["errors"], json!([]), "the SDK reported errors");

    let seen = front.seen();
    assert!(
        seen.iter()
            .any(|p| p.api_status == 200 && p.client_status == 503),
        "no answer was lost: {seen:?}"
    );
    assert!(seen.iter().all(|p| p.path == "/v1/batch"), "{seen:?}");
    if on_services {
        assert!(
            seen.iter().any(|p| p.api_status == 503),
            "the api never answered 503 while the broker was away: {seen:?}"
        );
    }

    app.wait_for_counts(SENT, 0).await;
    let shop = app.application_id_of("shop").await;
    let stored = events::Entity::find()
        .filter(events::Column::ApplicationId.eq(shop))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, SENT);
    let ids: HashSet<Uuid> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids.len() as u64, SENT);

    let anon = format!("anon-{run}");
    let session = Uuid::new_v5(&SESSION_NAMESPACE, format!("anonymousId:{anon}").as_bytes());
    let now = Utc::now();
    for event in &stored {
        assert_eq!(event.session_id, session, "{event:?}");
        assert!(
            event.timestamp >= started - chrono::Duration::seconds(5) && event.timestamp <= now,
            "{event:?}"
        );
        let source: Value = serde_json::from_str(event.source.as_deref().unwrap()).unwrap();
        assert_eq!(source["anonymousId"], anon.as_str());
        assert_eq!(
            source["context"]["library"]["name"], sdk.library,
            "{source}"
        );
        assert!(source.get("writeKey").is_none(), "the key is never stored");
        assert!(
            !source.to_string().contains(&key),
            "the key is never stored"
        );
    }
    let one = |category: &str, name: &str| {
        let found: Vec<_> = stored
            .iter()
            .filter(|e| e.category == category && e.name == name)
            .collect();
        assert_eq!(found.len(), 1, "{category}/{name}: {found:?}");
        found[0]
    };
    let page = one("page interaction", "pageview");
    let data: Value = serde_json::from_str(&page.data).unwrap();
    assert_eq!(data["host"], "shop.example");
    assert_eq!(data["path"], "/pricing");
    assert_eq!(data["title"], "Pricing");
    assert_eq!(data["price"].to_string(), "19.99");

    let order = one("checkout", "Order Completed");
    assert_eq!(
        order.id,
        Uuid::new_v5(&MESSAGE_NAMESPACE, format!("order-{run}").as_bytes())
    );
    let data: Value = serde_json::from_str(&order.data).unwrap();
    assert_eq!(
        data,
        json!({"category": "checkout", "total": 19.99, "items": 3})
    );
    let source: Value = serde_json::from_str(order.source.as_deref().unwrap()).unwrap();
    assert_eq!(source["userId"], format!("user-{run}"));
    assert_eq!(source["event"], "Order Completed");

    let identify = one("identify", "identify");
    let traits: Value = serde_json::from_str(&identify.data).unwrap();
    assert_eq!(traits, json!({"plan": "pro", "email": "a@shop.example"}));

    let scrolled = stored
        .iter()
        .filter(|e| e.category == "track" && e.name == "Scrolled")
        .count();
    assert_eq!(scrolled, 20);
}

async fn messages_posted_by_hand_follow_the_segment_http_api(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.write_token_for("shop").await;
    let basic = |user: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
        )
    };
    let post = |path: &str, body: String| {
        app.client
            .post(format!("{}{path}", app.address))
            .header("content-type", "text/plain")
            .body(body)
    };

    // The key in the body, as text/plain, on a one-letter path; and as the Basic user name.
    let message = json!({"type": "track", "event": "Signed Up", "anonymousId": "a1",
        "writeKey": key, "properties": {"plan": "pro", "seats": 1.50}});
    let answer = post("/v1/t", message.to_string()).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        answer.json::<Value>().await.unwrap(),
        json!({"success": true})
    );
    let screen = json!({"name": "Home", "userId": "u1", "properties": {"from": "push"}});
    let answer = post("/v1/screen", screen.to_string())
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    // Refusals keep their problem codes, so SDKs drop a 400 and retry a 5xx.
    let refused = post(
        "/v1/batch",
        json!({"batch": [{"type": "track"}, [1, {"a": 2}], "text"]}).to_string(),
    )
    .header("authorization", basic(&key))
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_events");
    let fields: HashSet<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        HashSet::from([
            "batch[0].event",
            "batch[0].anonymousId",
            "batch[1]",
            "batch[2]"
        ])
    );
    // A body that is neither JSON nor text is refused.
    let form = app
        .client
        .post(format!("{}/v1/track", app.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(message.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let no_key = post(
        "/v1/batch",
        json!({"batch": [message]}).to_string().replace(&key, ""),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let wrong_key = post("/v1/track", message.to_string())
        .header("authorization", basic("not-a-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);
    let big = json!({"type": "track", "event": "e", "anonymousId": "a",
        "properties": {"s": "x".repeat(33 * 1024)}});
    let too_big = post("/v1/batch", json!({"batch": [big]}).to_string())
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A page without any url becomes an event the worker refuses, kept with its reasons.
    let bare_page = json!({"type": "page", "anonymousId": "a2", "messageId": "p-1"});
    let answer = post("/v1/batch", json!({"batch": [bare_page]}).to_string())
        .header("authorization", basic(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    app.wait_for_counts(2, 1).await;
    let stored = app.stored_events().await;
    let signed_up = stored.iter().find(|e| e.name == "Signed Up").unwrap();
    assert_eq!(signed_up.category, "track");
    assert_eq!(
        serde_json::from_str::<Value>(&signed_up.data).unwrap(),
        json!({"plan": "pro", "seats": 1.50})
    );
    let source: Value = serde_json::from_str(signed_up.source.as_deref().unwrap()).unwrap();
    assert!(source.get("writeKey").is_none());
    let home = stored.iter().find(|e| e.category == "screen").unwrap();
    assert_eq!(home.name, "Home");
    let source: Value = serde_json::from_str(home.source.as_deref().unwrap()).unwrap();
    assert_eq!(source["type"], "screen", "the implied type is kept");
    let rejected = app.rejected_events().await;
    assert_eq!(rejected[0].id, Uuid::new_v5(&MESSAGE_NAMESPACE, b"p-1"));
    let reasons = rejected[0].reasons.to_string();
    assert!(reasons.contains("data.host"), "{reasons}");
    assert!(
        rejected[0].payload.contains(r#""anonymousId":"a2""#),
        "the source travels with a rejected event: {}",
        rejected[0].payload
    );
}
