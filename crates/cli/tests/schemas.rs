//! `eye schemas` and a schema directory in the services, run as the real `eye` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use eye_migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use support::TestDb;

mod support;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/schemas")
}

fn eye(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(args)
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .env_remove("EYE_SCHEMA_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn broken_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["checkout-order.json", "pageview.json"] {
        std::fs::copy(examples().join(file), dir.path().join(file)).unwrap();
    }
    // The same type twice, and a file that is not JSON.
    std::fs::copy(
        examples().join("checkout-order.json"),
        dir.path().join("order-copy.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("refund.json"), "{\"x-eye-name\": ").unwrap();
    dir
}

#[test]
fn check_lists_the_types_of_a_usable_directory_and_names_each_broken_file() {
    let output = eye(&["schemas", "check", examples().to_str().unwrap()], &[]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}{err}");
    assert!(out.contains(r#""checkout" / "order""#), "{out}");
    assert!(
        out.contains(r#""page interaction" / "pageview""#) && out.contains("adds to the built-in"),
        "{out}"
    );
    assert!(out.contains("2 event types"), "{out}");

    let dir = broken_dir();
    let output = eye(&["schemas", "check", dir.path().to_str().unwrap()], &[]);
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("order-copy.json") && lines[0].contains("checkout-order.json"),
        "{err}"
    );
    assert!(
        lines[1].contains("refund.json") && lines[1].contains("is not JSON"),
        "{err}"
    );
}

#[test]
fn check_lists_what_it_skipped_and_refuses_a_pattern_it_cannot_run_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        examples().join("checkout-order.json"),
        dir.path().join("checkout-order.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a schema").unwrap();
    std::fs::create_dir(dir.path().join("old")).unwrap();
    let output = eye(&["schemas", "check", dir.path().to_str().unwrap()], &[]);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}{err}");
    assert!(out.contains("notes.txt: not a .json file"), "{out}");
    assert!(
        out.contains("old: a directory: subdirectories are not read"),
        "{out}"
    );
    assert!(out.contains("1 event type in"), "{out}");

    std::fs::write(
        dir.path().join("signup.json"),
        json!({"x-eye-category": "account", "x-eye-name": "signup",
            "properties": {"user": {"type": "string", "pattern": "^(?!admin).*$"}}})
        .to_string(),
    )
    .unwrap();
    let output = eye(&["schemas", "check", dir.path().to_str().unwrap()], &[]);
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    let line = err.lines().find(|l| l.contains("signup.json")).unwrap();
    assert!(
        line.contains("linear time") && line.ends_with("(at /properties/user/pattern)"),
        "{err}"
    );
    assert!(err.contains("notes.txt: not a .json file"), "{err}");

    // A name longer than the events may carry is refused too.
    std::fs::remove_file(dir.path().join("signup.json")).unwrap();
    let output = eye(
        &["schemas", "check", dir.path().to_str().unwrap()],
        &[("EYE_MAX_NAME_CHARS", "4")],
    );
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("x-eye-category is 8 characters long") && err.contains("max_name_chars"),
        "{err}"
    );
}

#[test]
fn test_refuses_a_line_longer_than_a_request_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let event = json!({"session_id": "e2085be5-9137-4e4e-80b5-f1ffddc25423",
        "category": "page interaction", "name": "pageview",
        "timestamp": "2021-01-01T09:15:27Z", "data": {"host": "h", "path": "/"}})
    .to_string();
    let long = format!("{event}{}", " ".repeat(2000));
    std::fs::write(&file, [event.clone(), long, event].join("\n")).unwrap();
    let output = eye(
        &[
            "schemas",
            "test",
            examples().to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        &[
            ("EYE_MAX_REQUEST_BYTES", "1024"),
            ("EYE_MAX_EVENT_BYTES", "1024"),
        ],
    );
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "line 2: refused by the api: payload_too_large: the body is larger than 1024 bytes",
            "1 of 3 events would be refused",
        ],
        "{out}"
    );
}

