//! Dead letters as operators meet them: a message no worker can read is kept, shown, and after
//! a fix replayed into storage exactly once, or discarded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use eye_entity::dead::{self, Selection};
use eye_entity::dead_letters;
use eye_testkit::{Backend, TestApp, on_both_backends, on_services};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    a_message_with_an_unknown_envelope_version_is_shown_on_the_dead_letters_page,
    a_repaired_dead_letter_replayed_from_the_admin_is_stored_once,
    a_dead_letter_discarded_from_the_admin_is_gone,
    dead_letter_forms_without_the_sessions_csrf_token_are_refused,
    a_replay_keeps_a_message_that_comes_back_dead_or_cannot_be_published,
    replaying_all_takes_the_oldest_first_and_only_what_was_there,
    an_admin_without_a_queue_lists_and_discards_but_does_not_replay,
    the_cli_replay_publishes_through_rabbitmq_or_points_to_the_admin,
);

on_services!(a_compressed_message_that_does_not_decode_is_a_dead_letter_and_costs_no_other);

/// An envelope of version `v` holding `events` pageviews of the test application, with ids.
async fn envelope(app: &TestApp, v: u64, events: usize) -> (Value, Vec<Uuid>) {
    let ids: Vec<Uuid> = (0..events).map(|_| Uuid::now_v7()).collect();
    let session = Uuid::new_v4();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "session_id": session,
                "category": "page interaction",
                "name": "pageview",
                "data": {"host": "h", "path": "/<script>alert(1)</script>"},
                "timestamp": "2021-01-01T00:00:00Z",
            })
        })
        .collect();
    let envelope = json!({
        "v": v,
        "application_id": app.application_id().await,
        "token_id": Uuid::new_v4(),
        "received_at": chrono::Utc::now(),
        "events": events,
    });
    (envelope, ids)
}

/// Publishes raw bytes to the queue, as an api of another version would.
async fn publish(app: &TestApp, body: &Value) {
    let publisher = app.queue.publisher(&app.settings).unwrap();
    publisher
        .publish(&serde_json::to_vec(body).unwrap())
        .await
        .unwrap();
}

fn number(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page.find(&marker).unwrap() + marker.len();
    page[start..start + page[start..].find('<').unwrap()].to_owned()
}

