//! A request's id reaches the worker: its log lines for the request's events carry it. Read from
//! the real binaries' output: `eye dev` on SQLite, `eye api` + `eye worker` on PostgreSQL and
//! RabbitMQ (JSON logs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const SENT: &str = "checkout-42.retry:1";
const SECRET: &str = "request-id-test-secret-request-id-test";
/// Debug for the worker's per-envelope line and the api's refusals.
const RUST_LOG: &str = "info,eye_worker=debug,eye_http=debug";

/// A started binary whose stdout lines arrive on a channel; interrupted when dropped.
struct Running {
    child: Child,
    lines: Receiver<String>,
}

impl Running {
    fn start(command: &mut Command) -> Self {
        let mut child = command
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .env("RUST_LOG", RUST_LOG)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (send, lines) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first line (from now on) for which `wanted` holds, within 30 s.
    fn wait_for<T>(&self, what: &str, mut wanted: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if let Some(found) = wanted(&line) {
                return found;
            }
            seen.push(line);
        }
        panic!("no line {what} within 30 s; saw:\n{}", seen.join("\n"));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eye() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eye"))
}

/// One valid event and one from the future, which the worker rejects.
fn events() -> Value {
    let now = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let session = uuid::Uuid::new_v4();
    let event = |timestamp: &str| {
        json!({"session_id": session, "category": "page interaction", "name": "pageview",
               "data": {"host": "example.com", "path": "/"}, "timestamp": timestamp})
    };
    json!([event(&now), event("2999-01-01 00:00:00")])
}

async fn post(api: &str, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{api}/v1/events"))
        .bearer_auth(token)
        .header("X-Request-Id", SENT)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Posts one accepted and one refused request with [`SENT`], and checks what the logs say.
async fn the_logs_follow_the_request(api: &str, token: &str, api_logs: &Running, worker: &Running) {
    let refused = post(api, token, &json!({"session_id": "nope"})).await;
    assert_eq!(refused.status(), 400);
    api_logs.wait_for("of the api refusing the request with its id", |line| {
        (line.contains("request refused") && line.contains(SENT) && line.contains("invalid_events"))
            .then_some(())
    });

    let accepted = post(api, token, &events()).await;
    assert_eq!(accepted.status(), 202);
    assert_eq!(accepted.headers()["x-request-id"], SENT);
    let (mut stored, mut rejected) = (None, None);
    while stored.is_none() || rejected.is_none() {
        let line = worker.wait_for("of the worker naming the request", |line| {
            line.contains(SENT).then(|| line.to_owned())
        });
        if line.contains("envelope stored") {
            stored = Some(line);
        } else if line.contains("event rejected") {
            rejected = Some(line);
        }
    }
    let (stored, rejected) = (stored.unwrap(), rejected.unwrap());
    for (line, level, fields) in [
        (
            &stored,
            "DEBUG",
            &[("request_id", SENT), ("events", "2"), ("rejected", "1")][..],
        ),
        (
            &rejected,
            "INFO",
            &[("request_id", SENT), ("code", "timestamp_in_future")][..],
        ),
    ] {
        assert_eq!(field(line, "level").as_deref(), Some(level), "{line}");
        for (name, value) in fields {
            assert_eq!(
                field(line, name).as_deref(),
                Some(*value),
                "{name} in {line}"
            );
        }
    }
    // Ids and codes only: never the event's data.
    assert!(!rejected.contains("example.com"), "{rejected}");
}

/// A field of a log line: a JSON line's own field, or `name=value` of a pretty line (whose
/// level is its second word).
fn field(line: &str, name: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<Value>(line) {
        return match &json[name] {
            Value::String(text) => Some(text.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    if name == "level" {
        return line.split_whitespace().nth(1).map(str::to_owned);
    }
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .map(|value| value.trim_matches('"').to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_log_lines_for_a_requests_events_carry_its_id_on_sqlite() {
    let data_dir = tempfile::tempdir().unwrap();
    let dev = Running::start(
        eye()
            .args(["dev", "--data-dir"])
            .arg(data_dir.path())
            .env("EYE_API_ADDR", "127.0.0.1:0")
            .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
            .env_remove("EYE_JWT_SECRET")
            .env_remove("EYE_DATABASE_URL"),
    );
    let api = dev.wait_for("with the api's address", |line| {
        let url = line.split_whitespace().collect::<Vec<_>>();
        match url.as_slice() {
            ["api", url, ..] => Some(url.trim_end_matches("/v1/events").to_owned()),
            _ => None,
        }
    });
    let token = dev.wait_for("with the token", |line| {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["token", token] => Some((*token).to_owned()),
            _ => None,
        }
    });
    // One process: the api's and the worker's lines share one output.
    the_logs_follow_the_request(&api, &token, &dev, &dev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_log_lines_for_a_requests_events_carry_its_id_on_postgres() {
    let (Ok(admin_url), Ok(amqp_url)) = (
        std::env::var("EYE_TEST_DATABASE_URL"),
        std::env::var("EYE_TEST_AMQP_URL"),
    ) else {
        assert!(
            std::env::var("EYE_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "EYE_REQUIRE_SERVICES=1 but EYE_TEST_DATABASE_URL or EYE_TEST_AMQP_URL is not set"
        );
        eprintln!("skipping the PostgreSQL variant: EYE_TEST_DATABASE_URL is not set");
        return;
    };
    let services = Services::create(&admin_url, &amqp_url).await;
    Services::run(services.eye(&["migrate"]));
    let token = Services::run(services.eye(&["token", "create", "--app", "request-ids"]));
    let mut api = services.eye(&["api"]);
    api.env("EYE_API_ADDR", "127.0.0.1:0");
    let api = Running::start(&mut api);
    let worker = Running::start(&mut services.eye(&["worker"]));
    let port = api.wait_for("saying where the api listens", |line| {
        let line: Value = serde_json::from_str(line).ok()?;
        (line["message"] == "api listening").then(|| line["port"].as_u64())?
    });
    worker.wait_for("saying the worker started", |line| {
        line.contains("worker started").then_some(())
    });
    let api_url = format!("http://127.0.0.1:{port}");
    the_logs_follow_the_request(&api_url, token.trim(), &api, &worker).await;
    drop((api, worker));
    services.drop().await;
}

/// A database and a queue prefix of this test's own, removed at the end.
struct Services {
    admin_url: String,
    database: String,
    url: String,
    amqp_url: String,
    prefix: String,
}

impl Services {
    async fn create(admin_url: &str, amqp_url: &str) -> Self {
        let database = format!("eye_test_{}", uuid::Uuid::new_v4().simple());
        let admin = eye_cli::stack::connect(admin_url).await.unwrap();
        admin
            .execute_unprepared(&format!(r#"CREATE DATABASE "{database}""#))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Self {
            admin_url: admin_url.to_owned(),
            url: format!("{base}/{database}"),
            database,
            amqp_url: amqp_url.to_owned(),
            prefix: format!("eye-test-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn eye(&self, args: &[&str]) -> Command {
        let mut command = eye();
        command
            .args(args)
            .env("EYE_DATABASE_URL", &self.url)
            .env("EYE_JWT_SECRET", SECRET)
            .env("EYE_LOG_FORMAT", "json")
            .env("EYE_QUEUE_PREFIX", &self.prefix)
            .env_remove("EYE_AMQP_MANAGEMENT_URL");
        if args != ["migrate"] {
            command.env("EYE_AMQP_URL", &self.amqp_url);
        } else {
            command.env_remove("EYE_AMQP_URL");
        }
        command
    }

    /// Runs a command to its end; its stdout.
    fn run(mut command: Command) -> String {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    async fn drop(self) {
        let admin = eye_cli::stack::connect(&self.admin_url).await.unwrap();
        let _ = admin
            .execute_unprepared(&format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.database
            ))
            .await;
        eye_cli::broker::remove_topology(&self.amqp_url, &self.prefix)
            .await
            .unwrap();
    }
}
