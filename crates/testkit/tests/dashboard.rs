//! The dashboard as an operator reads it: ingest rate, queue, worker lag, rejections, dead
//! letters, rate-limited requests and each application's last event, on both backends. Each
//! number is read from the element that shows it, by id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, DurationRound, Utc};
use eye_testkit::{Backend, Options, Seed, TestApp, on_both_backends};
use reqwest::StatusCode;
use sea_orm::{EntityTrait, Set};
use serde_json::json;
use uuid::Uuid;

on_both_backends!(
    the_dashboard_shows_each_number_an_operator_watches,
    an_application_silent_for_long_is_flagged_and_its_name_escaped,
    worker_lag_is_the_age_of_the_newest_stored_event_while_messages_wait,
);

/// The opening tag of the element with this id.
fn tag<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!(" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {page}"));
    let start = page[..at].rfind('<').unwrap();
    let end = at + page[at..].find('>').unwrap();
    &page[start..=end]
}

/// The value of an attribute of the element with this id.
fn attr(page: &str, id: &str, name: &str) -> String {
    let tag = tag(page, id);
    let marker = format!(" {name}=\"");
    let start = tag
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + marker.len();
    tag[start..start + tag[start..].find('"').unwrap()].to_owned()
}

/// The text of the element with this id, up to its first child or end.
fn text(page: &str, id: &str) -> String {
    let tag = tag(page, id);
    let start = page.find(tag).unwrap() + tag.len();
    page[start..start + page[start..].find('<').unwrap()].to_owned()
}

/// An application's row of the activity table.
fn row(page: &str, application: Uuid) -> &str {
    let tag = tag(page, &format!("app-{application}"));
    let start = page.find(tag).unwrap();
    &page[start..start + page[start..].find("</tr>").unwrap()]
}

async fn rate_limited(app: &TestApp, application: Uuid, minute: DateTime<Utc>, requests: i64) {
    eye_entity::rate_limited::Entity::insert(eye_entity::rate_limited::ActiveModel {
        application_id: Set(application),
        minute: Set(minute),
        requests: Set(requests),
        events: Set(requests * 10),
    })
    .exec(&app.db)
    .await
    .unwrap();
}

async fn the_dashboard_shows_each_number_an_operator_watches(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let mut batch: Vec<_> = (0..5)
        .map(|i| eye_testkit::pageview(format!("/{i}"), &now))
        .collect();
    batch.push(eye_testkit::pageview("/", "2099-01-01 00:00:00"));
    for _ in 0..2 {
        batch.push(eye_testkit::event(
            "page interaction",
            "cta click",
            json!({"host": "h", "path": "/"}),
            &now,
        ));
    }
    assert_eq!(
        app.post(&serde_json::Value::Array(batch)).await.status(),
        StatusCode::ACCEPTED
    );
    app.wait_for_counts(5, 3).await;

    // A message of an envelope version no worker reads becomes a dead letter.
    let envelope = json!({
        "v": 2, "application_id": app.application_id().await, "token_id": Uuid::new_v4(),
        "received_at": Utc::now(), "events": [],
    });
    let publisher = app.queue.publisher(&app.settings).unwrap();
    publisher
        .publish(&serde_json::to_vec(&envelope).unwrap())
        .await
        .unwrap();
    app.wait_for_dead_letters(1).await;

    // Refused requests: this minute and 10 minutes ago count, two hours ago does not.
    let minute = Utc::now()
        .duration_trunc(chrono::Duration::minutes(1))
        .unwrap();
    let ours = app.application_id().await;
    let other = app.application_named("second").await;
    rate_limited(&app, ours, minute, 3).await;
    rate_limited(&app, ours, minute - chrono::Duration::minutes(10), 2).await;
    rate_limited(&app, ours, minute - chrono::Duration::hours(2), 100).await;
    rate_limited(&app, other, minute - chrono::Duration::minutes(30), 1).await;

    let mut client = app.admin().await;
    let (status, page) = client.get("/").await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(text(&page, "ingest-1m"), "5");
    assert_eq!(attr(&page, "ingest-15m", "data-count"), "5");
    assert_eq!(text(&page, "ingest-15m"), "0.3", "5 events over 15 minutes");
    assert_eq!(text(&page, "queue-depth"), "0");
    assert_eq!(text(&page, "queue-consumers"), "1");
    assert_eq!(text(&page, "worker-lag"), "caught up");
    assert_eq!(attr(&page, "worker-lag", "data-seconds"), "caught-up");
    assert!(
        attr(&page, "tile-lag", "title").contains("received_at of the newest stored event"),
        "the page says how lag is computed"
    );

    assert_eq!(text(&page, "total-dead"), "1");
    let dead_tile = &page[page.find("id=\"tile-dead\"").unwrap()..];
    assert!(
        dead_tile.starts_with("id=\"tile-dead\"><a href=\"/dead-letters\">"),
        "the dead letters count links to their page"
    );

    assert_eq!(text(&page, "rejected-hour"), "3");
    assert_eq!(text(&page, "rejected-of-received"), "3 of 8");
    assert_eq!(attr(&page, "reason-timestamp_in_future", "data-count"), "1");
    assert_eq!(attr(&page, "reason-required", "data-count"), "2");
    let future = tag(&page, "reason-timestamp_in_future");
    let future = &page[page.find(future).unwrap()..];
    assert!(
        future[..future.find("</tr>").unwrap()].ends_with("<td>12.50%</td>"),
        "1 of the 8 received: {future}"
    );

    assert_eq!(text(&page, "rate-limited-requests"), "6");
    assert_eq!(attr(&page, "rate-limited-requests", "data-events"), "60");
    let ours_row = row(&page, ours);
    assert_eq!(
        attr(&page, &format!("app-{ours}"), "data-limited-requests"),
        "5"
    );
    assert!(
        ours_row.contains("<strong>5</strong> (50 events)"),
        "{ours_row}"
    );
    assert_eq!(attr(&page, &format!("app-{ours}"), "data-state"), "sending");
    assert_eq!(
        attr(&page, &format!("app-{other}"), "data-limited-requests"),
        "1"
    );
    assert_eq!(
        attr(&page, &format!("app-{other}"), "data-state"),
        "new",
        "created a moment ago, nothing sent yet: not silent"
    );
    assert_eq!(text(&page, "silent-applications"), "0");
    assert!(!page.contains("id=\"dashboard-unknown\""));

    assert_eq!(text(&page, "total-events"), "5");
    assert_eq!(text(&page, "total-rejected"), "3");
    assert!(page.contains("<svg"), "charts are drawn on the server");
    assert!(page.contains(">pageview</a></td><td>5</td>"));

    // The last hour, from the rollups: the five pageviews in their minute, none elsewhere.
    let section = |id: &str| {
        let start = page.find(&format!("id=\"{id}\"")).unwrap();
        &page[start..start + page[start..].find("</table>").unwrap()]
    };
    assert!(
        section("last-hour-types")
            .contains("<td>page interaction</td><td>pageview</td><td data-count=\"5\">5</td>"),
        "{}",
        section("last-hour-types")
    );
    let minute = format!("{}T{}", &now[..10], &now[11..16]);
    let minutes = section("last-hour-minutes");
    assert!(
        minutes.contains(&format!("<tr><td>{minute}</td><td>5</td></tr>")),
        "{minutes}"
    );
    assert_eq!(minutes.matches("<tr><td>").count(), 60);
    assert_eq!(minutes.matches("</td><td>0</td>").count(), 59);
}

