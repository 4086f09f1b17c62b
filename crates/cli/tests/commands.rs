//! The operator commands, run as the real `eye` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use eye_core::token::{Scope, TokenKeys};
use eye_migration::MigratorTrait;
use sea_orm::{ConnectionTrait, Statement};
use support::TestDb;

mod support;

const SECRET: &str = "command-test-secret-command-test-secret";

impl TestDb {
    fn eye(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_eye"))
            .args(args)
            .env("EYE_DATABASE_URL", &self.url)
            .env("EYE_JWT_SECRET", SECRET)
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .output()
            .unwrap()
    }

    fn eye_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
            .args(args)
            .env("EYE_DATABASE_URL", &self.url)
            .env("EYE_JWT_SECRET", SECRET)
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Starts `eye admin` on a free port; returns the child and the port it logged.
    fn spawn_admin(&self) -> (Child, u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_eye"))
            .arg("admin")
            .env("EYE_DATABASE_URL", &self.url)
            .env("EYE_JWT_SECRET", SECRET)
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
            .env("EYE_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("EYE_AMQP_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("eye admin stopped early").unwrap();
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["message"] == "admin listening" {
                break u16::try_from(log["port"].as_u64().unwrap()).unwrap();
            }
        };
        // Keep reading so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (child, port)
    }

    /// Stores one event of `application` (created if new) as a worker would.
    async fn store_event(&self, application: &str, path: &str) {
        use eye_worker::store::{self, EventRow, Row};
        let db = eye_cli::stack::connect(&self.url).await.unwrap();
        let app = eye_entity::tokens::ensure_application(&db, application)
            .await
            .unwrap();
        let now = eye_core::event::now();
        let event = EventRow {
            application_id: app.id,
            id: uuid::Uuid::now_v7(),
            session_id: uuid::Uuid::new_v4(),
            category: "page interaction".into(),
            name: "pageview".into(),
            data: serde_json::json!({"host": "h", "path": path}).to_string(),
            timestamp: now,
            source: None,
            received_at: now,
        };
        store::write(&db, &[Row::Event(event)]).await.unwrap();
    }

    async fn tables(&self) -> Vec<String> {
        let db = eye_cli::stack::connect(&self.url).await.unwrap();
        let sql = match db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations' ORDER BY name"
            }
            _ => {
                // Tables, not their partitions.
                "SELECT relname::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
                 AND relname <> 'seaql_migrations' ORDER BY relname"
            }
        };
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.try_get::<String>("", "name").unwrap())
            .collect()
    }
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

async fn migrate_creates_the_schema_and_rollback_undoes_it(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    assert_eq!(
        db.tables().await,
        [
            "admin_sessions",
            "admin_users",
            "api_tokens",
            "applications",
            "dead_letters",
            "event_counts",
            "events",
            "rate_limited",
            "rejected_events",
            "report_chunks",
            "reports",
            "schema_reloads",
            "sessions",
            "trend_marks"
        ]
    );
    stdout(&db.eye(&["migrate"])); // running it again is harmless
    for _ in 0..eye_migration::Migrator::migrations().len() {
        stdout(&db.eye(&["migrate", "--rollback"]));
    }
    assert!(db.tables().await.is_empty(), "{:?}", db.tables().await);
    stdout(&db.eye(&["migrate"]));
}