#[test]
fn test_names_each_refused_line_and_why_and_exits_by_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let session = "e2085be5-9137-4e4e-80b5-f1ffddc25423";
    let order = |total: i64, currency: &str| {
        json!({"session_id": session, "category": "checkout", "name": "order",
            "timestamp": "2021-01-01 09:15:27",
            "data": {"host": "shop", "order_id": "1", "total": total, "currency": currency,
                "items": [{"sku": "a", "price": 5, "quantity": 1}]}})
        .to_string()
    };
    let pageview = |path: &str| {
        json!({"session_id": session, "category": "page interaction", "name": "pageview",
            "timestamp": "2021-01-01T09:15:27Z", "data": {"host": "h", "path": path}})
        .to_string()
    };
    let lines = [
        order(5, "EUR"),
        order(-5, "eur"),
        String::new(),
        json!({"category": "checkout", "name": "order", "data": {},
            "timestamp": "2021-01-01 09:15:27"})
        .to_string(),
        pageview("relative"),
        pageview("/fine"),
    ];
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let run = |schemas: &Path| {
        eye(
            &[
                "schemas",
                "test",
                schemas.to_str().unwrap(),
                file.to_str().unwrap(),
            ],
            &[],
        )
    };

    let output = run(&examples());
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    let expected = [
        r#"line 2: refused by ("checkout", "order"): data.currency schema.pattern: the value does not match "^[A-Z]{3}$" (at /currency)"#,
        r#"line 2: refused by ("checkout", "order"): data.total schema.minimum: the value is less than the minimum of 0 (at /total)"#,
        "line 4: refused by the api: session_id required: session_id is required",
        r#"line 5: refused by ("page interaction", "pageview"): data.path schema.pattern: the value does not match "^/" (at /path)"#,
        "3 of 5 events would be refused",
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");

    // Lines 1 and 6 alone pass.
    std::fs::write(&file, [lines[0].clone(), lines[5].clone()].join("\n")).unwrap();
    let output = run(&examples());
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}{err}");
    assert_eq!(out.trim(), "0 of 2 events would be refused");

    // A directory that cannot be used: nothing is tested.
    let broken = broken_dir();
    let output = run(broken.path());
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("refund.json"), "{err}");
}

#[test]
fn a_worker_with_a_broken_schema_file_or_no_directory_stops_at_start_naming_it() {
    let dir = broken_dir();
    // A database it can open: the latest reload request is read before the directory.
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
    let output = eye(
        &["worker"],
        &[
            ("EYE_SCHEMA_DIR", dir.path().to_str().unwrap()),
            ("EYE_DATABASE_URL", &database),
        ],
    );
    let (out, err) = text(&output);
    assert!(!output.status.success(), "{out}{err}");
    assert!(err.contains("EYE_SCHEMA_DIR"), "{err}");
    assert!(err.contains("refund.json"), "{err}");
    assert!(err.contains("order-copy.json"), "{err}");

    let output = eye(
        &["worker"],
        &[
            ("EYE_SCHEMA_DIR", "/nonexistent/eye-schemas"),
            ("EYE_DATABASE_URL", &database),
        ],
    );
    let (out, err) = text(&output);
    assert!(!output.status.success(), "{out}{err}");
    assert!(
        err.contains("schema_dir = \"/nonexistent/eye-schemas\""),
        "{err}"
    );
    assert!(err.contains("EYE_SCHEMA_DIR"), "{err}");
}

/// A migrated database of the test's own (`None`: PostgreSQL is not available).
async fn database(postgres: bool) -> Option<TestDb> {
    let database = if postgres {
        TestDb::postgres().await?
    } else {
        TestDb::sqlite().await
    };
    let db = eye_cli::stack::connect(&database.url).await.unwrap();
    eye_migration::Migrator::up(&db, None).await.unwrap();
    db.close().await.unwrap();
    Some(database)
}

async fn reloads(url: &str) -> i64 {
    let db = eye_cli::stack::connect(url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM schema_reloads",
        ))
        .await
        .unwrap()
        .unwrap();
    let n = row.try_get::<i64>("", "n").unwrap();
    db.close().await.unwrap();
    n
}

