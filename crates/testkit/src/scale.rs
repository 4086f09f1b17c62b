//! What the examples that measure at scale (`admin_paging`, `stats_scale`) share: a database of
//! their own on the test PostgreSQL server, kept between runs, a read token, an admin over it,
//! and how their timings print.

use std::collections::HashSet;
use std::time::Duration;

use eye_admin::{Admin, QueueProbe};
use eye_cli::stack;
use eye_core::Settings;
use eye_core::token::{Scope, TokenKeys};
use eye_entity::tokens::IssuedToken;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use secrecy::SecretString;
use uuid::Uuid;

const SECRET: &str = "scale-secret-scale-secret-scale-secret";

/// Each session of `$1` (an application) from its events, as the workers would have kept it.
const SESSIONS: &str = "INSERT INTO sessions (id, application_id, first_seen, last_seen, event_count)
SELECT session_id, $1::uuid, MIN(timestamp), MAX(timestamp), COUNT(*) FROM events GROUP BY session_id";

/// A database of an example's own, migrated.
pub struct ScaleDb {
    pub db: DatabaseConnection,
    server: DatabaseConnection,
    url: String,
    name: &'static str,
}

impl ScaleDb {
    /// Creates the database `name` on `EYE_TEST_DATABASE_URL`'s server unless it exists (its
    /// rows are kept for the next run), and migrates it.
    pub async fn open(name: &'static str) -> anyhow::Result<Self> {
        let server_url = std::env::var("EYE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let server = stack::connect(&server_url).await?;
        let exists = server
            .query_one_raw(Statement::from_string(
                server.get_database_backend(),
                format!("SELECT 1 AS one FROM pg_database WHERE datname = '{name}'"),
            ))
            .await?
            .is_some();
        if !exists {
            server
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
        }
        let mut url = reqwest::Url::parse(&server_url)?;
        url.set_path(name);
        let db = stack::connect(url.as_str()).await?;
        stack::migrate(&db).await?;
        Ok(Self {
            db,
            server,
            url: url.to_string(),
            name,
        })
    }

    /// The `n` a query selects.
    pub async fn number(&self, sql: &str) -> anyhow::Result<i64> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no row: {sql}"))?;
        Ok(row.try_get("", "n")?)
    }

    /// An `events:read` token of the application `bench` (created if new).
    pub async fn read_token(&self) -> anyhow::Result<IssuedToken> {
        Ok(eye_entity::tokens::issue(
            &self.db,
            &TokenKeys::new(SECRET.as_bytes()),
            "bench",
            HashSet::from([Scope::EventsRead]),
            chrono::Duration::hours(1),
        )
        .await?)
    }

    /// Sessions of `application` made from its events, then statistics for the planner.
    pub async fn sessions_from_events(&self, application: Uuid) -> anyhow::Result<()> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                SESSIONS,
                [application.into()],
            ))
            .await?;
        self.db
            .execute_unprepared("ANALYZE events; ANALYZE sessions")
            .await?;
        Ok(())
    }

    /// Starts an admin (without a queue) over the database; returns its base URL.
    pub async fn admin(&self) -> anyhow::Result<String> {
        let settings = Settings {
            admin_addr: "127.0.0.1:0".into(),
            jwt_secret: Some(SecretString::from(SECRET)),
            database_url: Some(SecretString::from(self.url.clone())),
            ..Settings::default()
        };
        let admin = Admin::build(
            &settings,
            self.db.clone(),
            self.db.clone(),
            QueueProbe::None,
            eye_admin::Publishers::default(),
            eye_core::metrics::Registry::disabled(),
        )
        .await?;
        let base = format!("http://127.0.0.1:{}", admin.port());
        tokio::spawn(admin.run_until_stopped());
        Ok(base)
    }

    /// Removes the database.
    pub async fn drop(self) -> anyhow::Result<()> {
        self.db.close().await?;
        self.server
            .execute_unprepared(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .await?;
        Ok(())
    }
}

/// The median and the slowest of `times`, and how many `what` there were.
pub fn timings(mut times: Vec<Duration>, what: &str) -> String {
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:>6.1} ms   max {:>6.1} ms   ({} {what})",
        times.get(times.len() / 2).map_or(0.0, ms),
        times.last().map_or(0.0, ms),
        times.len()
    )
}