async fn tokens_are_created_listed_and_revoked(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    let created = db.eye(&[
        "token",
        "create",
        "--app",
        "shop",
        "--scopes",
        "events:write,events:read",
        "--expires-in",
        "30d",
    ]);
    let jwt = stdout(&created);
    let jwt = jwt.strip_suffix('\n').expect("one line");
    assert!(
        !jwt.contains(char::is_whitespace),
        "stdout holds the token alone: {jwt:?}"
    );
    let claims = TokenKeys::new(SECRET.as_bytes())
        .verify(jwt)
        .expect("a valid token");
    assert_eq!(
        claims.scopes,
        [Scope::EventsWrite, Scope::EventsRead].into()
    );
    let days = (claims.exp - claims.iat) / 86_400;
    assert_eq!(days, 30);

    let listed = stdout(&db.eye(&["token", "list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&claims.jti.to_string()))
        .expect("the token is listed");
    assert!(
        row.contains("shop") && row.contains("events:read,events:write") && row.ends_with("active"),
        "{row}"
    );

    stdout(&db.eye(&["token", "revoke", &claims.jti.to_string()]));
    let listed = stdout(&db.eye(&["token", "list"]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&claims.jti.to_string()) && l.ends_with("revoked")),
        "{listed}"
    );

    let missing = db.eye(&["token", "revoke", &uuid::Uuid::new_v4().to_string()]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no token has the id"));
}

async fn admin_users_are_created_from_stdin_once_each(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    let create = ["user", "create", "--username", "ana", "--password-stdin"];
    let created = db.eye_with_input(&create, "a long enough password\n");
    stdout(&created);
    assert!(String::from_utf8_lossy(&created.stderr).contains("created `ana`"));
    let again = db.eye_with_input(&create, "another long password\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let short = ["user", "create", "--username", "bo", "--password-stdin"];
    let weak = db.eye_with_input(&short, "short\n");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 10 characters"));
}

/// A dead letter as a worker would have written it.
async fn dead_letter(db: &TestDb, body: &str, reason: &str, count: i64) -> uuid::Uuid {
    use sea_orm::{ActiveModelTrait, Set};
    let conn = eye_cli::stack::connect(&db.url).await.unwrap();
    let id = uuid::Uuid::now_v7();
    eye_entity::dead_letters::ActiveModel {
        id: Set(id),
        digest: Set(id.simple().to_string()),
        body: Set(body.as_bytes().to_vec()),
        reason: Set(reason.into()),
        headers: Set("{}".into()),
        first_dead_at: Set(chrono::Utc::now()),
        last_dead_at: Set(chrono::Utc::now()),
        count: Set(count),
    }
    .insert(&conn)
    .await
    .unwrap();
    id
}

async fn dead_letters_are_listed_and_discarded_by_id(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    let empty = db.eye(&["dead", "list"]);
    assert_eq!(stdout(&empty).lines().count(), 1, "a header alone");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("0 dead letters"));

    let old = dead_letter(db, r#"{"v":2}"#, "envelope version 2 is not supported", 3).await;
    let new = dead_letter(db, "not json", "undecodable message: expected value", 1).await;
    let listed = stdout(&db.eye(&["dead", "list"]));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[1].starts_with(&new.to_string()),
        "newest first: {listed}"
    );
    assert!(
        lines[2].starts_with(&old.to_string())
            && lines[2].contains(" 3 ")
            && lines[2].contains(" 7 ")
            && lines[2].ends_with("envelope version 2 is not supported"),
        "{listed}"
    );
    let limited = db.eye(&["dead", "list", "--limit", "1"]);
    assert_eq!(stdout(&limited).lines().count(), 2);
    assert!(String::from_utf8_lossy(&limited.stderr).contains("newest 1 of 2"));

    let unknown = uuid::Uuid::new_v4();
    let refused = db.eye(&["dead", "discard", &old.to_string(), &unknown.to_string()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("no dead letter has the id {unknown}")),
        "{stderr}"
    );
    assert_eq!(
        stdout(&db.eye(&["dead", "list"])).lines().count(),
        3,
        "nothing was discarded"
    );

    let discarded = db.eye(&["dead", "discard", &old.to_string()]);
    stdout(&discarded);
    assert!(String::from_utf8_lossy(&discarded.stderr).contains("discarded 1"));
    let listed = stdout(&db.eye(&["dead", "list"]));
    assert!(!listed.contains(&old.to_string()) && listed.contains(&new.to_string()));

    // Without a broker there is nothing to replay to: the message says where to go instead.
    let replay = db.eye(&["dead", "replay", &new.to_string()]);
    assert!(!replay.status.success());
    let stderr = String::from_utf8_lossy(&replay.stderr);
    assert!(
        stderr.contains("EYE_AMQP_URL") && stderr.contains("admin panel"),
        "{stderr}"
    );
    let neither = db.eye(&["dead", "replay"]);
    assert!(!neither.status.success(), "an id or --all is required");
}

#[tokio::test]
async fn dead_letters_are_listed_and_discarded_by_id_on_sqlite() {
    dead_letters_are_listed_and_discarded_by_id(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_discarded_by_id_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        dead_letters_are_listed_and_discarded_by_id(&db).await;
        db.drop().await;
    }
}

#[tokio::test]
async fn admin_users_are_created_from_stdin_once_each_on_sqlite() {
    admin_users_are_created_from_stdin_once_each(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn admin_users_are_created_from_stdin_once_each_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        admin_users_are_created_from_stdin_once_each(&db).await;
        db.drop().await;
    }
}

#[tokio::test]
async fn migrate_creates_the_schema_and_rollback_undoes_it_on_sqlite() {
    migrate_creates_the_schema_and_rollback_undoes_it(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn migrate_creates_the_schema_and_rollback_undoes_it_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        migrate_creates_the_schema_and_rollback_undoes_it(&db).await;
        db.drop().await;
    }
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_on_sqlite() {
    tokens_are_created_listed_and_revoked(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        tokens_are_created_listed_and_revoked(&db).await;
        db.drop().await;
    }
}

/// `eye token create --publishable --origin`: a key that only sends, listed with its origins,
/// and revoked like any token.
async fn publishable_keys_are_created_with_their_origins(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    let created = db.eye(&[
        "token",
        "create",
        "--app",
        "shop",
        "--publishable",
        "--origin",
        "https://shop.example/",
        "--origin",
        "http://localhost:3000,https://www.shop.example",
    ]);
    let key = stdout(&created).trim().to_owned();
    let said = String::from_utf8_lossy(&created.stderr).into_owned();
    assert!(said.contains("publishable key"), "{said}");
    assert!(
        said.contains("/eye.js"),
        "it says how to embed the key: {said}"
    );
    let claims = TokenKeys::new(SECRET.as_bytes()).verify(&key).unwrap();
    assert_eq!(claims.scopes, [Scope::EventsWrite].into());
    assert_eq!((claims.exp - claims.iat) / 86_400, 365, "a year by default");

    let listed = stdout(&db.eye(&["token", "list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&claims.jti.to_string()))
        .expect("the key is listed");
    assert!(
        row.contains("active")
            && row.ends_with("http://localhost:3000,https://shop.example,https://www.shop.example"),
        "{row}"
    );
    let secret = stdout(&db.eye(&["token", "create", "--app", "shop"]));
    let secret = TokenKeys::new(SECRET.as_bytes())
        .verify(secret.trim())
        .unwrap();
    let listed = stdout(&db.eye(&["token", "list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&secret.jti.to_string()))
        .unwrap();
    assert!(
        row.ends_with("active"),
        "a secret token lists no origins: {row}"
    );

    stdout(&db.eye(&["token", "revoke", &claims.jti.to_string()]));
    let listed = stdout(&db.eye(&["token", "list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(&claims.jti.to_string()))
        .unwrap();
    assert!(row.contains("revoked"), "{row}");
}

#[tokio::test]
async fn publishable_keys_are_created_with_their_origins_on_sqlite() {
    publishable_keys_are_created_with_their_origins(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn publishable_keys_are_created_with_their_origins_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        publishable_keys_are_created_with_their_origins(&db).await;
        db.drop().await;
    }
}

#[test]
fn publishable_and_origin_are_refused_without_each_other_or_with_a_bad_origin() {
    // Nothing listens there: bad input must be refused before anything is reached.
    let eye = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_eye"))
            .args(["token", "create", "--app", "shop"])
            .args(args)
            .env("EYE_DATABASE_URL", "postgres://eye@127.0.0.1:9/eye")
            .env("EYE_JWT_SECRET", SECRET)
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .output()
            .unwrap()
    };
    let cases: [(&[&str], &str); 8] = [
        (
            &["--publishable"],
            "--publishable needs at least one --origin",
        ),
        (&["--origin", "https://shop.example"], "--publishable"),
        (
            &["--publishable", "--origin", "https://shop.example/cart"],
            "has a path, query or fragment: an origin is only scheme://host[:port]",
        ),
        (
            &["--publishable", "--origin", "shop.example"],
            "`shop.example` is not an origin: write scheme://host[:port]",
        ),
        (
            &["--publishable", "--origin", "ftp://shop.example"],
            "scheme other than http or https",
        ),
        (
            &["--publishable", "--origin", "https://*.shop.example"],
            "not a DNS name or IP address",
        ),
        (
            &[
                "--publishable",
                "--origin",
                "https://shop.example",
                "--scopes",
                "events:read",
            ],
            "cannot be used with",
        ),
        (
            &[
                "--publishable",
                "--origin",
                "https://shop.example",
                "--all-applications",
            ],
            "cannot be used with",
        ),
    ];
    for (args, says) in cases {
        let output = eye(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("127.0.0.1:9"),
            "{args:?} tried to connect: {stderr}"
        );
    }
}

/// `eye app limit` and `eye app list`, and what `eye app limit` says to bad input.
async fn application_limits_are_set_listed_and_cleared(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    stdout(&db.eye(&["token", "create", "--app", "shop"]));
    stdout(&db.eye(&["token", "create", "--app", "blog"]));
    let row = |listed: &str, name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} is not listed: {listed}"))
            .to_owned()
    };
    let listed = stdout(&db.eye(&["app", "list"]));
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(
        row(&listed, "shop").contains("default: 10000/s, bursts of 20000"),
        "{listed}"
    );

    let set = db.eye(&[
        "app", "limit", "shop", "--rate", "2000/s", "--burst", "5000",
    ]);
    stdout(&set);
    assert!(
        String::from_utf8_lossy(&set.stderr).contains("2000/s, bursts of 5000"),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let listed = stdout(&db.eye(&["app", "list"]));
    let shop = row(&listed, "shop");
    assert!(
        shop.contains("2000/s, bursts of 5000") && !shop.contains("default"),
        "{shop}"
    );
    assert!(row(&listed, "blog").contains("default: "), "{listed}");
    let conn = eye_cli::stack::connect(&db.url).await.unwrap();
    let app = eye_entity::tokens::find_application(&conn, "shop")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        eye_entity::rate_limits::override_of(&app).map(|l| l.to_string()),
        Some("2000/s, bursts of 5000".to_owned())
    );

    stdout(&db.eye(&["app", "limit", "shop", "--default"]));
    let listed = stdout(&db.eye(&["app", "list"]));
    assert!(row(&listed, "shop").contains("default: "), "{listed}");

    let refused: [(&[&str], &str); 7] = [
        (
            &["app", "limit", "nobody", "--rate", "1/s", "--burst", "1"],
            "no application is named `nobody`",
        ),
        (
            &["app", "limit", "shop", "--rate", "0/s", "--burst", "5"],
            "lets nothing through",
        ),
        (
            &["app", "limit", "shop", "--rate", "100/s", "--burst", "0"],
            "a burst of 0",
        ),
        (
            &["app", "limit", "shop", "--rate", "lots", "--burst", "5"],
            "is not a rate",
        ),
        (
            &["app", "limit", "shop", "--rate", "5/day", "--burst", "5"],
            "is not a rate",
        ),
        (&["app", "limit", "shop", "--rate", "5/s"], "--burst"),
        (
            &["app", "limit", "shop", "--default", "--rate", "5/s"],
            "cannot be used with",
        ),
    ];
    for (args, says) in refused {
        let output = db.eye(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let listed = stdout(&db.eye(&["app", "list"]));
    assert!(row(&listed, "shop").contains("default: "), "{listed}");
}

#[tokio::test]
async fn application_limits_are_set_listed_and_cleared_on_sqlite() {
    application_limits_are_set_listed_and_cleared(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn application_limits_are_set_listed_and_cleared_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        application_limits_are_set_listed_and_cleared(&db).await;
        db.drop().await;
    }
}

#[test]
fn commands_that_need_a_secret_say_which_variable_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_eye"))
        .args(["token", "create", "--app", "shop"])
        .env(
            "EYE_DATABASE_URL",
            format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display()),
        )
        .env_remove("EYE_JWT_SECRET")
        .env("EYE_CONFIG", "/nonexistent/eye.toml")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("EYE_JWT_SECRET"), "{stderr}");
}

async fn token_create_all_applications_reads_every_application(db: &TestDb) {
    stdout(&db.eye(&["migrate"]));
    let created = db.eye(&[
        "token",
        "create",
        "--app",
        "analytics",
        "--all-applications",
    ]);
    let all = stdout(&created).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("every application"),
        "the command says what the token reads"
    );
    let claims = TokenKeys::new(SECRET.as_bytes()).verify(&all).unwrap();
    assert_eq!(
        claims.scopes,
        [Scope::EventsRead, Scope::EventsReadAll].into(),
        "a reader of every application, not a writer"
    );
    let own = stdout(&db.eye(&[
        "token",
        "create",
        "--app",
        "shop",
        "--scopes",
        "events:read",
    ]))
    .trim()
    .to_owned();
    db.store_event("shop", "/cart").await;
    db.store_event("blog", "/post").await;

    let (mut admin, port) = db.spawn_admin();
    let client = reqwest::Client::new();
    let paths = |token: &str| {
        let request = client
            .get(format!("http://127.0.0.1:{port}/api/v1/events"))
            .bearer_auth(token)
            .send();
        async move {
            let body: serde_json::Value = request.await.unwrap().json().await.unwrap();
            let mut paths: Vec<String> = body["events"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|e| e["data"]["path"].as_str().unwrap().to_owned())
                .collect();
            paths.sort();
            paths
        }
    };
    let (every, shop) = (paths(&all).await, paths(&own).await);
    admin.kill().unwrap();
    admin.wait().unwrap();
    assert_eq!(every, ["/cart", "/post"]);
    assert_eq!(shop, ["/cart"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_all_applications_reads_every_application_on_sqlite() {
    token_create_all_applications_reads_every_application(&TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_all_applications_reads_every_application_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        token_create_all_applications_reads_every_application(&db).await;
        db.drop().await;
    }
}

#[test]
fn services_refuse_an_example_secret_naming_jwt_secret() {
    for command in ["api", "admin"] {
        let output = Command::new(env!("CARGO_BIN_EXE_eye"))
            .arg(command)
            .env("EYE_JWT_SECRET", "change-me-to-32-or-more-random-bytes")
            // Nothing listens there: the secret must be refused before anything is reached.
            .env("EYE_DATABASE_URL", "postgres://eye@127.0.0.1:9/eye")
            .env("EYE_AMQP_URL", "amqp://eye:eye@127.0.0.1:9/%2f")
            .env("EYE_CONFIG", "/nonexistent/eye.toml")
            .output()
            .unwrap();
        assert!(!output.status.success(), "eye {command} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("jwt_secret is an example value"),
            "eye {command}: {stderr}"
        );
    }
}

#[test]
fn admin_and_dev_stop_at_start_on_a_wrong_admin_setting_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
    let data_dir = dir.path().join("dev");
    for (variable, value, message) in [
        (
            "EYE_ADMIN_TRUSTED_PROXIES",
            "10.0.0.1, proxy.internal",
            "admin_trusted_proxies: `proxy.internal` is not an IP address",
        ),
        (
            "EYE_ADMIN_SEARCH_TIMEOUT_MS",
            "0",
            "admin_search_timeout_ms is 0",
        ),
    ] {
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_eye"))
                .args(args)
                .env("EYE_DATABASE_URL", &url)
                .env("EYE_JWT_SECRET", SECRET)
                .env("EYE_CONFIG", "/nonexistent/eye.toml")
                .env("EYE_API_ADDR", "127.0.0.1:0")
                .env("EYE_ADMIN_ADDR", "127.0.0.1:0")
                .env(variable, value)
                .output()
                .unwrap()
        };
        for output in [
            run(&["admin"]),
            run(&["dev", "--data-dir", data_dir.to_str().unwrap()]),
        ] {
            assert!(!output.status.success());
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(message), "{stderr}");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(!stdout.contains("http://"), "nothing listened: {stdout}");
        }
    }
}

/// Rows stored before each application owned its ids are moved under their application by
/// migration 6, and rolling it back restores the old keys while no id is shared.
async fn existing_rows_move_under_their_application_and_back(db: &TestDb) {
    use eye_entity::{events, rejected_events, sessions};
    use eye_worker::store::{self, EventRow, Row};
    use sea_orm::{EntityTrait, PaginatorTrait};
    let conn = eye_cli::stack::connect(&db.url).await.unwrap();
    eye_migration::Migrator::up(&conn, Some(5)).await.unwrap();
    let backend = conn.get_database_backend();
    let (app, id, session) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::new_v4(),
    );
    let at = chrono::DateTime::parse_from_rfc3339("2021-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let json = |n: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("CAST(${n} AS jsonb)"),
        _ => "?".to_owned(),
    };
    let marks = |from: usize, to: usize| -> Vec<String> {
        (from..=to)
            .map(|n| match backend {
                sea_orm::DbBackend::Postgres => format!("${n}"),
                _ => "?".to_owned(),
            })
            .collect()
    };
    let m = marks(1, 9);
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO events (id, application_id, session_id, category, name, data, timestamp, received_at, stored_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
            m[0], m[1], m[2], m[3], m[4], json(6), m[6], m[7], m[8]
        ),
        [
            id.into(),
            app.into(),
            session.into(),
            "page interaction".into(),
            "pageview".into(),
            r#"{"host":"h","path":"/old"}"#.into(),
            at.into(),
            at.into(),
            at.into(),
        ],
    ))
    .await
    .unwrap();
    let m = marks(1, 5);
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO sessions (id, application_id, first_seen, last_seen, event_count) \
             VALUES ({}, {}, {}, {}, {})",
            m[0], m[1], m[2], m[3], m[4]
        ),
        [
            session.into(),
            app.into(),
            at.into(),
            at.into(),
            1i64.into(),
        ],
    ))
    .await
    .unwrap();
    let m = marks(1, 8);
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        format!(
            "INSERT INTO rejected_events (id, application_id, category, name, payload, reasons, received_at, rejected_at) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            m[0], m[1], m[2], m[3], json(5), json(6), m[6], m[7]
        ),
        [
            id.into(),
            app.into(),
            "c".into(),
            "n".into(),
            r#"{"kept":true}"#.into(),
            "[]".into(),
            at.into(),
            at.into(),
        ],
    ))
    .await
    .unwrap();

    if backend == sea_orm::DbBackend::Postgres {
        // A month of many events, beside the one event of January.
        conn.execute_unprepared(
            "INSERT INTO events (id, application_id, session_id, category, name, data, timestamp, received_at, stored_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'bulk', 'bulk', '{}', \
                    t, t, t \
             FROM generate_series(1, 10000) AS g, \
                  LATERAL (SELECT '2021-02-01 00:00:00+00'::timestamptz + g * interval '1 minute' AS t) AS at",
        )
        .await
        .unwrap();
    }
    eye_migration::Migrator::up(&conn, None).await.unwrap();
    if backend == sea_orm::DbBackend::Postgres {
        // February has a partition of its own; January's one event waits in the default
        // partition, as a month of few stragglers does.
        let partitions: Vec<(String, String, i64)> = conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT category, tableoid::regclass::text AS p, count(*) AS n FROM events \
                 GROUP BY 1, 2 ORDER BY 1",
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.try_get("", "category").unwrap(),
                    r.try_get("", "p").unwrap(),
                    r.try_get("", "n").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            partitions,
            [
                ("bulk".to_owned(), "events_p2021_02".to_owned(), 10_000),
                (
                    "page interaction".to_owned(),
                    "events_default".to_owned(),
                    1
                )
            ]
        );
        conn.execute_unprepared("DELETE FROM events WHERE category = 'bulk'")
            .await
            .unwrap();
    }
    let moved = events::Entity::find_by_id((app, id))
        .one(&conn)
        .await
        .unwrap();
    assert!(moved.unwrap().data.contains("/old"));
    let session_row = sessions::Entity::find_by_id((app, session))
        .one(&conn)
        .await
        .unwrap();
    assert_eq!(session_row.unwrap().event_count, 1);
    let rejected = rejected_events::Entity::find_by_id((app, id))
        .one(&conn)
        .await
        .unwrap();
    let payload: serde_json::Value = serde_json::from_str(&rejected.unwrap().payload).unwrap();
    assert_eq!(payload, serde_json::json!({"kept": true}));

    // Another application may now use the same id.
    let other = EventRow {
        application_id: uuid::Uuid::now_v7(),
        id,
        session_id: session,
        category: "page interaction".into(),
        name: "pageview".into(),
        data: r#"{"host":"h","path":"/other"}"#.into(),
        timestamp: at,
        source: None,
        received_at: at,
    };
    store::write(&conn, &[Row::Event(other.clone())])
        .await
        .unwrap();
    assert_eq!(events::Entity::find().count(&conn).await.unwrap(), 2);

    // Back down once no id is shared.
    events::Entity::delete_by_id((other.application_id, id))
        .exec(&conn)
        .await
        .unwrap();
    // Down to the fifth migration, before events were keyed by application.
    let past_five = u32::try_from(eye_migration::Migrator::migrations().len() - 5).unwrap();
    let shared = eye_migration::Migrator::down(&conn, Some(past_five))
        .await
        .expect_err("the other application's session still shares the id")
        .to_string();
    assert!(
        shared.contains("sessions") && (shared.contains("unique") || shared.contains("UNIQUE")),
        "{shared}"
    );
    sessions::Entity::delete_by_id((other.application_id, session))
        .exec(&conn)
        .await
        .unwrap();
    // The failed attempt may have undone the later migrations already (SQLite cannot undo
    // them within its transaction): count again.
    let applied = eye_migration::Migrator::get_applied_migrations(&conn)
        .await
        .unwrap()
        .len();
    let to_five = u32::try_from(applied - 5).unwrap();
    eye_migration::Migrator::down(&conn, Some(to_five))
        .await
        .unwrap();
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT CAST(data AS TEXT) FROM events".to_owned(),
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let data: String = rows[0].try_get_by_index(0).unwrap();
    assert!(data.contains("/old"), "{data}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_rows_move_under_their_application_and_back_on_sqlite() {
    existing_rows_move_under_their_application_and_back(&TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_rows_move_under_their_application_and_back_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        existing_rows_move_under_their_application_and_back(&db).await;
        db.drop().await;
    }
}

