//! Report jobs: each kind's CSV holds exactly the stored rows of its window and application,
//! a job whose worker died mid-way ends complete with the right CSV, a job past its limits
//! ends failed with the reason, a job the queue refused leaves nothing behind, expired
//! reports go, and bad requests are named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use eye_core::token::Scope;
use eye_entity::report_jobs::{self, Limits};
use eye_entity::{report_chunks, reports};
use eye_testkit::{APPLICATION, Backend, Options, Seed, TestApp, event, on_both_backends};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

on_both_backends!(
    each_report_holds_exactly_the_rows_of_its_window_and_application,
    a_report_whose_worker_died_mid_job_completes_with_the_right_csv,
    a_report_past_its_row_limit_fails_with_the_reason,
    a_report_the_queue_refused_leaves_nothing_to_run_later,
    expired_reports_are_deleted_with_their_csv,
    bad_report_requests_are_named_problems,
    the_reports_page_starts_a_report_follows_it_and_downloads_its_csv,
    a_report_longer_than_a_page_of_reads_holds_every_row_once,
);

const OTHER: &str = "other-app";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn read_token(app: &TestApp, application: &str, scopes: &[Scope]) -> String {
    app.token_for(application, scopes, chrono::Duration::hours(1))
        .await
        .jwt
}

fn lines(header: &str, mut rows: Vec<String>) -> String {
    rows.sort();
    let mut csv = format!("{header}\r\n");
    for row in rows {
        csv.push_str(&row);
        csv.push_str("\r\n");
    }
    csv
}

/// Sessions in and around 2026-03-01 for two applications, the same session id in both.
async fn seed(app: &TestApp) -> Uuid {
    let shared = Uuid::new_v4();
    for application in [APPLICATION, OTHER] {
        let mut seeds = Vec::new();
        for (i, session) in [shared, Uuid::new_v4(), Uuid::new_v4()]
            .into_iter()
            .enumerate()
        {
            let first = start() + TimeDelta::minutes(10 * i as i64);
            for k in 0..=i {
                let at = first + TimeDelta::seconds(7 * k as i64);
                let name = if k % 2 == 0 { "click" } else { "view" };
                seeds.push(Seed::new(session, "page interaction", name, json!({}), at));
            }
        }
        // Outside the window asked for below.
        seeds.push(Seed::new(
            Uuid::new_v4(),
            "page interaction",
            "click",
            json!({}),
            start() - TimeDelta::hours(2),
        ));
        app.seed_for(application, &seeds).await;
    }
    shared
}

fn window() -> Value {
    json!({"from": rfc3339(start()), "to": rfc3339(start() + TimeDelta::hours(1))})
}

