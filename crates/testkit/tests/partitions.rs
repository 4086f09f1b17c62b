//! Events kept in monthly partitions (PostgreSQL) and removed by retention (both backends):
//! an event sent or delivered again is stored once whichever months its times fall in,
//! stragglers move into their month's partition when it is made, and retention removes what
//! is older than its cutoff and nothing newer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use eye_entity::partitions::{self, EVENTS, REJECTED_EVENTS};
use eye_entity::{event_counts, events, rejected_events, rollups, sessions};
use eye_testkit::{Backend, TestApp, on_both_backends, on_services, pageview};
use eye_worker::store::{self, EventRow, RejectedRow, Row, Written};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryOrder, Statement};
use serde_json::json;
use uuid::Uuid;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

fn event(application_id: Uuid, id: Uuid, session_id: Uuid, timestamp: DateTime<Utc>) -> Row {
    Row::Event(EventRow {
        application_id,
        id,
        session_id,
        category: "page interaction".into(),
        name: "pageview".into(),
        data: r#"{"host":"h","path":"/p"}"#.into(),
        timestamp,
        source: None,
        received_at: timestamp,
    })
}

fn rejected(application_id: Uuid, id: Uuid, received_at: DateTime<Utc>) -> Row {
    Row::Rejected(RejectedRow {
        application_id,
        id,
        category: "page interaction".into(),
        name: "pageview".into(),
        payload: "{}".into(),
        reasons: json!([{"field": "data", "code": "required"}]),
        received_at,
    })
}

/// The partition a row of `table` is in, on PostgreSQL.
async fn partition_of(app: &TestApp, table: &str, id: Uuid) -> Vec<String> {
    app.db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT tableoid::regclass::text AS p FROM {table} WHERE id = '{id}' ORDER BY 1"
            ),
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "p").unwrap())
        .collect()
}

async fn partition_exists(app: &TestApp, name: &str) -> bool {
    app.db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT to_regclass('{name}') IS NOT NULL AS present"),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "present")
        .unwrap()
}

on_both_backends!(
    an_event_sent_again_is_stored_once_whichever_month_its_time_falls_in,
    a_redelivered_batch_across_months_is_stored_once,
    retention_removes_what_is_older_than_the_cutoff_and_keeps_the_rest,
);
on_services!(
    a_new_partition_takes_in_the_stragglers_of_its_month,
    the_coming_months_have_partitions_after_migrate,
);

/// A client sends an event again after losing the 202, the same id at the same time: it is
/// stored once, even when another event of its session falls in the next month. The same id
/// under another time is one row on SQLite (keyed by application and id) and a second on
/// PostgreSQL (the key holds the partition column; decision 48). Another application's event
/// with the same id is its own.
async fn an_event_sent_again_is_stored_once_whichever_month_its_time_falls_in(backend: Backend) {
    let on_services = !backend.is_embedded();
    let app = TestApp::spawn(backend).await;
    if on_services {
        for month in [(2026, 10), (2026, 11)] {
            let month = NaiveDate::from_ymd_opt(month.0, month.1, 1).unwrap();
            partitions::create_month(&app.db, EVENTS, month)
                .await
                .unwrap();
        }
    }
    let (id, session) = (Uuid::now_v7(), Uuid::new_v4());
    let send = |token: String, at: &'static str| {
        let app = &app;
        async move {
            let mut body = pageview("/p", at);
            body["id"] = json!(id);
            body["session_id"] = json!(session);
            app.post_as(&token, &body).await.status().as_u16()
        }
    };
    let shop = app.write_token_for("shop").await;
    let blog = app.write_token_for("blog").await;
    assert_eq!(send(shop.clone(), "2026-10-31 23:59:30").await, 202);
    assert_eq!(send(shop.clone(), "2026-10-31 23:59:30").await, 202);
    assert_eq!(send(blog, "2026-11-01 00:00:30").await, 202);
    // Sent last, so that the queue's order makes it stored last (one worker).
    assert_eq!(send(shop, "2026-11-01 00:00:30").await, 202);
    let shops: i64 = if on_services { 2 } else { 1 };
    app.wait_for_counts(1 + shops as u64, 0).await;
    let marker = app.write_token_for("marker").await;
    assert_eq!(send(marker, "2026-11-02 00:00:00").await, 202);
    app.wait_for_counts(2 + shops as u64, 0).await;

    let shop = app.application_id_of("shop").await;
    let stored = app.stored_events().await;
    let mut times: Vec<_> = stored
        .iter()
        .filter(|e| e.application_id == shop)
        .map(|e| e.timestamp)
        .collect();
    times.sort();
    let mut expected = vec![at("2026-10-31T23:59:30Z")];
    if on_services {
        expected.push(at("2026-11-01T00:00:30Z"));
    }
    assert_eq!(times, expected, "{stored:?}");
    let session_row = sessions::Entity::find_by_id((shop, session))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session_row.event_count, shops, "the retry did not count");
    if on_services {
        assert_eq!(
            partition_of(&app, "events", id).await,
            // The shop's two, the blog's and the marker's.
            [
                "events_p2026_10",
                "events_p2026_11",
                "events_p2026_11",
                "events_p2026_11"
            ]
        );
    }
}