/// `eye retention apply` removes what is older than it is told and says so; `eye retention
/// status` lists the months PostgreSQL partitions.
async fn retention_removes_old_events_from_the_command_line(db: &TestDb) {
    use eye_worker::store::{self, EventRow, Row};
    stdout(&db.eye(&["migrate"]));
    let conn = eye_cli::stack::connect(&db.url).await.unwrap();
    let now = chrono::Utc::now();
    let (application, old, recent) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let row = |id, days: i64| {
        let at = now - chrono::TimeDelta::days(days);
        Row::Event(EventRow {
            application_id: application,
            id,
            session_id: id,
            category: "page interaction".into(),
            name: "pageview".into(),
            data: r#"{"host":"h","path":"/"}"#.into(),
            timestamp: at,
            source: None,
            received_at: at,
        })
    };
    store::write(&conn, &[row(old, 500), row(recent, 30)])
        .await
        .unwrap();

    let too_short = db.eye(&["retention", "apply", "--older-than", "2h"]);
    assert!(!too_short.status.success());
    let stderr = String::from_utf8_lossy(&too_short.stderr);
    assert!(stderr.contains("at least a day"), "{stderr}");

    let said = stdout(&db.eye(&["retention", "apply", "--older-than", "400d"]));
    // No partition holds a month that old on a fresh schema: the event was a straggler.
    assert!(
        said.contains("0 partitions, 1 more events, 0 rejected events, 1 sessions"),
        "{said}"
    );
    let ids: Vec<uuid::Uuid> = conn
        .query_all_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT id FROM events",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    assert_eq!(ids, [recent]);
    // The rollups forget what went.
    assert_eq!(counted(&conn, "").await, 1);

    let status = db.eye(&["retention", "status"]);
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        let this_month = now.format("%Y-%m").to_string();
        let listed = stdout(&status);
        assert!(
            listed.contains(&format!(
                "events\t{this_month}\tevents_p{}",
                this_month.replace('-', "_")
            )),
            "{listed}"
        );
    } else {
        assert!(!status.status.success());
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(stderr.contains("only PostgreSQL partitions"), "{stderr}");
    }
}

