//! `eye tail` and `eye report`, run as the real binary against a running The Eye: tail
//! prints an event posted after it started, one a line, and ends cleanly on Ctrl-C; report
//! starts a job, waits for it and writes its CSV, or says why it could not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eye_cli::metrics::Registries;
use eye_cli::stack::{self, Queue, Running};
use eye_core::Settings;
use eye_core::token::{Scope, TokenKeys};
use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};
use secrecy::SecretString;
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);
const SECRET: &str = "tail-test-secret-tail-test-secret-tail";

/// Api, admin and a worker in this process, on SQLite and the in-process queue, or on
/// PostgreSQL and RabbitMQ.
struct Stack {
    running: Option<Running>,
    api: String,
    admin: String,
    write: String,
    read: String,
    _dir: tempfile::TempDir,
    /// The PostgreSQL server's URL and the database to drop.
    postgres: Option<(String, String)>,
    /// The RabbitMQ names' prefix, whose queues and exchanges are deleted at the end.
    prefix: Option<String>,
    db: sea_orm::DatabaseConnection,
    queue: Queue,
    settings: Settings,
}

impl Stack {
    async fn embedded() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
        let settings = settings(&url);
        let queue = Queue::memory(&settings);
        Self::start(settings, queue, dir, None).await
    }

    async fn services() -> Option<Self> {
        let (Ok(database), Ok(amqp)) = (
            std::env::var("EYE_TEST_DATABASE_URL"),
            std::env::var("EYE_TEST_AMQP_URL"),
        ) else {
            assert!(
                std::env::var("EYE_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "EYE_REQUIRE_SERVICES=1 but EYE_TEST_DATABASE_URL or EYE_TEST_AMQP_URL is not set"
            );
            eprintln!("skipping the PostgreSQL + RabbitMQ variant: no services configured");
            return None;
        };
        let name = format!("eye_test_{}", uuid::Uuid::new_v4().simple());
        let server = stack::connect(&database).await.unwrap();
        server
            .execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#))
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(&database).unwrap();
        url.set_path(&name);
        let mut settings = settings(url.as_str());
        settings.amqp_url = Some(SecretString::from(amqp));
        settings.queue_prefix = format!("eye-test-{}", uuid::Uuid::new_v4().simple());
        let queue = Queue::from_settings(&settings).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = settings.queue_prefix.clone();
        let mut stack = Self::start(settings, queue, dir, Some((database, name))).await;
        stack.prefix = Some(prefix);
        Some(stack)
    }

    async fn start(
        settings: Settings,
        queue: Queue,
        dir: tempfile::TempDir,
        postgres: Option<(String, String)>,
    ) -> Self {
        let url = settings.database_url().unwrap().to_owned();
        let db = stack::connect(&url).await.unwrap();
        stack::migrate(&db).await.unwrap();
        let keys = TokenKeys::new(SECRET.as_bytes());
        let issue = |scope: Scope| {
            let (db, keys) = (db.clone(), keys.clone());
            async move {
                eye_entity::tokens::issue(
                    &db,
                    &keys,
                    "shop",
                    HashSet::from([scope]),
                    chrono::Duration::hours(1),
                )
                .await
                .unwrap()
                .jwt
            }
        };
        let (write, read) = (
            issue(Scope::EventsWrite).await,
            issue(Scope::EventsRead).await,
        );
        let metrics = Registries::separate(&settings);
        let running = stack::start(&settings, &db, &queue, 1, &metrics)
            .await
            .unwrap();
        Self {
            api: format!("http://127.0.0.1:{}", running.api_port),
            admin: format!("http://127.0.0.1:{}", running.admin_port),
            running: Some(running),
            write,
            read,
            _dir: dir,
            postgres,
            prefix: None,
            db,
            queue,
            settings,
        }
    }

    async fn post(&self, body: &Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/events", self.api))
            .bearer_auth(&self.write)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }

    /// Waits until `n` events are stored (and counted: in the same transaction).
    async fn wait_for_stored(&self, n: u64) {
        let until = Instant::now() + 10 * SECOND;
        loop {
            let stored = eye_entity::events::Entity::find()
                .count(&self.db)
                .await
                .unwrap();
            if stored == n {
                return;
            }
            assert!(Instant::now() < until, "{stored} of {n} events stored");
            tokio::time::sleep(SECOND / 50).await;
        }
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        if let Some(prefix) = self.prefix.take() {
            let url = std::env::var("EYE_TEST_AMQP_URL").unwrap();
            eye_cli::broker::remove_topology(&url, &prefix)
                .await
                .unwrap();
        }
        if let Some((server, name)) = self.postgres.take() {
            let server = stack::connect(&server).await.unwrap();
            let _ = server
                .execute_unprepared(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                .await;
        }
    }
}

fn settings(database_url: &str) -> Settings {
    Settings {
        database_url: Some(SecretString::from(database_url.to_owned())),
        jwt_secret: Some(SecretString::from(SECRET)),
        api_addr: "127.0.0.1:0".into(),
        admin_addr: "127.0.0.1:0".into(),
        worker_metrics_addr: "127.0.0.1:0".into(),
        ..Settings::default()
    }
}

/// `eye tail` with `args`, its stdout lines arriving on the channel once it is watching.
fn tail(stack: &Stack, args: &[&str]) -> (Child, Lines) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
        .arg("tail")
        .args(["--url", &stack.admin])
        .args(args)
        .env("EYE_TOKEN", &stack.read)
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says on stderr when it watches: only events stored after that are promised.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = stderr.next().expect("eye tail said nothing").unwrap();
    assert!(first.starts_with("watching "), "{first}");
    std::thread::spawn(move || stderr.for_each(drop));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    (child, Lines(rx))
}

