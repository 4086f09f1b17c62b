//! A 202 is a promise: every accepted event ends stored, rejected with a reason, or kept as a
//! dead letter, and stays its own application's, whatever its neighbours hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use eye_core::queue::{BatchLimit, Consumer};
use eye_testkit::{Backend, Options, TestApp, event, on_both_backends, pageview};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    a_poisoned_event_costs_only_itself_not_another_applications_events,
    an_event_the_database_refuses_is_kept_as_unstorable_and_its_neighbours_stored,
    two_applications_keep_their_own_events_and_sessions_under_the_same_ids,
    numbers_and_escapes_are_kept_exactly_as_sent,
    an_envelope_no_worker_can_read_is_kept_as_a_dead_letter_beside_good_ones,
    a_thousand_bad_strings_give_fifty_reasons_and_a_count,
    a_lone_surrogate_is_rejected_and_kept_exactly_as_sent,
);

const GOOD_EVENTS: usize = 40;

/// 40 good events of `shop` and one poisoned event of `blog`, posted at once.
async fn post_poisoned_among_good(app: &TestApp) -> Uuid {
    let shop = app.write_token_for("shop").await;
    let blog = app.write_token_for("blog").await;
    let poisoned_id = Uuid::now_v7();
    let mut poisoned = pageview("/poison", "-9999-01-01 00:00:00");
    poisoned["id"] = json!(poisoned_id);
    let posts = (0..GOOD_EVENTS).map(|i| {
        let token = shop.clone();
        async move {
            app.post_as(&token, &pageview(format!("/{i}"), "2021-01-01 00:00:00"))
                .await
                .status()
        }
    });
    let (good, bad) = tokio::join!(
        futures_util::future::join_all(posts),
        app.post_as(&blog, &poisoned)
    );
    assert!(good.iter().all(|s| *s == 202), "{good:?}");
    assert_eq!(
        bad.status(),
        202,
        "the shape is fine; its meaning is the worker's"
    );
    poisoned_id
}

async fn a_poisoned_event_costs_only_itself_not_another_applications_events(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let poisoned = post_poisoned_among_good(&app).await;
    app.wait_for_counts(GOOD_EVENTS as u64, 1).await;
    let rejected = &app.rejected_events().await[0];
    assert_eq!(rejected.id, poisoned);
    assert_eq!(rejected.application_id, app.application_id_of("blog").await);
    assert_eq!(rejected.reasons[0]["code"], "timestamp_too_old");
    let payload: Value = serde_json::from_str(&rejected.payload).unwrap();
    assert_eq!(payload["data"], json!({"host": "h", "path": "/poison"}));
    let shop = app.application_id_of("shop").await;
    assert!(
        app.stored_events()
            .await
            .iter()
            .all(|e| e.application_id == shop)
    );
    assert!(app.dead_letters().await.is_empty());
}