#[tokio::test]
async fn retention_removes_old_events_from_the_command_line_on_sqlite() {
    retention_removes_old_events_from_the_command_line(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn retention_removes_old_events_from_the_command_line_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        retention_removes_old_events_from_the_command_line(&db).await;
        db.drop().await;
    }
}

/// The events counted in `event_counts`, where `condition` (SQL after `WHERE`, or nothing).
async fn counted(conn: &sea_orm::DatabaseConnection, condition: &str) -> i64 {
    let filter = if condition.is_empty() {
        String::new()
    } else {
        format!(" WHERE {condition}")
    };
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            format!(
                "SELECT CAST(coalesce(sum(count), 0) AS BIGINT) AS n FROM event_counts{filter}"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

/// `eye rollups rebuild` counts events stored before the rollups (or counted wrongly) again:
/// a window, or everything stored; bad bounds are refused naming them.
async fn rollups_are_rebuilt_from_the_stored_events(db: &TestDb) {
    use eye_worker::store::{self, EventRow, Row};
    stdout(&db.eye(&["migrate"]));
    let conn = eye_cli::stack::connect(&db.url).await.unwrap();
    let application = uuid::Uuid::now_v7();
    let at = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();
    let rows: Vec<Row> = [
        ("checkout", "2026-03-01T10:00:05Z"),
        ("checkout", "2026-03-01T10:00:59.999Z"),
        ("page interaction", "2026-03-01T10:01:00Z"),
        ("checkout", "2026-03-05T08:00:00Z"),
    ]
    .iter()
    .map(|(category, time)| {
        Row::Event(EventRow {
            application_id: application,
            id: uuid::Uuid::now_v7(),
            session_id: application,
            category: (*category).into(),
            name: "x".into(),
            data: "{}".into(),
            timestamp: at(time),
            source: None,
            received_at: at(time),
        })
    })
    .collect();
    store::write(&conn, &rows).await.unwrap();
    assert_eq!(counted(&conn, "").await, 4);
    // As if stored before the rollups existed, with one count that is wrong.
    conn.execute_unprepared("DELETE FROM event_counts")
        .await
        .unwrap();
    let stale = format!(
        "INSERT INTO event_counts (application_id, minute, category, name, count) \
         VALUES ('{application}', '2026-03-05T08:00:00+00:00', 'checkout', 'x', 99)"
    );
    conn.execute_unprepared(&stale).await.unwrap();

    let said = stdout(&db.eye(&[
        "rollups",
        "rebuild",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
    ]));
    assert!(
        said.contains("from 2026-03-01 00:00 UTC to 2026-03-02 00:00 UTC: 3 events counted"),
        "{said}"
    );
    assert_eq!(counted(&conn, "category = 'checkout'").await, 2 + 99);
    assert_eq!(counted(&conn, "category = 'page interaction'").await, 1);

    let said = stdout(&db.eye(&["rollups", "rebuild"]));
    assert!(said.contains(": 4 events counted"), "{said}");
    assert_eq!(counted(&conn, "").await, 4);
    assert_eq!(counted(&conn, "category = 'checkout'").await, 3);

    for (args, named) in [
        (
            ["--from", "2026-03-02", "--to", "2026-03-01"],
            "must be before --to",
        ),
        (["--from", "yesterday", "--to", "2026-03-01"], "not a time"),
    ] {
        let mut all = vec!["rollups", "rebuild"];
        all.extend(args);
        let refused = db.eye(&all);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(named), "{stderr}");
    }
}

#[tokio::test]
async fn rollups_are_rebuilt_from_the_stored_events_on_sqlite() {
    rollups_are_rebuilt_from_the_stored_events(&TestDb::sqlite().await).await;
}

#[tokio::test]
async fn rollups_are_rebuilt_from_the_stored_events_on_postgres() {
    if let Some(db) = TestDb::postgres().await {
        rollups_are_rebuilt_from_the_stored_events(&db).await;
        db.drop().await;
    }
}