/// The same rows written twice, as when a worker stopped after storing a batch and before
/// acknowledging it: the second write stores nothing, in every month the batch touched
/// (within a partition, across partitions and in the default one), and sessions count each
/// event once.
async fn a_redelivered_batch_across_months_is_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (application, session) = (Uuid::now_v7(), Uuid::new_v4());
    let times = [
        "2026-09-15T10:00:00Z",
        "2026-10-31T23:59:59.999999Z",
        "2026-11-01T00:00:00Z",
        "2026-12-31T12:00:00Z",
    ];
    let mut batch: Vec<Row> = times
        .iter()
        .map(|t| event(application, Uuid::now_v7(), session, at(t)))
        .collect();
    let (rejected_id, received) = (Uuid::now_v7(), at("2026-11-01T00:00:00Z"));
    batch.push(rejected(application, rejected_id, received));

    let first = store::write(&app.db, &batch).await.unwrap();
    assert_eq!((first.stored, first.duplicates, first.rejected), (4, 0, 1));
    let again = store::write(&app.db, &batch).await.unwrap();
    assert_eq!(
        again,
        Written {
            stored: 0,
            duplicates: 4,
            rejected: 0,
            dead: 0,
            stored_by_application: vec![],
        }
    );
    // Within one batch too, as when a client's retry and its original are read together.
    let repeated = Uuid::now_v7();
    let twice = [
        event(application, repeated, session, at("2026-10-20T00:00:00Z")),
        event(application, repeated, session, at("2026-10-20T00:00:00Z")),
    ];
    let written = store::write(&app.db, &twice).await.unwrap();
    assert_eq!((written.stored, written.duplicates), (1, 1));

    assert_eq!(events::Entity::find().count(&app.db).await.unwrap(), 5);
    assert_eq!(
        rejected_events::Entity::find()
            .count(&app.db)
            .await
            .unwrap(),
        1
    );
    let session_row = sessions::Entity::find_by_id((application, session))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session_row.event_count, 5);
    assert_eq!(session_row.first_seen, at(times[0]));
    assert_eq!(session_row.last_seen, at(times[3]));
}

/// Rows older than 400 days go, with the sessions that ended before them; everything newer
/// stays. On PostgreSQL the partition of a month wholly older goes as a whole and a straggler
/// in the default partition is deleted; the month holding the cutoff stays.
async fn retention_removes_what_is_older_than_the_cutoff_and_keeps_the_rest(backend: Backend) {
    let on_services = !backend.is_embedded();
    let app = TestApp::spawn(backend).await;
    let now = Utc::now();
    let cutoff = now - TimeDelta::days(400);
    let application = Uuid::now_v7();
    let (old_session, new_session) = (Uuid::new_v4(), Uuid::new_v4());
    let old_month = partitions::month_of(now - TimeDelta::days(500));
    let cutoff_month = partitions::month_of(cutoff);
    if on_services {
        assert!(
            partitions::create_month(&app.db, EVENTS, old_month)
                .await
                .unwrap()
        );
        assert!(
            partitions::create_month(&app.db, REJECTED_EVENTS, old_month)
                .await
                .unwrap()
        );
        assert!(
            partitions::create_month(&app.db, EVENTS, cutoff_month)
                .await
                .unwrap()
        );
    }
    // Older than the cutoff, in the month that holds it.
    let (in_cutoff_month, cutoff_session) = (Uuid::now_v7(), Uuid::new_v4());
    let early = cutoff_month.and_hms_opt(0, 0, 1).unwrap().and_utc();
    assert!(early < cutoff);
    let in_old_month = Uuid::now_v7();
    let straggler = Uuid::now_v7();
    let recent = Uuid::now_v7();
    let (old_rejected, new_rejected) = (Uuid::now_v7(), Uuid::now_v7());
    let rows = [
        event(
            application,
            in_old_month,
            old_session,
            now - TimeDelta::days(500),
        ),
        event(
            application,
            straggler,
            old_session,
            now - TimeDelta::days(450),
        ),
        event(application, recent, new_session, now - TimeDelta::days(3)),
        event(application, in_cutoff_month, cutoff_session, early),
        rejected(application, old_rejected, now - TimeDelta::days(500)),
        rejected(application, new_rejected, now - TimeDelta::hours(1)),
    ];
    store::write(&app.db, &rows).await.unwrap();
    if on_services {
        assert_eq!(
            partition_of(&app, "events", straggler).await,
            ["events_default"],
            "no partition for its month"
        );
    }

    let removed = partitions::apply_retention(&app.db, cutoff).await.unwrap();
    if on_services {
        assert_eq!(
            removed.partitions,
            [
                EVENTS.partition(old_month),
                REJECTED_EVENTS.partition(old_month)
            ]
        );
        // Only the straggler was deleted row by row.
        assert_eq!((removed.events, removed.rejected_events), (1, 0));
        assert!(!partition_exists(&app, &EVENTS.partition(old_month)).await);
        assert!(partition_exists(&app, &EVENTS.partition(cutoff_month)).await);
        assert!(partition_exists(&app, &EVENTS.partition(partitions::month_of(now))).await);
        assert_eq!(removed.sessions, 1);
    } else {
        assert!(removed.partitions.is_empty());
        assert_eq!((removed.events, removed.rejected_events), (3, 1));
        assert_eq!(removed.sessions, 2);
    }
    let mut kept: Vec<Uuid> = app.stored_events().await.iter().map(|e| e.id).collect();
    kept.sort();
    // PostgreSQL keeps the whole month that holds the cutoff, with its session.
    let mut expected = if on_services {
        vec![recent, in_cutoff_month]
    } else {
        vec![recent]
    };
    expected.sort();
    assert_eq!(kept, expected);
    // The per-minute counts hold exactly the events kept.
    let counted: Vec<(DateTime<Utc>, i64)> = event_counts::Entity::find()
        .order_by_asc(event_counts::Column::Minute)
        .all(&app.db)
        .await
        .unwrap()
        .iter()
        .map(|c| (c.minute, c.count))
        .collect();
    let left: Vec<(DateTime<Utc>, i64)> = app
        .stored_events()
        .await
        .iter()
        .map(|e| (rollups::minute_of(e.timestamp), 1))
        .collect();
    assert_eq!(counted, left);
    let cutoff_session_row = sessions::Entity::find_by_id((application, cutoff_session))
        .one(&app.db)
        .await
        .unwrap();
    assert_eq!(cutoff_session_row.is_some(), on_services);
    let kept: Vec<Uuid> = app.rejected_events().await.iter().map(|r| r.id).collect();
    assert_eq!(kept, [new_rejected]);
    let session = |id| sessions::Entity::find_by_id((application, id)).one(&app.db);
    assert!(session(old_session).await.unwrap().is_none());
    assert_eq!(session(new_session).await.unwrap().unwrap().event_count, 1);

    // Again: nothing more to remove.
    let again = partitions::apply_retention(&app.db, cutoff).await.unwrap();
    assert_eq!(again, partitions::Removed::default());
}

