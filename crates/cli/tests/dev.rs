//! `eye dev`: the first minute of a new user, run as the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

mod support;

struct Dev {
    child: Child,
    api: String,
    token: String,
    /// The admin's address and the password printed for its `admin` user.
    admin: String,
    password: String,
}

impl Dev {
    /// Posts `body` to the api with the printed token.
    async fn post(
        &self,
        client: &reqwest::Client,
        body: &Value,
    ) -> reqwest::Result<reqwest::Response> {
        client
            .post(format!("{}/v1/events", self.api))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
    }
}

/// Starts `eye dev` on `data_dir` and reads the api address and token from its banner.
fn start(data_dir: &Path) -> Dev {
    start_with(data_dir, &[])
}

fn start_with(data_dir: &Path, env: &[(&str, &str)]) -> Dev {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
        .envs(env.iter().copied())
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .env("EYE_API_ADDR", "127.0.0.1:0")
        .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .env_remove("EYE_JWT_SECRET")
        .env_remove("EYE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut token, mut admin) = (None, None, None);
    while api.is_none() || token.is_none() || admin.is_none() {
        let line = lines.next().expect("the banner ended early").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["api", url, ..] => api = Some(url.trim_end_matches("/v1/events").to_owned()),
            ["token", t] => token = Some((*t).to_owned()),
            ["admin", url, "user", "admin", "password", password] => {
                admin = Some((url.trim_end_matches('/').to_owned(), (*password).to_owned()));
            }
            _ => {}
        }
    }
    let (admin, password) = admin.unwrap();
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Dev {
        child,
        api: api.unwrap(),
        token: token.unwrap(),
        admin,
        password,
    }
}

fn interrupt(dev: &mut Dev) {
    let status = Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = dev.child.wait().unwrap();
    assert!(exit.success(), "eye dev exited with {exit}");
}