async fn a_message_with_an_unknown_envelope_version_is_shown_on_the_dead_letters_page(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    // Enough events that RabbitMQ carries the message compressed.
    let (body, _) = envelope(&app, 2, 12).await;
    publish(&app, &body).await;
    let rows = app.wait_for_dead_letters(1).await;
    let row = &rows[0];
    assert_eq!(row.reason, "envelope version 2 is not supported");
    assert_eq!(
        row.body,
        serde_json::to_vec(&body).unwrap(),
        "kept as it was published"
    );
    assert_eq!(row.count, 1);
    assert_eq!(app.counts().await, (0, 0), "nothing of it is stored");

    let mut client = app.admin().await;
    let (_, dashboard) = client.get("/").await;
    assert_eq!(number(&dashboard, "total-dead"), "1");
    assert!(dashboard.contains("<a href=\"/dead-letters\">Dead letters</a>"));

    let (status, list) = client.get("/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains(&format!("<tr id=\"d-{}\">", row.id)),
        "{list}"
    );
    assert!(list.contains("envelope version 2 is not supported"));
    assert!(list.contains(&format!("{} bytes", row.body.len())));

    let (status, detail) = client.get(&format!("/dead-letters/{}", row.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(detail.contains("envelope version 2 is not supported"));
    assert!(
        detail.contains("&quot;v&quot;:2") || detail.contains("&#34;v&#34;:2"),
        "{detail}"
    );
    assert!(
        !detail.contains("<script>alert(1)</script>"),
        "the body is shown escaped"
    );
    assert!(detail.contains("alert(1)"));
    assert!(detail.contains("id=\"dead-headers\""));

    let (status, _) = client
        .get(&format!("/dead-letters/{}", Uuid::new_v4()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn a_repaired_dead_letter_replayed_from_the_admin_is_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut body, ids) = envelope(&app, 2, 3).await;
    publish(&app, &body).await;
    let row = app.wait_for_dead_letters(1).await.remove(0);

    // An operator repairs the message: the version this build reads.
    body["v"] = json!(1);
    let repaired = serde_json::to_vec(&body).unwrap();
    let mut active: dead_letters::ActiveModel = row.clone().into();
    active.body = Set(repaired.clone());
    active.update(&app.db).await.unwrap();

    let mut client = app.admin().await;
    client.get(&format!("/dead-letters/{}", row.id)).await;
    let response = client
        .post(&format!("/dead-letters/{}/replay", row.id), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        response.headers()["location"],
        "/dead-letters?replayed=1&dead_again=0"
    );
    app.wait_for_counts(3, 0).await;
    assert!(
        app.dead_letters().await.is_empty(),
        "the replayed row is gone"
    );
    let (_, list) = client.get("/dead-letters?replayed=1&dead_again=0").await;
    assert!(list.contains("1 replayed"), "{list}");
    assert!(list.contains("id=\"no-dead-letters\""));

    // The same message dead and replayed again (here: put back by hand) stores nothing twice.
    dead_letters::ActiveModel {
        id: Set(Uuid::now_v7()),
        digest: Set("again".into()),
        body: Set(repaired),
        reason: Set("put back for the test".into()),
        headers: Set("{}".into()),
        first_dead_at: Set(chrono::Utc::now()),
        last_dead_at: Set(chrono::Utc::now()),
        count: Set(1),
    }
    .insert(&app.db)
    .await
    .unwrap();
    client.get("/dead-letters").await;
    let response = client.post("/dead-letters/replay", &[]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    // A later request is stored only after the replayed message was handled.
    assert_eq!(
        app.post(&eye_testkit::pageview("/after", "2021-01-01 00:00:01"))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_counts(4, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.counts().await, (4, 0), "each event is stored once");
    let stored: Vec<Uuid> = app.stored_events().await.iter().map(|e| e.id).collect();
    for id in &ids {
        assert_eq!(stored.iter().filter(|s| *s == id).count(), 1);
    }
    let session = body["events"][0]["session_id"].as_str().unwrap();
    let session = app.session(session.parse().unwrap()).await.unwrap();
    assert_eq!(session.event_count, 3, "the session counts each event once");
    assert!(app.dead_letters().await.is_empty());
}

async fn a_dead_letter_discarded_from_the_admin_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    publish(&app, &json!({"v": 7})).await;
    let row = app.wait_for_dead_letters(1).await.remove(0);

    let mut client = app.admin().await;
    client.get(&format!("/dead-letters/{}", row.id)).await;
    let response = client
        .post(&format!("/dead-letters/{}/discard", row.id), &[])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(app.dead_letters().await.is_empty());
    let (_, dashboard) = client.get("/").await;
    assert_eq!(number(&dashboard, "total-dead"), "0");

    let again = client
        .post(&format!("/dead-letters/{}/discard", row.id), &[])
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let replay = client
        .post(&format!("/dead-letters/{}/replay", row.id), &[])
        .await;
    assert_eq!(replay.status(), StatusCode::NOT_FOUND);
}

async fn dead_letter_forms_without_the_sessions_csrf_token_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut body, _) = envelope(&app, 2, 1).await;
    publish(&app, &body).await;
    let row = app.wait_for_dead_letters(1).await.remove(0);
    body["v"] = json!(1);
    let mut active: dead_letters::ActiveModel = row.clone().into();
    active.body = Set(serde_json::to_vec(&body).unwrap());
    active.update(&app.db).await.unwrap();

    let mut client = app.admin().await;
    client.csrf = "0".repeat(64);
    for path in [
        format!("/dead-letters/{}/replay", row.id),
        format!("/dead-letters/{}/discard", row.id),
        "/dead-letters/replay".to_owned(),
    ] {
        let response = client.post(&path, &[]).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.dead_letters().await.len(), 1, "the row is kept");
    assert_eq!(app.counts().await, (0, 0), "nothing was replayed");
}

async fn a_replay_keeps_a_message_that_comes_back_dead_or_cannot_be_published(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    publish(&app, &json!({"v": 9})).await;
    let row = app.wait_for_dead_letters(1).await.remove(0);

    // Dead-lettered again between the publish and the delete: the row must stay.
    let done = dead::replay(
        &app.db,
        &Selection::Ids(vec![row.id]),
        async |_: &[u8]| {
            let mut active: dead_letters::ActiveModel =
                dead::find(&app.db, row.id).await.unwrap().unwrap().into();
            active.count = Set(row.count + 1);
            active.update(&app.db).await.unwrap();
            Ok::<_, String>(())
        },
    )
    .await
    .unwrap();
    assert_eq!(done.dead_again, [row.id]);
    assert!(done.replayed.is_empty());
    assert_eq!(app.dead_letters().await.len(), 1);

    // A publish the queue did not confirm removes nothing and stops the replay.
    let done = dead::replay(&app.db, &Selection::All, async |_: &[u8]| {
        Err::<(), _>("the queue is full")
    })
    .await
    .unwrap();
    assert_eq!(done.failed, Some((row.id, "the queue is full")));
    assert!(done.replayed.is_empty());
    assert_eq!(app.dead_letters().await.len(), 1);

    let unknown = Uuid::new_v4();
    let done = dead::replay(
        &app.db,
        &Selection::Ids(vec![unknown]),
        async |_: &[u8]| Ok::<_, String>(()),
    )
    .await
    .unwrap();
    assert_eq!(done.unknown, [unknown]);
    assert_eq!(
        dead_letters::Entity::find().count(&app.db).await.unwrap(),
        1
    );
}

async fn the_cli_replay_publishes_through_rabbitmq_or_points_to_the_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (mut body, _) = envelope(&app, 2, 2).await;
    publish(&app, &body).await;
    let row = app.wait_for_dead_letters(1).await.remove(0);
    body["v"] = json!(1);
    let mut active: dead_letters::ActiveModel = row.into();
    active.body = Set(serde_json::to_vec(&body).unwrap());
    active.update(&app.db).await.unwrap();

    let replayed = eye_cli::dead::replay(&app.settings, &app.db, Selection::All).await;
    if app.settings.amqp_url.is_none() {
        let message = replayed.unwrap_err().to_string();
        assert!(message.contains("admin panel"), "{message}");
        assert_eq!(app.dead_letters().await.len(), 1, "nothing was done");
        return;
    }
    replayed.unwrap();
    app.wait_for_counts(2, 0).await;
    assert!(app.dead_letters().await.is_empty());
}

