use std::collections::HashSet;
use std::time::{Duration, Instant};

use eye_cli::metrics::Registries;
use eye_cli::stack::{self, Queue, Running};
use eye_core::Settings;
use eye_core::token::{Scope, TokenKeys};
use eye_entity::{events, rejected_events, sessions, tokens};
use eye_worker::Worker;
use reqwest::Url;
use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryOrder};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{Backend, Proxy};

pub const APPLICATION: &str = "test-app";
const SECRET: &str = "test-secret-test-secret-test-secret";

/// How to start the app under test.
pub struct Options {
    /// Workers started with the api; 0 lets the test drive [`TestApp::worker`] itself.
    pub workers: usize,
    /// Put the broker behind a [`Proxy`] the test can cut (RabbitMQ only).
    pub proxy_broker: bool,
    /// With `proxy_broker`: a second proxy to the same broker, listed after the first in
    /// `amqp_url`, standing for a second node of a cluster.
    pub second_broker_node: bool,
    /// Put the database behind a [`Proxy`] the test can cut (PostgreSQL only).
    pub proxy_database: bool,
    /// Give the admin and the report runner a second database of their own as
    /// `admin_database_url`, read-only to them, standing for a replica (PostgreSQL only):
    /// [`TestApp::reads_db`] writes it.
    pub read_replica: bool,
    /// Any other setting.
    pub settings: fn(&mut Settings),
    /// `schema_dir`, which `settings` cannot set: a test's directory is made at run time.
    pub schema_dir: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            proxy_broker: false,
            second_broker_node: false,
            proxy_database: false,
            read_replica: false,
            settings: |_| {},
            schema_dir: None,
        }
    }
}

/// The Eye running in this test, on a database and queue of its own.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    /// The admin panel and read api: `http://127.0.0.1:<port>`
    pub admin_address: String,
    /// A direct connection for assertions (never through a proxy).
    pub db: DatabaseConnection,
    pub settings: Settings,
    pub queue: Queue,
    /// An `events:write` token for [`APPLICATION`].
    pub token: String,
    pub keys: TokenKeys,
    pub client: reqwest::Client,
    pub broker_proxy: Option<Proxy>,
    /// The second node's proxy, with [`Options::second_broker_node`].
    pub second_broker_proxy: Option<Proxy>,
    pub database_proxy: Option<Proxy>,
    /// With [`Options::read_replica`], a writable connection to the admin's reads database.
    pub reads_db: Option<DatabaseConnection>,
    /// The database the services under test use (through the proxy, if any).
    pub service_db: DatabaseConnection,
    /// Each service's metrics, as its `/metrics` shows them.
    pub metrics: Registries,
    /// `http://127.0.0.1:<port>` of the workers' `/metrics`, when workers were started.
    pub worker_metrics_address: Option<String>,
    running: Option<Running>,
    cleanup: Cleanup,
}