async fn count_events(data_dir: &Path) -> i64 {
    let url = format!("sqlite://{}", data_dir.join("eye.db").display());
    let db = eye_cli::stack::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM events",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

fn batch(n: usize) -> Value {
    let now = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let session = uuid::Uuid::new_v4();
    Value::Array(
        (0..n)
            .map(|i| json!({"session_id": session, "category": "page interaction", "name": "pageview",
                            "data": {"host": "example.com", "path": format!("/{i}")}, "timestamp": now}))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stores_every_accepted_event_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    // One message per transaction, so that the worker falls behind and there is a backlog;
    // 50,000 events at once are past the default rate limit.
    let mut dev = start_with(
        dir.path(),
        &[
            ("EYE_WORKER_BATCH_MESSAGES", "1"),
            ("EYE_RATE_LIMIT", "1000000/s"),
            ("EYE_RATE_LIMIT_BURST", "1000000"),
        ],
    );
    let client = reqwest::Client::new();
    let bodies: Vec<Value> = (0..100).map(|_| batch(500)).collect();
    let posts = bodies.iter().map(|body| dev.post(&client, body));
    let responses = futures_util::future::join_all(posts).await;
    let accepted = responses
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status() == 202))
        .count();
    assert_eq!(accepted, 100);
    let before = count_events(dir.path()).await;
    interrupt(&mut dev);
    assert!(
        before < 100 * 500,
        "no backlog when stopping; the test would prove nothing"
    );
    assert_eq!(count_events(dir.path()).await, 100 * 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_reuses_the_data_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut first = start(dir.path());
    let response = first.post(&client, &batch(3)).await.unwrap();
    assert_eq!(response.status(), 202);
    interrupt(&mut first);

    let mut second = start(dir.path());
    assert_eq!(
        second.token, first.token,
        "the printed token stays valid across restarts"
    );
    let response = second.post(&client, &batch(2)).await.unwrap();
    assert_eq!(response.status(), 202);
    interrupt(&mut second);
    assert_eq!(count_events(dir.path()).await, 5);
}

/// The value of the series `series` (name and labels exactly as exposed) in a scrape.
fn series_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .map(|(_, value)| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_port_serves_the_metrics_of_every_service_of_eye_dev() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut dev = start(dir.path());
    let response = dev.post(&client, &batch(3)).await.unwrap();
    assert_eq!(response.status(), 202);
    let stored = r#"eye_worker_events_stored_total{application="dev"}"#;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = client
            .get(format!("{}/metrics", dev.api))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if series_value(&text, stored) == Some(3.0) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    interrupt(&mut dev);
    assert_eq!(series_value(&text, stored), Some(3.0), "{text}");
    assert_eq!(
        series_value(&text, r#"eye_api_events_accepted_total{application="dev"}"#),
        Some(3.0)
    );
}

/// Logs in with the printed password and returns the events page once `n` events show.
async fn admin_events_page(dev: &Dev, n: usize) -> String {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let fields = [
        ("username", "admin"),
        ("password", dev.password.as_str()),
        ("next", "/events"),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut page = support::admin_login(&client, &dev.admin, &fields)
        .await
        .text()
        .await
        .unwrap();
    while page.matches("class=\"event-link\"").count() < n {
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = client
            .get(format!("{}/events", dev.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    }
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_admin_login_shows_the_events_sent_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path());
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", first.api))
        .bearer_auth(&first.token)
        .json(&batch(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let page = admin_events_page(&first, 3).await;
    assert!(page.contains("Log out"), "logged in");
    interrupt(&mut first);

    let mut second = start(dir.path());
    assert_eq!(second.password, first.password, "the same login next time");
    admin_events_page(&second, 3).await;
    interrupt(&mut second);
}

/// A file system that fills up: the database cannot grow past `limit_kib`. The limit is the
/// process's largest file size (`ulimit -f`), with the signal for passing it ignored so that
/// writes fail as they would on a full disk.
fn start_on_a_small_disk(
    data_dir: &Path,
    limit_kib: u64,
) -> (Dev, std::thread::JoinHandle<String>) {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(
            r#"trap "" XFSZ; ulimit -f {limit_kib}; exec "$0" "$@""#
        ))
        .arg(env!("CARGO_BIN_EXE_eye"))
        .args(["dev", "--data-dir"])
        .arg(data_dir)
        .env("EYE_API_ADDR", "127.0.0.1:0")
        .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .env("EYE_DRAIN_TIMEOUT_SECS", "2")
        .env_remove("EYE_JWT_SECRET")
        .env_remove("EYE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    // Read as it comes, so that a full pipe never blocks the process while it logs errors.
    let mut pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut said = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut said);
        said
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut token) = (None, None);
    while api.is_none() || token.is_none() {
        let line = lines.next().expect("the banner ended early").unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["api", url, ..] => api = Some(url.trim_end_matches("/v1/events").to_owned()),
            ["token", t] => token = Some((*t).to_owned()),
            _ => {}
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let dev = Dev {
        child,
        api: api.unwrap(),
        token: token.unwrap(),
        admin: String::new(),
        password: String::new(),
    };
    (dev, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_at_ctrl_c_is_reported_as_a_loss_with_an_error_exit() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the schema, the dev application and a little more; not for what follows.
    let (mut dev, stderr) = start_on_a_small_disk(dir.path(), 2 * 1024);
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for _ in 0..60 {
        let response = dev.post(&client, &batch(500)).await.unwrap();
        if response.status() == 202 {
            accepted += 500;
        }
    }
    assert!(
        accepted >= 20_000,
        "the in-process queue accepts while the disk is full"
    );
    Command::new("kill")
        .args(["-INT", &dev.child.id().to_string()])
        .status()
        .unwrap();
    let exit = dev.child.wait().unwrap();
    let said = stderr.join().unwrap();
    assert!(!exit.success(), "a loss is an error exit: {said}");
    assert!(
        said.contains("could not be stored") && said.contains("are lost"),
        "{said}"
    );
    let stored = count_events(dir.path()).await;
    assert!(
        (stored as usize) < accepted,
        "{stored} of {accepted} stored: the disk was full"
    );
}
