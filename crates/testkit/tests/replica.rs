//! `admin_database_url`: the admin's and the read api's queries of events, sessions,
//! rejections and stats, and the report runner, read the replica, while logins, tokens and
//! the reports' own rows are written to the primary, and the dashboard reads the primary. The "replica" here is a
//! second database the services may only read, holding other events than the primary, so
//! every answer shows which one it came from (the real streaming replica is in the cluster
//! test, `crates/cli/tests/cluster.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{TimeDelta, Utc};
use eye_core::token::Scope;
use eye_entity::applications;
use eye_testkit::{APPLICATION, Backend, Options, Seed, TestApp, event, on_services};
use reqwest::StatusCode;
use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel};
use serde_json::json;
use uuid::Uuid;

on_services!(the_admin_reads_events_from_the_replica_and_writes_to_the_primary);

async fn the_admin_reads_events_from_the_replica_and_writes_to_the_primary(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        Options {
            read_replica: true,
            ..Options::default()
        },
    )
    .await;
    let replica = app.reads_db.clone().unwrap();
    let at = Utc::now() - TimeDelta::minutes(5);
    let stamp = at.to_rfc3339();

    // Through the pipeline: these land on the primary only.
    for name in ["on-primary-1", "on-primary-2"] {
        let response = app
            .post(&event("page interaction", name, json!({}), &stamp))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    app.wait_for_counts(2, 0).await;
    // The replica holds the same application (same id) with one other event.
    let application = applications::Entity::find_by_id(app.application_id().await)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    application
        .into_active_model()
        .reset_all()
        .insert(&replica)
        .await
        .unwrap();
    let session = Uuid::new_v4();
    let seeded = app
        .seed_in(
            &replica,
            APPLICATION,
            &[Seed::new(
                session,
                "page interaction",
                "on-replica",
                json!({}),
                at,
            )],
        )
        .await;

    // A login and a token are written: the replica would refuse both.
    let mut admin = app.admin().await;
    let (status, page) = admin.get("/events").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("on-replica"), "{page}");
    assert!(!page.contains("on-primary"), "{page}");
    let (status, page) = admin
        .get(&format!(
            "/events/{}/{}",
            app.application_id().await,
            seeded[0]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // The dashboard stays on the primary: a lagging replica would look like stopped workers.
    let (status, page) = admin.get("/").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("on-primary-1"), "{page}");
    assert!(!page.contains("on-replica"), "{page}");

    let token = app
        .token_for(
            APPLICATION,
            &[Scope::EventsRead, Scope::EventsReadAll],
            chrono::Duration::hours(1),
        )
        .await
        .jwt;
    let (status, found) = app.read_api(&token, "/api/v1/events").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let names: Vec<&str> = found["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["on-replica"], "{found}");
    let application_id = app.application_id().await;
    let (status, events) = app
        .read_api(
            &token,
            &format!("/api/v1/sessions/{session}?application_id={application_id}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert!(events.to_string().contains("on-replica"), "{events}");

    // Stats and a report count the replica's rollups; the report's job and CSV are written
    // to the primary, where the report is then read back.
    let window = format!(
        "from={}&to={}",
        (at - TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M"),
        (at + TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M")
    );
    let (status, counts) = app
        .read_api(
            &token,
            &format!("/api/v1/stats/counts?bucket=day&group_by=name&{window}"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{counts}");
    assert!(counts.to_string().contains("on-replica"), "{counts}");
    assert!(!counts.to_string().contains("on-primary"), "{counts}");
    let csv = app
        .report_csv(
            &token,
            json!({
                "kind": "events_by_type",
                "from": (at - TimeDelta::hours(1)).to_rfc3339(),
                "to": (at + TimeDelta::hours(1)).to_rfc3339(),
            }),
        )
        .await;
    assert_eq!(
        csv,
        format!(
            "application,category,name,events\r\n{APPLICATION},page interaction,on-replica,1\r\n"
        )
    );
}