/// With the window opened to year -9999, PostgreSQL itself refuses the poisoned timestamp:
/// the worker splits the batch down to that event and keeps it as `unstorable`. SQLite keeps
/// timestamps as text and stores it.
async fn an_event_the_database_refuses_is_kept_as_unstorable_and_its_neighbours_stored(
    backend: Backend,
) {
    let embedded = backend.is_embedded();
    let app = TestApp::spawn_with(
        backend,
        Options {
            settings: |s| s.event_not_before = DateTime::<Utc>::MIN_UTC,
            ..Options::default()
        },
    )
    .await;
    let poisoned = post_poisoned_among_good(&app).await;
    if embedded {
        app.wait_for_counts(GOOD_EVENTS as u64 + 1, 0).await;
        return;
    }
    app.wait_for_counts(GOOD_EVENTS as u64, 1).await;
    let rejected = &app.rejected_events().await[0];
    assert_eq!(rejected.id, poisoned);
    assert_eq!(rejected.reasons[0]["code"], "unstorable");
    let message = rejected.reasons[0]["message"].as_str().unwrap();
    assert!(
        message.contains("22008"),
        "the database's own words: {message}"
    );
    assert!(
        rejected.payload.contains(r#""path":"/poison""#),
        "{}",
        rejected.payload
    );
    assert!(app.dead_letters().await.is_empty());
}

async fn two_applications_keep_their_own_events_and_sessions_under_the_same_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, session) = (Uuid::now_v7(), Uuid::new_v4());
    let post = |token: String, path: &'static str, at: &'static str| {
        let app = &app;
        async move {
            let mut body = pageview(path, at);
            body["id"] = json!(id);
            body["session_id"] = json!(session);
            app.post_as(&token, &body).await.status()
        }
    };
    let shop = app.write_token_for("shop").await;
    let blog = app.write_token_for("blog").await;
    let (a, b) = tokio::join!(
        post(shop, "/shop", "2021-01-01 09:00:00"),
        post(blog, "/blog", "2021-01-02 09:00:00")
    );
    assert_eq!((a.as_u16(), b.as_u16()), (202, 202));
    app.wait_for_counts(2, 0).await;
    let (shop, blog) = (
        app.application_id_of("shop").await,
        app.application_id_of("blog").await,
    );
    let events = app.stored_events().await;
    let path_of = |application| {
        events
            .iter()
            .find(|e| e.application_id == application && e.id == id)
            .map(|e| eye_testkit::data_of(e)["path"].clone())
    };
    assert_eq!(path_of(shop), Some(json!("/shop")));
    assert_eq!(path_of(blog), Some(json!("/blog")));
    use sea_orm::EntityTrait;
    let sessions = eye_entity::sessions::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 2, "one session each: {sessions:?}");
    for s in &sessions {
        assert_eq!((s.id, s.event_count), (session, 1));
        assert_eq!(s.first_seen, s.last_seen);
    }
}