enum Cleanup {
    Embedded(#[allow(dead_code)] tempfile::TempDir),
    Services {
        admin_url: String,
        databases: Vec<String>,
        amqp_url: String,
        prefix: String,
    },
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> Self {
        crate::logs::init();
        let mut settings = Settings {
            api_addr: "127.0.0.1:0".into(),
            admin_addr: "127.0.0.1:0".into(),
            jwt_secret: Some(SecretString::from(SECRET)),
            token_refresh_ms: 200,
            publish_timeout_ms: 2_000,
            worker_metrics_addr: "127.0.0.1:0".into(),
            worker_batch_wait_ms: 5,
            ..Settings::default()
        };
        (options.settings)(&mut settings);
        settings.schema_dir = options.schema_dir.or(settings.schema_dir);
        let mut second_broker = None;
        let mut reads_db = None;
        let (database_url, queue, cleanup, broker_proxy, database_proxy) = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("eye.db").display());
                (
                    url,
                    Queue::memory(&settings),
                    Cleanup::Embedded(dir),
                    None,
                    None,
                )
            }
            Backend::Services {
                database_url,
                amqp_url,
            } => {
                let database = format!("eye_test_{}", Uuid::new_v4().simple());
                let mut databases = vec![database.clone()];
                if options.read_replica {
                    databases.push(format!("{database}_reads"));
                }
                let admin = stack::connect(&database_url).await.unwrap();
                for name in &databases {
                    admin
                        .execute_unprepared(&format!(r#"CREATE DATABASE "{name}""#))
                        .await
                        .unwrap();
                }
                admin.close().await.unwrap();
                let mut url = Url::parse(&database_url).unwrap();
                url.set_path(&database);
                if let Some(name) = databases.get(1) {
                    let mut reads = url.clone();
                    reads.set_path(name);
                    let db = stack::connect(reads.as_str()).await.unwrap();
                    stack::migrate(&db).await.unwrap();
                    reads_db = Some(db);
                    // As a hot standby refuses them: any write sent here fails.
                    reads
                        .query_pairs_mut()
                        .append_pair("options", "-c default_transaction_read_only=on");
                    settings.admin_database_url = Some(SecretString::from(reads.to_string()));
                }
                let database_proxy = if options.proxy_database {
                    Some(Proxy::start(authority(&url)).await)
                } else {
                    None
                };
                let mut amqp = Url::parse(&amqp_url).unwrap();
                let broker_proxy = if options.proxy_broker {
                    Some(Proxy::start(authority(&amqp)).await)
                } else {
                    None
                };
                if let Some(proxy) = &broker_proxy {
                    amqp.set_port(Some(proxy.addr().port())).unwrap();
                }
                let mut urls = amqp.to_string();
                if options.second_broker_node {
                    let proxy = Proxy::start(authority(&Url::parse(&amqp_url).unwrap())).await;
                    let mut second = amqp.clone();
                    second.set_port(Some(proxy.addr().port())).unwrap();
                    urls = format!("{urls},{second}");
                    second_broker = Some(proxy);
                }
                settings.amqp_url = Some(SecretString::from(urls.clone()));
                settings.queue_prefix = format!("eye-test-{}", Uuid::new_v4().simple());
                let cleanup = Cleanup::Services {
                    admin_url: database_url.clone(),
                    databases,
                    amqp_url: amqp_url.clone(),
                    prefix: settings.queue_prefix.clone(),
                };
                (
                    url.to_string(),
                    Queue::Amqp(urls),
                    cleanup,
                    broker_proxy,
                    database_proxy,
                )
            }
        };
        settings.database_url = Some(SecretString::from(database_url.clone()));
        let db = stack::connect(&database_url).await.unwrap();
        stack::migrate(&db).await.unwrap();
        let service_db = match &database_proxy {
            Some(proxy) => {
                let mut url = Url::parse(&database_url).unwrap();
                url.set_port(Some(proxy.addr().port())).unwrap();
                stack::connect(url.as_str()).await.unwrap()
            }
            None => db.clone(),
        };
        let keys = TokenKeys::new(SECRET.as_bytes());
        let token = tokens::issue(
            &db,
            &keys,
            APPLICATION,
            HashSet::from([Scope::EventsWrite]),
            chrono::Duration::hours(1),
        )
        .await
        .unwrap()
        .jwt;
        let settings_for_metrics = settings.clone();
        let mut app = Self {
            address: String::new(),
            admin_address: String::new(),
            db,
            settings,
            queue,
            token,
            keys,
            client: reqwest::Client::new(),
            broker_proxy,
            second_broker_proxy: second_broker,
            database_proxy,
            reads_db,
            service_db,
            metrics: Registries::separate(&settings_for_metrics),
            worker_metrics_address: None,
            running: None,
            cleanup,
        };
        let running = stack::start_with_workers(
            &app.settings,
            &app.service_db,
            &app.queue,
            options.workers,
            &app.metrics,
        )
        .await
        .unwrap();
        app.worker_metrics_address = running
            .worker_metrics_port
            .map(|port| format!("http://127.0.0.1:{port}"));
        app.address = format!("http://127.0.0.1:{}", running.api_port);
        app.admin_address = format!("http://127.0.0.1:{}", running.admin_port);
        app.running = Some(running);
        if matches!(app.cleanup, Cleanup::Services { .. }) {
            app.wait_until_ready().await;
        }
        app
    }