fn with(mut body: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn each_report_holds_exactly_the_rows_of_its_window_and_application(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app).await;
    let own = read_token(&app, APPLICATION, &[Scope::EventsRead]).await;
    let all = read_token(
        &app,
        APPLICATION,
        &[Scope::EventsRead, Scope::EventsReadAll],
    )
    .await;

    // Events by type: 1 + 2 + 3 events in the window, clicks on even steps.
    let csv = app
        .report_csv(&own, with(window(), json!({"kind": "events_by_type"})))
        .await;
    let expected = lines(
        "application,category,name,events",
        vec![
            format!("{APPLICATION},page interaction,click,4"),
            format!("{APPLICATION},page interaction,view,2"),
        ],
    );
    assert_eq!(csv, expected);
    let csv = app
        .report_csv(
            &all,
            with(window(), json!({"kind": "events_by_type", "name": "view"})),
        )
        .await;
    let expected = lines(
        "application,category,name,events",
        vec![
            format!("{APPLICATION},page interaction,view,2"),
            format!("{OTHER},page interaction,view,2"),
        ],
    );
    assert_eq!(csv, expected);

    // Sessions: computed here from the stored session rows.
    let mut expected = Vec::new();
    for application in [APPLICATION, OTHER] {
        let id = app.application_id_of(application).await;
        let rows = eye_entity::sessions::Entity::find()
            .filter(eye_entity::sessions::Column::ApplicationId.eq(id))
            .filter(eye_entity::sessions::Column::FirstSeen.gte(start()))
            .all(&app.db)
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);
        for s in rows {
            let seconds = (s.last_seen - s.first_seen).num_milliseconds() as f64 / 1000.0;
            expected.push(format!(
                "{application},{},{},{},{},{seconds:.3}",
                s.id,
                rfc3339(s.first_seen),
                rfc3339(s.last_seen),
                s.event_count
            ));
        }
    }
    let header = "application,session_id,first_seen,last_seen,events,duration_seconds";
    let csv = app
        .report_csv(&all, with(window(), json!({"kind": "sessions"})))
        .await;
    assert_eq!(sorted_rows(&csv), lines(header, expected.clone()));
    let csv = app
        .report_csv(
            &own,
            with(
                window(),
                json!({"kind": "sessions", "application": APPLICATION}),
            ),
        )
        .await;
    let own_rows: Vec<String> = expected
        .into_iter()
        .filter(|r| r.starts_with(&format!("{APPLICATION},")))
        .collect();
    assert_eq!(sorted_rows(&csv), lines(header, own_rows));

    // Rejections: events the workers refused, posted through the api.
    let future = rfc3339(Utc::now() + TimeDelta::days(30));
    let bad = event(
        "page interaction",
        "click",
        json!({"note": "a, \"quoted\" one"}),
        &future,
    );
    let (stored, _) = app.counts().await;
    assert_eq!(app.post(&bad).await.status(), 202);
    app.wait_for_counts(stored, 1).await;
    let rejected = app.rejected_events().await;
    let csv = app
        .report_csv(&own, json!({"kind": "rejections", "window": "last_hour"}))
        .await;
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("application,id,rejected_at,received_at,category,name,reasons,payload")
    );
    let row = rows.next().unwrap();
    assert!(
        row.starts_with(&format!(
            "{APPLICATION},{},{},{},page interaction,click,",
            rejected[0].id,
            rfc3339(rejected[0].rejected_at),
            rfc3339(rejected[0].received_at)
        )),
        "{row}"
    );
    let payload = eye_core::csv::field(&rejected[0].payload);
    assert!(payload.starts_with('"'), "a payload with commas is quoted");
    assert!(
        row.ends_with(&format!(",timestamp_in_future,{payload}")),
        "the reasons and the payload exactly as received: {row}"
    );
    assert_eq!(rows.next(), None);

    // Another application's token neither reads this report nor asks for this application.
    let (_, report) = app.ask_report(&own, &json!({"kind": "sessions"})).await;
    let id = report["id"].as_str().unwrap();
    let stranger = read_token(&app, OTHER, &[Scope::EventsRead]).await;
    let (status, problem) = app
        .read_api(&stranger, &format!("/api/v1/reports/{id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(
        app.report_download(&stranger, id).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, problem) = app
        .ask_report(
            &stranger,
            &json!({"kind": "sessions", "application": APPLICATION}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["code"], "application_forbidden");
}

/// The header, then the rows sorted: sessions come by application and time, the expected
/// rows are built in another order.
fn sorted_rows(csv: &str) -> String {
    let mut rows = csv.lines();
    let header = rows.next().unwrap();
    lines(header, rows.map(str::to_owned).collect())
}

async fn a_report_whose_worker_died_mid_job_completes_with_the_right_csv(backend: Backend) {
    // No worker: the test runs the report runner itself.
    let options = Options {
        workers: 0,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend.clone(), options).await;
    seed(&app).await;
    let all = read_token(
        &app,
        APPLICATION,
        &[Scope::EventsRead, Scope::EventsReadAll],
    )
    .await;
    let (status, report) = app
        .ask_report(&all, &with(window(), json!({"kind": "sessions"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{report}");
    let id: Uuid = report["id"].as_str().unwrap().parse().unwrap();

    // Hold the job mid-way: PostgreSQL lets it claim its attempt and read, then waits on
    // writing its CSV; SQLite lets no one write at all.
    let blocker = app.db.begin().await.unwrap();
    let postgres = app.db.get_database_backend() == sea_orm::DbBackend::Postgres;
    let lock = if postgres {
        "LOCK TABLE report_chunks IN EXCLUSIVE MODE"
    } else {
        "UPDATE applications SET name = name"
    };
    blocker.execute_unprepared(lock).await.unwrap();
    let stop = CancellationToken::new();
    let runner = app
        .queue
        .spawn_report_runner(&app.settings, &app.db, &app.db, &stop)
        .await
        .unwrap();
    let claimed = if postgres { 1 } else { 0 };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while attempts(&app, id).await != claimed {
        assert!(tokio::time::Instant::now() < until, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The worker dies: its connection to the broker goes, and its message with it.
    runner.abort();
    let _ = runner.await;
    blocker.rollback().await.unwrap();
    if let Some(reports) = app.queue.in_process_reports() {
        // A process that dies loses its in-process queue too.
        eye_core::queue::Consumer::Memory(reports.clone()).abandon();
    }
    let status = reports::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.status, "running");

    // A worker starts again: the job is delivered again (RabbitMQ) or queued again from the
    // database (the in-process queue), and runs as a new attempt.
    let again = app
        .queue
        .spawn_report_runner(&app.settings, &app.db, &app.db, &stop)
        .await
        .unwrap();
    let report = app.report_finished(&all, &id.to_string()).await;
    assert_eq!(report["status"], "complete", "{report}");
    let row = reports::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, claimed + 1);
    assert_eq!(row.result_attempt, Some(claimed + 1));
    let chunks = report_chunks::Entity::find()
        .filter(report_chunks::Column::ReportId.eq(id))
        .all(&app.db)
        .await
        .unwrap();
    assert!(
        chunks.iter().all(|c| c.attempt == claimed + 1),
        "what the dead attempt wrote is gone"
    );
    let (status, csv) = app.report_download(&all, &id.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(csv.starts_with("application,session_id,"));
    stop.cancel();
    let _ = again.await;
}

async fn attempts(app: &TestApp, id: Uuid) -> i32 {
    reports::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .attempts
}

async fn a_report_past_its_row_limit_fails_with_the_reason(backend: Backend) {
    let options = Options {
        settings: |s| s.report_max_rows = 5,
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    seed(&app).await;
    let all = read_token(
        &app,
        APPLICATION,
        &[Scope::EventsRead, Scope::EventsReadAll],
    )
    .await;
    // Six sessions in the window, one more than allowed.
    let (status, report) = app
        .ask_report(&all, &with(window(), json!({"kind": "sessions"})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = report["id"].as_str().unwrap().to_owned();
    let report = app.report_finished(&all, &id).await;
    assert_eq!(report["status"], "failed", "{report}");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("more than 5 rows (report_max_rows)"),
        "{reason}"
    );
    assert!(report.get("csv").is_none());
    let (status, body) = app.report_download(&all, &id).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["code"], "report_failed");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("report_max_rows")
    );
    let left = report_chunks::Entity::find().all(&app.db).await.unwrap();
    assert!(left.is_empty(), "a failed report keeps no CSV");
    // One application alone has three sessions: that one fits.
    let csv = app
        .report_csv(
            &all,
            with(window(), json!({"kind": "sessions", "application": OTHER})),
        )
        .await;
    assert_eq!(csv.lines().count(), 1 + 3);
}

async fn a_report_the_queue_refused_leaves_nothing_to_run_later(backend: Backend) {
    let options = Options {
        proxy_broker: !backend.is_embedded(),
        ..Options::default()
    };
    let app = TestApp::spawn_with(backend, options).await;
    let own = read_token(&app, APPLICATION, &[Scope::EventsRead]).await;
    match app.queue.in_process_reports() {
        Some(reports) => reports.close(),
        None => app.broker_proxy.as_ref().unwrap().cut(),
    }
    let (status, problem) = app.ask_report(&own, &json!({"kind": "sessions"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was started"),
        "{problem}"
    );
    let left = reports::Entity::find().all(&app.db).await.unwrap();
    assert!(
        left.is_empty(),
        "a refused report must not run later: {left:?}"
    );
}

async fn expired_reports_are_deleted_with_their_csv(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app).await;
    let own = read_token(&app, APPLICATION, &[Scope::EventsRead]).await;
    let csv = app
        .report_csv(&own, with(window(), json!({"kind": "sessions"})))
        .await;
    assert_eq!(csv.lines().count(), 1 + 3);
    let report = reports::Entity::find().one(&app.db).await.unwrap().unwrap();
    let hours = i64::from(app.settings.report_retention_hours);
    let kept_until = report.completed_at.unwrap() + TimeDelta::hours(hours);
    assert_eq!(report.expires_at, kept_until);
    let limits = Limits::of(&app.settings);
    // Before its expiry nothing goes; after, the report and its CSV do.
    let swept = report_jobs::sweep(&app.db, kept_until - TimeDelta::minutes(1), limits).await;
    assert_eq!(swept.unwrap(), 0);
    let swept = report_jobs::sweep(&app.db, kept_until + TimeDelta::minutes(1), limits).await;
    assert_eq!(swept.unwrap(), 1);
    let (status, _) = app
        .read_api(&own, &format!("/api/v1/reports/{}", report.id))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        report_chunks::Entity::find()
            .all(&app.db)
            .await
            .unwrap()
            .is_empty()
    );

    // A job no worker finished in time (its in-process message was lost) is failed, not left
    // running for ever.
    let request = report_jobs::Request {
        kind: report_jobs::Kind::Sessions,
        application_id: None,
        from: start(),
        to: start() + TimeDelta::hours(1),
        category: None,
        name: None,
        requested_by: "test".into(),
    };
    let lost = report_jobs::create(&app.db, &request, limits.keep)
        .await
        .unwrap();
    let later = lost.created_at + TimeDelta::hours(1);
    report_jobs::sweep(&app.db, later, limits).await.unwrap();
    let lost = reports::Entity::find_by_id(lost.id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.status, "failed");
    assert!(lost.reason.unwrap().contains("no worker finished"));
}

async fn bad_report_requests_are_named_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let own = read_token(&app, APPLICATION, &[Scope::EventsRead]).await;
    let cases = [
        (json!({}), "`kind` must be"),
        (json!({"kind": "everything"}), "`kind` must be"),
        (
            json!({"kind": "sessions", "window": "last_year"}),
            "`window` must be",
        ),
        (
            json!({"kind": "sessions", "window": "last_day", "from": "2026-01-01"}),
            "not both",
        ),
        (
            json!({"kind": "sessions", "from": "yesterday"}),
            "`from` is not a time",
        ),
        (
            json!({"kind": "sessions", "from": "2026-02-01", "to": "2026-01-01"}),
            "`from` is later than `to`",
        ),
        (
            json!({"kind": "sessions", "category": "x"}),
            "neither `category` nor `name`",
        ),
        (
            json!({"kind": "sessions", "application": "nobody"}),
            "no application is named `nobody`",
        ),
        (
            json!({"kind": "sessions", "colour": "red"}),
            "unknown field `colour`",
        ),
        (json!([1, 2]), "not a report request"),
    ];
    for (body, says) in cases {
        let (status, problem) = app.ask_report(&own, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert_eq!(problem["code"], "invalid_report", "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{body}: {detail}");
    }
    let (status, _) = app
        .ask_report(&app.token, &json!({"kind": "sessions"}))
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a write token cannot ask for reports"
    );
    let (status, problem) = app
        .read_api(&own, &format!("/api/v1/reports/{}", Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "not_found");
    let nothing = reports::Entity::find().all(&app.db).await.unwrap();
    assert!(nothing.is_empty());
}

async fn the_reports_page_starts_a_report_follows_it_and_downloads_its_csv(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app).await;
    let mut admin = app.admin().await;
    let (status, page) = admin.get("/reports").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="start-report""#) && page.contains(r#"id="no-reports""#));
    let response = admin
        .post(
            "/reports",
            &[
                ("kind", "events_by_type"),
                ("window", ""),
                ("from", "2026-03-01T00:00"),
                ("to", "2026-03-01T01:00"),
                ("application", OTHER),
                ("category", ""),
                ("name", "click"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let id = location
        .strip_prefix("/reports?started=")
        .unwrap()
        .to_owned();
    let (_, page) = admin.get(&location).await;
    assert!(
        page.contains(&format!(r#"id="r-{id}""#)),
        "the new report is listed"
    );
    assert!(page.contains("admin user"), "with who asked");
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let (_, page) = admin.get("/reports").await;
        if !page.contains("http-equiv=\"refresh\"") {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the report never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        page.contains(&format!(r#"href="/reports/{id}/csv""#)),
        "{page}"
    );
    assert!(page.contains(OTHER) && page.contains("name = click"));
    let (status, csv) = admin.get(&format!("/reports/{id}/csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        csv,
        format!("application,category,name,events\r\n{OTHER},page interaction,click,4\r\n")
    );

    // A bad form is a page that says what is wrong; a stranger must log in.
    let response = admin
        .post(
            "/reports",
            &[
                ("kind", "sessions"),
                ("window", "last_day"),
                ("category", "x"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("neither `category` nor `name`")
    );
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = anonymous
        .get(format!("{}/reports/{id}/csv", app.admin_address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

async fn a_report_longer_than_a_page_of_reads_holds_every_row_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Rows are read 5,000 at a time; two sessions share each second, so pages end mid-tie.
    let seeds: Vec<Seed> = (0..5_003)
        .map(|i| {
            let at = start() + TimeDelta::seconds(i / 2);
            Seed::new(Uuid::new_v4(), "page interaction", "click", json!({}), at)
        })
        .collect();
    app.seed(&seeds).await;
    let own = read_token(&app, APPLICATION, &[Scope::EventsRead]).await;
    let to = rfc3339(start() + TimeDelta::hours(2));
    let csv = app
        .report_csv(
            &own,
            json!({"kind": "sessions", "from": rfc3339(start()), "to": to}),
        )
        .await;
    let ids: std::collections::HashSet<&str> = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(csv.lines().count(), 1 + 5_003);
    assert_eq!(ids.len(), 5_003, "every session once");
    let expected: std::collections::HashSet<String> =
        seeds.iter().map(|s| s.session_id.to_string()).collect();
    assert!(ids.iter().all(|id| expected.contains(*id)));
}