async fn numbers_and_escapes_are_kept_exactly_as_sent(backend: Backend) {
    let embedded = backend.is_embedded();
    let app = TestApp::spawn(backend).await;
    let id = Uuid::now_v7();
    let data = r#"{"host":"h","path":"/","big":123456789012345678901234567890,"long":0.1000000000000000055511151231257827,"tiny":1e-400,"huge":1e400,"quote":"a\"b\\c\u00e9"}"#;
    let body = format!(
        r#"{{"id":"{id}","session_id":"{}","category":"page interaction","name":"pageview","data":{data},"timestamp":"2021-01-01 00:00:00"}}"#,
        Uuid::new_v4()
    );
    let response = app.post_text(&body).await;
    assert_eq!(response.status(), 202);
    app.wait_for_counts(1, 0).await;
    let stored = app.data_text(app.application_id().await, id).await;
    let compact: String = stored.chars().filter(|c| *c != ' ').collect();
    for exact in [
        r#""big":123456789012345678901234567890"#,
        r#""long":0.1000000000000000055511151231257827"#,
    ] {
        assert!(compact.contains(exact), "{exact} in {stored}");
    }
    if embedded {
        // SQLite keeps the text exactly as sent.
        assert!(stored.contains(data), "{stored}");
    } else {
        // PostgreSQL renders numbers in plain notation; the values are the same.
        let tiny = format!("0.{}1", "0".repeat(399));
        let huge = format!("1{}", "0".repeat(400));
        assert!(compact.contains(&format!(r#""tiny":{tiny}"#)), "{stored}");
        assert!(compact.contains(&format!(r#""huge":{huge}"#)), "{stored}");
        assert!(compact.contains(r#""quote":"a\"b\\cé""#), "{stored}");
    }

    // The read api gives the same values back, compared as decimals.
    let reader = app
        .token_with(
            &[eye_core::token::Scope::EventsRead],
            chrono::Duration::hours(1),
        )
        .await
        .jwt;
    let text = app
        .client
        .get(format!("{}/api/v1/events", app.admin_address))
        .bearer_auth(reader)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (key, sent) in [
        ("big", "123456789012345678901234567890"),
        ("long", "0.1000000000000000055511151231257827"),
        ("tiny", "1e-400"),
        ("huge", "1e400"),
    ] {
        let start = text
            .find(&format!(r#""{key}":"#))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            + key.len()
            + 3;
        let read = text[start..].trim_start().split([',', '}']).next().unwrap();
        assert_eq!(decimal(read), decimal(sent), "{key}: {read} in {text}");
    }
}

/// A decimal as (sign, significant digits, position of the decimal point), so `1e-400` and
/// `0.000…1` compare equal and nothing goes through a float.
fn decimal(text: &str) -> (bool, String, i64) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap()),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0').to_owned();
    let point = int.len() as i64 + exponent - leading as i64;
    (negative, significant, point)
}

async fn an_envelope_no_worker_can_read_is_kept_as_a_dead_letter_beside_good_ones(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        app.post(&pageview("/", "2021-01-01 00:00:00"))
            .await
            .status(),
        202
    );
    let patience = std::time::Duration::from_secs(30);
    let good = tokio::time::timeout(patience, async {
        let mut consumer = app.queue.consumer(&app.settings);
        let mut batch = Vec::new();
        while batch.is_empty() {
            batch = match &mut consumer {
                Consumer::Memory(_) => consumer.ready_batch(BatchLimit::messages(1)),
                _ => consumer
                    .next_batch(BatchLimit::messages(1), std::time::Duration::ZERO)
                    .await
                    .unwrap(),
            };
        }
        let body = String::from_utf8(batch[0].body.clone()).unwrap();
        consumer.reset();
        body
    })
    .await
    .expect("the posted message reached the queue");
    let newer = good.replacen(r#""v":1"#, r#""v":2"#, 1);
    let message = format!("[{good},{newer}]");
    app.queue
        .publisher(&app.settings)
        .unwrap()
        .publish(message.as_bytes())
        .await
        .unwrap();
    let mut worker = app.worker();
    tokio::time::timeout(patience, async {
        let mut outcome = eye_worker::BatchOutcome::default();
        while outcome.stored + outcome.duplicates == 0 {
            outcome = worker.process_next_batch().await.unwrap();
        }
    })
    .await
    .expect("the good envelope beside the unknown one was stored");
    assert_eq!(app.counts().await, (1, 0));
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1, "the v2 envelope alone");
    assert_eq!(dead[0].body, newer.as_bytes());
    assert!(dead[0].reason.contains("version 2"), "{}", dead[0].reason);
}

async fn a_thousand_bad_strings_give_fifty_reasons_and_a_count(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad: serde_json::Map<String, Value> = (0..1500)
        .map(|i| (format!("k{i}"), json!("x\u{0}")))
        .collect();
    let mut data = json!({"host": "h", "path": "/"});
    data.as_object_mut().unwrap().extend(bad);
    let response = app
        .post(&event(
            "page interaction",
            "pageview",
            data,
            "2021-01-01 00:00:00",
        ))
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_counts(0, 1).await;
    let reasons = app.rejected_events().await[0].reasons.clone();
    let reasons = reasons.as_array().unwrap();
    assert_eq!(reasons.len(), 51);
    assert_eq!(reasons[50]["code"], "more_reasons");
    assert!(
        reasons[50]["message"]
            .as_str()
            .unwrap()
            .starts_with("1450 more")
    );
}

async fn a_lone_surrogate_is_rejected_and_kept_exactly_as_sent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let deep = "{\"k\":".repeat(100) + "\"x\"" + &"}".repeat(100);
    let body = format!(
        r#"{{"session_id":"{}","category":"page interaction","name":"pageview","data":{{"host":"h","path":"/","s":"a\ud800b","n":1e400,"deep":{deep},"nul":"\u0000"}},"timestamp":"2021-01-01 00:00:00"}}"#,
        Uuid::new_v4()
    );
    let response = app.post_text(&body).await;
    assert_eq!(response.status(), 202);
    app.wait_for_counts(0, 1).await;
    let rejected = &app.rejected_events().await[0];
    let codes: Vec<&str> = rejected
        .reasons
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"lone_surrogate"), "{codes:?}");
    assert!(codes.contains(&"invalid_character"), "{codes:?}");
    for exact in [r#""s":"a\ud800b""#, r#""n":1e400"#, r#""nul":"\u0000""#] {
        assert!(
            rejected.payload.contains(exact),
            "{exact} in {}",
            rejected.payload
        );
    }
}