    /// Waits until the api can publish, so a test's first request does not race the broker
    /// connections opening under the load of other tests.
    async fn wait_until_ready(&self) {
        let url = format!("{}/readyz", self.address);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let response = self.client.get(&url).send().await;
            if response.as_ref().is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < until,
                "the api was not ready within 30 s: {response:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A worker the test drives itself, batch by batch.
    pub fn worker(&self) -> Worker {
        Worker::new(
            self.service_db.clone(),
            self.queue.consumer(&self.settings),
            &self.settings,
            CancellationToken::new(),
        )
        .with_metrics(self.metrics.worker.clone())
    }

    /// Stops the api, then the workers once everything queued in-process is stored.
    pub async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Posts JSON with the app's token.
    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.post_as(&self.token, body).await
    }

    pub async fn post_as(&self, token: &str, body: &Value) -> reqwest::Response {
        self.post_raw(
            Some(token),
            "application/json",
            None,
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// Posts JSON text as it is (numbers and escapes a `Value` could not hold) with the app's
    /// token.
    pub async fn post_text(&self, body: &str) -> reqwest::Response {
        self.post_raw(
            Some(&self.token),
            "application/json",
            None,
            body.as_bytes().to_vec(),
        )
        .await
    }

    pub async fn post_raw(
        &self,
        token: Option<&str>,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/v1/events", self.address))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        request.send().await.expect("the api did not answer")
    }

    /// A fresh token for the test application.
    pub async fn token_with(
        &self,
        scopes: &[Scope],
        lifetime: chrono::Duration,
    ) -> tokens::IssuedToken {
        self.token_for(APPLICATION, scopes, lifetime).await
    }

    /// A fresh token for the named application, created if new.
    pub async fn token_for(
        &self,
        application: &str,
        scopes: &[Scope],
        lifetime: chrono::Duration,
    ) -> tokens::IssuedToken {
        tokens::issue(
            &self.db,
            &self.keys,
            application,
            scopes.iter().copied().collect(),
            lifetime,
        )
        .await
        .unwrap()
    }

    /// A write token of another application (created on first use).
    pub async fn write_token_for(&self, application: &str) -> String {
        self.token_for(
            application,
            &[Scope::EventsWrite],
            chrono::Duration::hours(1),
        )
        .await
        .jwt
    }

    /// An application's id by name.
    pub async fn application_id_of(&self, name: &str) -> Uuid {
        tokens::find_application(&self.db, name)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// An event's `data` as the database renders it, as text.
    pub async fn data_text(&self, application_id: Uuid, id: Uuid) -> String {
        events::Entity::find_by_id((application_id, id))
            .one(&self.db)
            .await
            .unwrap()
            .unwrap()
            .data
    }

    /// What RabbitMQ's management api says of the ingest queue (arguments, policy in force,
    /// counts); on the local broker's management port.
    pub async fn ingest_queue(&self) -> Value {
        let queue = eye_core::queue::Topology::new(&self.settings.queue_prefix).queue;
        self.client
            .get(format!("http://127.0.0.1:15672/api/queues/%2F/{queue}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn dead_letters(&self) -> Vec<eye_entity::dead_letters::Model> {
        eye_entity::dead_letters::Entity::find()
            .all(&self.db)
            .await
            .unwrap()
    }

    /// Waits until the table holds `n` dead letters (30 s at most).
    pub async fn wait_for_dead_letters(&self, n: usize) -> Vec<eye_entity::dead_letters::Model> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.dead_letters().await;
            if rows.len() == n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} dead letters, found {}",
                rows.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stored_events(&self) -> Vec<events::Model> {
        events::Entity::find()
            .order_by_asc(events::Column::Timestamp)
            .all(&self.db)
            .await
            .unwrap()
    }

    /// A publishable key of the test's application for `origins` (`scheme://host[:port]`).
    pub async fn publishable_key(&self, origins: &[&str]) -> tokens::IssuedToken {
        let origins = origins
            .iter()
            .map(|o| eye_core::origin::WebOrigin::parse(o).unwrap())
            .collect();
        tokens::issue_publishable(
            &self.db,
            &self.keys,
            APPLICATION,
            origins,
            chrono::Duration::hours(1),
        )
        .await
        .unwrap()
    }

    /// Waits until the stored events match `done` (20 s at most), naming `what` if they never do.
    pub async fn wait_for_events(
        &self,
        what: &str,
        done: impl Fn(&[events::Model]) -> bool,
    ) -> Vec<events::Model> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stored = self.stored_events().await;
            if done(&stored) {
                return stored;
            }
            assert!(
                Instant::now() < deadline,
                "{what} never arrived; stored: {stored:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn rejected_events(&self) -> Vec<rejected_events::Model> {
        rejected_events::Entity::find()
            .order_by_asc(rejected_events::Column::ReceivedAt)
            .all(&self.db)
            .await
            .unwrap()
    }

    /// A session of [`APPLICATION`].
    pub async fn session(&self, id: Uuid) -> Option<sessions::Model> {
        sessions::Entity::find_by_id((self.application_id().await, id))
            .one(&self.db)
            .await
            .unwrap()
    }

    pub async fn counts(&self) -> (u64, u64) {
        let stored = events::Entity::find().count(&self.db).await.unwrap();
        let rejected = rejected_events::Entity::find()
            .count(&self.db)
            .await
            .unwrap();
        (stored, rejected)
    }

    /// Waits until `stored` events and `rejected` rejections are in the database.
    pub async fn wait_for_counts(&self, stored: u64, rejected: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = self.counts().await;
            if counts == (stored, rejected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "expected {stored} stored and {rejected} rejected, found {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
        if let Cleanup::Services {
            admin_url,
            databases,
            amqp_url,
            prefix,
        } = &self.cleanup
        {
            let (admin_url, databases, amqp_url, prefix) = (
                admin_url.clone(),
                databases.clone(),
                amqp_url.clone(),
                prefix.clone(),
            );
            // Async clean-up cannot run in `drop`; a thread with its own runtime can.
            let cleaned = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    if let Ok(admin) = stack::connect(&admin_url).await {
                        for database in databases {
                            let _ = admin
                                .execute_unprepared(&format!(
                                    r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#
                                ))
                                .await;
                        }
                    }
                    let _ = eye_cli::broker::remove_topology(&amqp_url, &prefix).await;
                });
            });
            let _ = cleaned.join();
        }
    }
}

fn authority(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(5432)
    )
}