/// What a child printed, a line at a time.
struct Lines(tokio::sync::mpsc::UnboundedReceiver<String>);

impl Lines {
    async fn within(&mut self, wait: Duration) -> Option<String> {
        tokio::time::timeout(wait, self.0.recv())
            .await
            .ok()
            .flatten()
    }
}

fn interrupt(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "eye tail exited with {exit}");
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn pageview(path: &str) -> Value {
    json!({"session_id": uuid::Uuid::new_v4(), "category": "page interaction",
        "name": "pageview", "data": {"host": "h", "path": path}, "timestamp": now()})
}

async fn tail_prints_an_event_posted_after_it_started_and_stops_cleanly_on_ctrl_c(stack: Stack) {
    let (mut text, mut lines) = tail(&stack, &[]);
    let (mut json, mut objects) = tail(&stack, &["--json", "--name", "pageview"]);
    let session = uuid::Uuid::new_v4();
    let click = json!({"session_id": session, "category": "page interaction", "name": "cta click",
        "data": {"host": "h", "path": "/", "element": "buy"}, "timestamp": now()});
    let posted = Instant::now();
    stack.post(&json!([click, pageview("/tailed")])).await;

    let first = lines.within(SECOND).await.expect("no line within a second");
    eprintln!("posted to printed by eye tail: {:?}", posted.elapsed());
    assert!(
        first.contains("  shop  page interaction/cta click  "),
        "{first}"
    );
    assert!(first.contains(&session.to_string()), "{first}");
    let second = lines.within(SECOND).await.unwrap();
    assert!(second.contains("/tailed"), "{second}");

    // `--json`: one object a line, the filter leaving the click out.
    let object: Value = serde_json::from_str(&objects.within(SECOND).await.unwrap()).unwrap();
    assert_eq!(object["name"], "pageview");
    assert_eq!(object["application"], "shop");
    assert_eq!(object["data"], r#"{"host":"h","path":"/tailed"}"#);

    // A rejected event prints marked.
    let mut late = pageview("/late");
    late["timestamp"] = json!("2999-01-01 00:00:00");
    stack.post(&json!([late])).await;
    let marked = lines.within(SECOND).await.unwrap();
    assert!(
        marked.ends_with("REJECTED: timestamp_in_future"),
        "{marked}"
    );

    interrupt(&mut text);
    interrupt(&mut json);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_events_as_they_are_stored_on_sqlite_in_process() {
    tail_prints_an_event_posted_after_it_started_and_stops_cleanly_on_ctrl_c(
        Stack::embedded().await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_events_as_they_are_stored_on_postgres_rabbitmq() {
    if let Some(stack) = Stack::services().await {
        tail_prints_an_event_posted_after_it_started_and_stops_cleanly_on_ctrl_c(stack).await;
    }
}

async fn tail_trends_prints_each_published_minute(stack: Stack) {
    let (mut text, mut lines) = tail(&stack, &["--trends"]);
    let (mut json, mut objects) = tail(&stack, &["--trends", "--json"]);
    let minute = eye_entity::rollups::minute_of(chrono::Utc::now());
    let at = minute.format("%Y-%m-%d %H:%M:%S").to_string();
    let view = |path: &str| {
        let mut event = pageview(path);
        event["timestamp"] = json!(at);
        event
    };
    stack
        .post(&json!([view("/a"), view("/a"), view("/b")]))
        .await;
    stack.wait_for_stored(3).await;
    // Offered now rather than 10 s after the minute: the worker's own publisher is behind it.
    let runner = eye_worker::trends::TrendRunner::new(
        stack.db.clone(),
        stack.queue.trend_publisher(&stack.settings),
    );
    assert!(matches!(
        runner.offer(minute).await.unwrap(),
        eye_worker::trends::Outcome::Published(_)
    ));
    let shown = minute.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The worker's own publisher may print the minute before meanwhile: those lines are left.
    let mut printed = Vec::new();
    while printed.len() < 3 {
        let line = lines
            .within(5 * SECOND)
            .await
            .expect("a line per type and page");
        if line.starts_with(&shown) {
            printed.push(line);
        }
    }
    assert_eq!(
        printed,
        [
            format!("{shown}  shop  page interaction/pageview  3"),
            format!("{shown}  shop  page  h/a  2"),
            format!("{shown}  shop  page  h/b  1"),
        ]
    );
    let object = loop {
        let object: Value =
            serde_json::from_str(&objects.within(5 * SECOND).await.unwrap()).unwrap();
        if object["minute"] == shown {
            break object;
        }
    };
    assert_eq!(object["minute"], shown);
    assert_eq!(object["counts"][0]["application"], "shop");
    assert_eq!(object["counts"][0]["count"], 3);
    assert_eq!(object["top_pages"].as_array().unwrap().len(), 2);
    interrupt(&mut text);
    interrupt(&mut json);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_trends_prints_each_published_minute_on_sqlite_in_process() {
    tail_trends_prints_each_published_minute(Stack::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_trends_prints_each_published_minute_on_postgres_rabbitmq() {
    if let Some(stack) = Stack::services().await {
        tail_trends_prints_each_published_minute(stack).await;
    }
}

#[test]
fn tail_trends_refuses_the_events_filters() {
    let output = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["tail", "--trends", "--category", "ui", "--token", "t"])
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--category"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_without_a_read_token_says_why_and_fails() {
    let stack = Stack::embedded().await;
    let output = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["tail", "--url", &stack.admin, "--token", &stack.write])
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("403"), "{stderr}");
    stack.stop().await;
}

/// `eye report` with `args` against the stack, as its read token.
fn report(stack: &Stack, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_eye"))
        .arg("report")
        .args(args)
        .args(["--url", &stack.admin])
        .env("EYE_TOKEN", &stack.read)
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .output()
        .unwrap()
}

async fn report_waits_for_its_job_and_writes_the_csv(stack: Stack) {
    stack
        .post(&json!([pageview("/a"), pageview("/b"), pageview("/c")]))
        .await;
    stack.wait_for_stored(3).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.csv");
    let args = [
        "create",
        "--kind",
        "events_by_type",
        "--window",
        "last_hour",
        "--wait",
    ];
    let output = report(
        &stack,
        &[&args[..], &["-o", file.to_str().unwrap()]].concat(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("complete: 1 rows"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "application,category,name,events\r\nshop,page interaction,pageview,3\r\n"
    );

    // Without --wait it prints the job; status and download find it by id.
    let output = report(&stack, &["create", "--kind", "sessions"]);
    assert!(output.status.success());
    let job: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(job["status"], "running");
    let id = job["id"].as_str().unwrap();
    let until = Instant::now() + 10 * SECOND;
    loop {
        let output = report(&stack, &["status", id]);
        let state: Value = serde_json::from_slice(&output.stdout).unwrap();
        if state["status"] == "complete" {
            assert_eq!(state["rows"], 3);
            break;
        }
        assert!(Instant::now() < until, "{state}");
        tokio::time::sleep(SECOND / 10).await;
    }
    let output = report(&stack, &["download", id]);
    assert!(output.status.success());
    let csv = String::from_utf8(output.stdout).unwrap();
    assert!(
        csv.starts_with("application,session_id,first_seen,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 1 + 3);

    // A request the admin refuses is an error that says why.
    let output = report(
        &stack,
        &["create", "--kind", "sessions", "--category", "x", "--wait"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("neither `category` nor `name`"), "{stderr}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_a_csv_on_sqlite_in_process() {
    report_waits_for_its_job_and_writes_the_csv(Stack::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_writes_a_csv_on_postgres_rabbitmq() {
    if let Some(stack) = Stack::services().await {
        report_waits_for_its_job_and_writes_the_csv(stack).await;
    }
}