/// A dead letter put straight into the table, dead at `at`.
async fn put_dead(app: &TestApp, body: &[u8], at: chrono::DateTime<chrono::Utc>) -> Uuid {
    let id = Uuid::now_v7();
    dead_letters::ActiveModel {
        id: Set(id),
        digest: Set(id.simple().to_string()),
        body: Set(body.to_vec()),
        reason: Set("test".into()),
        headers: Set("{}".into()),
        first_dead_at: Set(at),
        last_dead_at: Set(at),
        count: Set(1),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

async fn replaying_all_takes_the_oldest_first_and_only_what_was_there(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        eye_testkit::Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let first = put_dead(&app, b"first", an_hour_ago).await;
    let second = put_dead(&app, b"second", an_hour_ago).await;
    let third = put_dead(&app, b"third", an_hour_ago).await;

    let mut published = Vec::new();
    let done = dead::replay(&app.db, &Selection::Oldest(1), async |body: &[u8]| {
        published.push(body.to_vec());
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(done.replayed, [first]);
    assert_eq!(published, [b"first".to_vec()]);

    // Each message comes straight back dead as a new row: the replay still ends.
    let done = dead::replay(&app.db, &Selection::All, async |body: &[u8]| {
        put_dead(&app, body, chrono::Utc::now()).await;
        Ok::<_, String>(())
    })
    .await
    .unwrap();
    assert_eq!(done.replayed, [second, third]);
    let left: Vec<Vec<u8>> = app
        .dead_letters()
        .await
        .into_iter()
        .map(|d| d.body)
        .collect();
    assert_eq!(left.len(), 2, "the two that came back");
    assert!(left.contains(&b"second".to_vec()) && left.contains(&b"third".to_vec()));
}

async fn an_admin_without_a_queue_lists_and_discards_but_does_not_replay(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = put_dead(&app, b"{\"v\":3}", chrono::Utc::now()).await;
    // `eye admin` without amqp_url: no queue probe, no publisher.
    let admin = eye_admin::Admin::build(
        &app.settings,
        app.db.clone(),
        app.db.clone(),
        eye_admin::QueueProbe::None,
        eye_admin::Publishers::default(),
        eye_core::metrics::Registry::disabled(),
    )
    .await
    .unwrap();
    let address = format!("http://127.0.0.1:{}", admin.port());
    let handle = admin.handle();
    tokio::spawn(admin.run_until_stopped());
    eye_admin::create_user(
        &app.db,
        eye_testkit::ADMIN_USER,
        eye_testkit::ADMIN_PASSWORD,
    )
    .await
    .unwrap();
    let mut client = eye_testkit::AdminClient::new(&address);
    client
        .login(eye_testkit::ADMIN_USER, eye_testkit::ADMIN_PASSWORD)
        .await;

    let (_, list) = client.get("/dead-letters").await;
    assert!(list.contains("id=\"no-replay\""), "{list}");
    assert!(!list.contains("id=\"replay-all\""));
    let (_, detail) = client.get(&format!("/dead-letters/{id}")).await;
    assert!(!detail.contains("id=\"replay\""));
    let refused = client
        .post(&format!("/dead-letters/{id}/replay"), &[])
        .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.text().await.unwrap().contains("replay_failed"));
    assert_eq!(app.dead_letters().await.len(), 1, "kept");
    let discarded = client
        .post(&format!("/dead-letters/{id}/discard"), &[])
        .await;
    assert_eq!(discarded.status(), StatusCode::SEE_OTHER);
    assert!(app.dead_letters().await.is_empty());
    handle.stop(false).await;
}

/// A message marked as compressed whose bytes do not decode (a broken publisher, a bit flip)
/// is kept as it came, with why; the message after it is stored as usual.
async fn a_compressed_message_that_does_not_decode_is_a_dead_letter_and_costs_no_other(
    backend: Backend,
) {
    use lapin::options::BasicPublishOptions;
    use lapin::{BasicProperties, Confirmation};
    let app = TestApp::spawn(backend).await;
    let eye_core::queue::Topology {
        exchange,
        routing_key,
        ..
    } = eye_core::queue::Topology::new(&app.settings.queue_prefix);
    let eye_cli::stack::Queue::Amqp(url) = &app.queue else {
        unreachable!("services only")
    };
    let connection = lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let (good, ids) = envelope(&app, 1, 12).await;
    let good = serde_json::to_vec(&good).unwrap();
    let mut broken = eye_core::queue::codec::encode(&good).0.into_owned();
    broken.truncate(broken.len() / 2);
    for (body, encoding) in [
        (broken.clone(), eye_core::queue::codec::LZ4),
        (good.clone(), "br"),
    ] {
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_encoding(encoding.into()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(matches!(confirm, Confirmation::Ack(None)), "{confirm:?}");
    }
    publish(&app, &serde_json::from_slice(&good).unwrap()).await;

    let rows = app.wait_for_dead_letters(2).await;
    let mut reasons: Vec<_> = rows.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort_unstable();
    assert!(
        reasons[0].starts_with("undecodable message: cannot decompress (x-eye-lz4-block)"),
        "{}",
        reasons[0]
    );
    assert_eq!(
        reasons[1],
        r#"undecodable message: unknown content-encoding "br""#
    );
    let cut = rows
        .iter()
        .find(|r| r.reason.contains("decompress"))
        .unwrap();
    assert_eq!(cut.body, broken, "kept with its bytes as they came");
    let stored = app
        .wait_for_events("the good message's events", |e| e.len() == ids.len())
        .await;
    assert!(stored.iter().all(|e| ids.contains(&e.id)));
    connection.close(0, "done".into()).await.ok();
}