/// Events of a month without a partition wait in the default one; making the month's
/// partition moves them in, and they stay deduplicated there. The daily upkeep makes one for
/// a month with many stragglers, and not for a month with few.
async fn a_new_partition_takes_in_the_stragglers_of_its_month(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (application, session) = (Uuid::now_v7(), Uuid::new_v4());
    let month = NaiveDate::from_ymd_opt(2020, 3, 1).unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let rows: Vec<Row> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let t = at("2020-03-01T00:00:00Z") + TimeDelta::days(10 * n as i64);
            event(application, *id, session, t)
        })
        .collect();
    store::write(&app.db, &rows).await.unwrap();
    assert_eq!(
        partition_of(&app, "events", ids[0]).await,
        ["events_default"]
    );

    // A backfill of July 2019: enough rows for a partition of their own.
    let backfill: Vec<Row> = (0..partitions::STRAGGLERS_PER_PARTITION)
        .map(|n| {
            let t = at("2019-07-01T00:00:00Z") + TimeDelta::minutes(n);
            event(application, Uuid::now_v7(), session, t)
        })
        .collect();
    for chunk in backfill.chunks(2_000) {
        store::write(&app.db, chunk).await.unwrap();
    }
    let adopted = partitions::adopt_stragglers(&app.db).await.unwrap();
    assert_eq!(adopted, ["events_p2019_07"]);
    let in_default = app
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM events_default",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(in_default, 3, "March 2020 has too few rows to be adopted");

    assert!(
        partitions::create_month(&app.db, EVENTS, month)
            .await
            .unwrap()
    );
    assert!(
        !partitions::create_month(&app.db, EVENTS, month)
            .await
            .unwrap(),
        "made once"
    );
    for id in &ids {
        assert_eq!(partition_of(&app, "events", *id).await, ["events_p2020_03"]);
    }
    let again = store::write(&app.db, &rows).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 3));
    assert_eq!(
        events::Entity::find().count(&app.db).await.unwrap(),
        3 + partitions::STRAGGLERS_PER_PARTITION as u64
    );
    let listed: Vec<String> = partitions::list(&app.db, EVENTS)
        .await
        .unwrap()
        .into_iter()
        .take(2)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(listed, ["events_p2019_07", "events_p2020_03"]);
}

/// A fresh schema has last month's partition, this month's and the next two's, for both
/// tables.
async fn the_coming_months_have_partitions_after_migrate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = partitions::month_of(Utc::now())
        .checked_sub_months(chrono::Months::new(1))
        .unwrap();
    for table in partitions::TABLES {
        let months: Vec<NaiveDate> = partitions::list(&app.db, table)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, month)| month)
            .collect();
        let expected: Vec<NaiveDate> = (0..=partitions::MONTHS_AHEAD + 1)
            .map(|n| first.checked_add_months(chrono::Months::new(n)).unwrap())
            .collect();
        assert_eq!(months, expected, "{}", table.name);
    }
    // Run again, nothing new: every worker does this daily.
    assert!(
        partitions::create_ahead(&app.db, Utc::now(), None)
            .await
            .unwrap()
            .is_empty()
    );
}