/// A stored event's `data` as a JSON value (it is kept as text).
pub fn data_of(event: &events::Model) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

/// An event of the given type with a fresh session and the timestamp as sent.
pub fn event(category: &str, name: &str, data: Value, timestamp: &str) -> Value {
    json!({
        "session_id": Uuid::new_v4(),
        "category": category,
        "name": name,
        "data": data,
        "timestamp": timestamp,
    })
}

/// A valid `page interaction`/`pageview` event at `path`, with a fresh session.
pub fn pageview(path: impl Into<String>, timestamp: &str) -> Value {
    event(
        "page interaction",
        "pageview",
        json!({"host": "h", "path": path.into()}),
        timestamp,
    )
}

/// The three canonical event types, one in each accepted timestamp form.
pub fn canonical_events(session: Uuid) -> Value {
    json!([
        {"session_id": session, "category": "page interaction", "name": "pageview",
         "data": {"host": "www.consumeraffairs.com", "path": "/"},
         "timestamp": "2021-01-01 09:15:27.243860"},
        {"session_id": session, "category": "page interaction", "name": "cta click",
         "data": {"host": "www.consumeraffairs.com", "path": "/", "element": "chat bubble"},
         "timestamp": "2021-01-01T09:15:28.5Z"},
        {"session_id": session, "category": "form interaction", "name": "submit",
         "data": {"host": "www.consumeraffairs.com", "path": "/",
                  "form": {"first_name": "John", "last_name": "Doe"}},
         "timestamp": "2021-01-01T11:15:29+02:00"},
    ])
}