async fn an_application_silent_for_long_is_flagged_and_its_name_escaped(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let now = Utc::now();
    let pageview = |at| {
        Seed::new(
            Uuid::new_v4(),
            "page interaction",
            "pageview",
            json!({"host": "h", "path": "/"}),
            at,
        )
    };
    let name = "<b>Shop</b> & \"co\"";
    app.seed_for(name, &[pageview(now - chrono::Duration::hours(3))])
        .await;
    app.seed_for("busy", &[pageview(now - chrono::Duration::seconds(30))])
        .await;
    app.seed_for("paused", &[pageview(now - chrono::Duration::hours(5))])
        .await;
    eye_entity::tokens::set_application_disabled(&app.db, "paused", true)
        .await
        .unwrap();

    let mut client = app.admin().await;
    let (_, page) = client.get("/").await;
    let quiet = app.application_named(name).await;
    let quiet_row = row(&page, quiet);
    assert_eq!(attr(&page, &format!("app-{quiet}"), "data-state"), "silent");
    assert!(
        quiet_row.contains("<span class=\"flag\">silent</span>"),
        "{quiet_row}"
    );
    assert!(quiet_row.contains("3 h 0 min ago"), "{quiet_row}");
    assert!(
        quiet_row.contains("&#60;b&#62;Shop&#60;/b&#62; &#38; &#34;co&#34;"),
        "{quiet_row}"
    );
    assert!(!page.contains("<b>Shop</b>"), "the name is escaped");

    let busy = app.application_named("busy").await;
    assert_eq!(attr(&page, &format!("app-{busy}"), "data-state"), "sending");
    let paused = app.application_named("paused").await;
    assert_eq!(
        attr(&page, &format!("app-{paused}"), "data-state"),
        "disabled",
        "a disabled application is expected to be quiet"
    );
    assert_eq!(text(&page, "silent-applications"), "1");
    assert!(attr(&page, "tile-silent", "class").contains("warn"));
}

async fn worker_lag_is_the_age_of_the_newest_stored_event_while_messages_wait(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let stored = Utc::now() - chrono::Duration::minutes(10);
    app.seed(&[Seed::new(
        Uuid::new_v4(),
        "page interaction",
        "pageview",
        json!({"host": "h", "path": "/"}),
        stored,
    )])
    .await;
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    assert_eq!(
        app.post(&eye_testkit::pageview("/waiting", &now))
            .await
            .status(),
        StatusCode::ACCEPTED
    );

    let mut client = app.admin().await;
    let (_, page) = client.get("/").await;
    assert_eq!(text(&page, "queue-depth"), "1");
    assert_eq!(text(&page, "queue-consumers"), "0");
    let lag: i64 = attr(&page, "worker-lag", "data-seconds").parse().unwrap();
    let bound = (Utc::now() - stored).num_seconds();
    assert!((600..=bound).contains(&lag), "{lag} s, at most {bound} s");
    assert!(text(&page, "worker-lag").starts_with("10 min"));
    assert!(attr(&page, "tile-lag", "class").contains("warn"));
}