async fn reload_records_a_request_unless_the_local_directory_is_broken(postgres: bool) {
    let Some(database) = database(postgres).await else {
        return;
    };
    let url = database.url.clone();
    let env = [("EYE_DATABASE_URL", url.as_str())];
    let output = eye(&["schemas", "reload"], &env);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}{err}");
    assert!(err.contains("reload 1 requested"), "{err}");
    assert_eq!(reloads(&url).await, 1);

    let broken = broken_dir();
    let output = eye(
        &["schemas", "reload"],
        &[env[0], ("EYE_SCHEMA_DIR", broken.path().to_str().unwrap())],
    );
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("refund.json") && err.contains("reload not requested"),
        "{err}"
    );
    assert_eq!(reloads(&url).await, 1);
    database.drop().await;
}

#[tokio::test]
async fn reload_records_a_request_unless_the_local_directory_is_broken_on_sqlite() {
    reload_records_a_request_unless_the_local_directory_is_broken(false).await;
}

#[tokio::test]
async fn reload_records_a_request_unless_the_local_directory_is_broken_on_postgres() {
    reload_records_a_request_unless_the_local_directory_is_broken(true).await;
}

/// `eye dev` with a schema directory: a file added later is put in force by SIGHUP alone.
#[cfg(unix)]
#[tokio::test]
async fn sighup_puts_a_new_schema_file_in_force_in_eye_dev() {
    let data = tempfile::tempdir().unwrap();
    let schemas = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["dev", "--data-dir"])
        .arg(data.path())
        .env("EYE_API_ADDR", "127.0.0.1:0")
        .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .env("EYE_SCHEMA_DIR", schemas.path())
        .env_remove("EYE_JWT_SECRET")
        .env_remove("EYE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Stopped(child);
    // The banner is read on a thread of its own, so that an `eye dev` that never prints it
    // fails the test instead of hanging it.
    let (banner, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if banner.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut api, mut token) = (None, None);
    while api.is_none() || token.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("eye dev printed no banner within 60 s"),
            Err(RecvTimeoutError::Disconnected) => panic!("the banner ended early"),
        };
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["api", url, ..] => api = Some(url.to_string()),
            ["token", t] => token = Some(t.to_string()),
            _ => {}
        }
    }
    // The rest of the output is read and dropped, so that `eye dev` never blocks on it.
    std::thread::spawn(move || lines.into_iter().for_each(drop));
    let (api, token) = (api.unwrap(), token.unwrap());
    let database = format!("sqlite://{}?mode=rw", data.path().join("eye.db").display());
    let client = reqwest::Client::new();
    let body = json!({"session_id": uuid::Uuid::new_v4(), "category": "checkout",
        "name": "order", "data": {"total": -1}, "timestamp": "2021-01-01 00:00:00"});
    let rejected = || async {
        let db = eye_cli::stack::connect(&database).await.unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT (SELECT COUNT(*) FROM events) AS stored, \
                 (SELECT COUNT(*) FROM rejected_events) AS rejected",
            ))
            .await
            .unwrap()
            .unwrap();
        (
            row.try_get::<i64>("", "stored").unwrap(),
            row.try_get::<i64>("", "rejected").unwrap(),
        )
    };
    let post = || async {
        let response = client
            .post(&api)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    };
    post().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rejected().await != (1, 0) {
        assert!(Instant::now() < deadline, "the first event was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    std::fs::write(
        schemas.path().join("order.json"),
        json!({"x-eye-category": "checkout", "x-eye-name": "order",
            "properties": {"total": {"minimum": 0}}})
        .to_string(),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    // The reload is asynchronous: post until an event is rejected.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = rejected().await;
        post().await;
        let deadline_one = Instant::now() + Duration::from_secs(30);
        let after = loop {
            let now = rejected().await;
            if now.0 + now.1 > before.0 + before.1 {
                break now;
            }
            assert!(Instant::now() < deadline_one, "an event was lost");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if after.1 > before.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not put the schema in force"
        );
    }
    let mut child = child;
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP ended eye dev"
    );
}

/// Ends `eye dev` however the test ends.
struct Stopped(std::process::Child);

impl Stopped {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
