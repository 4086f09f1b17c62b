//! Typed settings: defaults < `eye.toml` < `EYE_*` environment variables.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::rate_limit::{Rate, RateLimit};

/// What `amqp_url` takes.
const AMQP_URLS: &str = "an amqp:// or amqps:// URL, or several separated by commas";

/// Every knob of The Eye. Each field can be set in `eye.toml` or as `EYE_<FIELD>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite://…?mode=rwc`) URL. Required outside `eye dev`.
    pub database_url: Option<SecretString>,
    /// A PostgreSQL read replica of `database_url` (optional): the admin's and the read api's
    /// queries of events, sessions, rejections and stats, and the workers' report queries
    /// read it. Logins, tokens, applications, dead letters, the dashboard and the reports'
    /// own rows stay on `database_url`. Reads there lag the primary by the replica's replay
    /// delay. Empty is unset.
    pub admin_database_url: Option<SecretString>,
    /// RabbitMQ URL (`amqp://user:pass@host:5672/%2f`), or the URLs of a cluster's nodes
    /// separated by commas: connections go to the first that answers and move to another when
    /// theirs goes away. Required outside `eye dev`.
    pub amqp_url: Option<SecretString>,
    /// HS256 key for api tokens, at least 32 bytes. Required outside `eye dev`.
    pub jwt_secret: Option<SecretString>,
    /// Replicas of each quorum queue when it is first declared. Unset: as many as `amqp_url`
    /// lists nodes, at most 3, when it lists several; with one URL (a single node, or a load
    /// balancer in front of a cluster), RabbitMQ's default, every node. An existing queue keeps
    /// its replicas: `rabbitmq-queues grow` and `shrink` change them.
    pub queue_replicas: Option<u16>,
    /// Prefix of every exchange and queue name, so tenants and tests do not collide.
    pub queue_prefix: String,
    /// Where `eye api` listens.
    pub api_addr: String,
    /// HTTP worker threads of `eye api`; unset means one per core.
    pub api_workers: Option<usize>,
    /// Where `eye admin` listens.
    pub admin_addr: String,
    /// How long an admin login lasts.
    pub admin_session_hours: i64,
    /// Failed logins allowed per username and per client address within `admin_login_window_secs`.
    pub admin_login_attempts: u32,
    /// The window over which failed logins are counted; a throttled login waits it out.
    pub admin_login_window_secs: u64,
    /// Rows on one page of the admin and of the read api (the api's `limit` may ask for fewer).
    pub admin_page_size: u64,
    /// Proxies in front of the admin whose `X-Forwarded-For` and `X-Forwarded-Proto` are
    /// believed: IP addresses or CIDR networks, as a list in `eye.toml` or comma-separated in
    /// `EYE_ADMIN_TRUSTED_PROXIES`. Empty: the client is whoever connected.
    #[serde(deserialize_with = "list_or_commas")]
    pub admin_trusted_proxies: Vec<String>,
    /// How long a search for text inside `data` may run on PostgreSQL before it is stopped.
    pub admin_search_timeout_ms: u64,
    /// The dashboard flags an enabled application that has sent no stored event for this many
    /// minutes (and existed that long).
    pub admin_silent_minutes: u64,
    /// Most events one request may carry.
    pub max_events_per_request: usize,
    /// Largest single event, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes, before and after gzip decompression.
    pub max_request_bytes: usize,
    /// How long a request may wait for the broker's confirm, counted from when its body was
    /// read. Past it the api answers 503 if the events were not sent (they are then never
    /// stored), or 504 if they were sent and not confirmed (they may still be stored).
    pub publish_timeout_ms: u64,
    /// AMQP channels the api publishes on, and the most messages awaiting a confirm at once;
    /// requests arriving meanwhile are coalesced into the next message.
    pub publish_channels: usize,
    /// How long the api may wait to fill a message with more requests, in microseconds.
    pub publish_linger_us: u64,
    /// Bytes of envelopes each HTTP worker thread holds while they wait for and await their
    /// confirm; past it requests are answered 503 `queue_full` at once.
    pub outbox_max_bytes: usize,
    /// Events each application may send per second (`N/s`), minute (`N/min`) or hour (`N/h`),
    /// counted by each api instance on its own: behind a load balancer, give each instance its
    /// share of the total. `eye app limit` overrides it per application.
    #[serde(deserialize_with = "rate_limit_setting")]
    pub rate_limit: Rate,
    /// The most events an application may send at once after a quiet spell, on top of
    /// `rate_limit`; at least `max_events_per_request`, so that a full request can pass.
    pub rate_limit_burst: u64,
    /// Events one client address may send per second, minute or hour with publishable keys
    /// (those embedded in web pages), per application and api instance, on top of the
    /// application's own limit. IPv6 addresses count per /64 network.
    #[serde(deserialize_with = "publishable_rate_limit_setting")]
    pub publishable_rate_limit: Rate,
    /// The most events one client address may send at once with a publishable key.
    pub publishable_rate_limit_burst: u64,
    /// Proxies in front of the api whose `X-Forwarded-For` is believed when counting a
    /// client address for `publishable_rate_limit`: IP addresses or CIDR networks. Empty:
    /// the client is whoever connected, and `X-Forwarded-For` is ignored.
    #[serde(deserialize_with = "list_or_commas")]
    pub api_trusted_proxies: Vec<String>,
    /// How often the api and admin reload api tokens (scopes, expiry, revocation) and
    /// applications' state from the database, and workers look for `eye schemas reload`.
    pub token_refresh_ms: u64,
    /// Messages the broker may hand one worker before it acknowledges any.
    pub worker_prefetch: u16,
    /// Most messages the worker stores in one transaction.
    pub worker_batch_messages: usize,
    /// A batch stops growing once its messages hold this many bytes (one message may be more).
    pub worker_batch_bytes: usize,
    /// How long the worker waits to fill a batch once the first message arrived.
    pub worker_batch_wait_ms: u64,
    /// Whether the workers add what they store to the per-minute counts (`event_counts`).
    /// Off only for a bulk load, or to measure what counting costs: the stats, reports by
    /// type, trends and the dashboard's charts then miss those events until `eye rollups
    /// rebuild` covers their window.
    pub worker_rollups: bool,
    /// Deliveries of one message before it is dead-lettered (a message that keeps failing).
    /// Applied by a broker policy, so it can change while the queue exists.
    pub delivery_limit: u32,
    /// Most messages the ingest queue holds; past it the broker refuses publishes (503).
    pub queue_max_messages: u64,
    /// Most bytes the ingest queue holds; past it the broker refuses publishes (503).
    pub queue_max_bytes: u64,
    /// How the api publishes envelopes of many events: `lz4` (compressed, marked by their
    /// content-encoding; workers read both forms) or `off`. Turn it off while workers older
    /// than the api still consume, since they cannot read a compressed message.
    pub queue_compression: QueueCompression,
    /// RabbitMQ's management api, where `eye migrate` and the services set the queue policy.
    /// Unset: `http://` the AMQP host on port 15672 with the AMQP credentials and vhost.
    /// `off`: the services set no policy (an operator manages it).
    pub amqp_management_url: Option<SecretString>,
    /// How far in the future an event's timestamp may be, relative to its receipt.
    pub clock_skew_secs: i64,
    /// The earliest event timestamp accepted (RFC 3339); older events are rejected.
    pub event_not_before: DateTime<Utc>,
    /// What to do with events whose (category, name) has no validator.
    pub unknown_events: UnknownEventPolicy,
    /// A directory of JSON Schema (draft 2020-12) files, one event type each, named inside
    /// by `x-eye-category` and `x-eye-name`. Workers load it at start (a broken file stops
    /// them) and again on SIGHUP or `eye schemas reload` (a broken file is logged and the
    /// types in force stay). Unset: only the built-in types.
    pub schema_dir: Option<PathBuf>,
    /// Longest category or name, in characters.
    pub max_name_chars: usize,
    /// Longest string anywhere inside `data`, in characters.
    pub max_data_string_chars: usize,
    /// Messages the in-process queue of `eye dev` holds before publishing waits.
    pub memory_queue_capacity: usize,
    /// How long a stopping `eye dev` keeps trying to store what its in-process queue holds
    /// while the database refuses writes; what is left then is reported lost.
    pub drain_timeout_secs: u64,
    /// Days of events, rejected events and sessions kept: each worker removes older ones at
    /// start and then daily (on PostgreSQL by whole months, so rows stay up to a month
    /// longer). Unset: everything is kept.
    pub retention_days: Option<u32>,
    /// Hours a report is kept after it finished; then it and its CSV are deleted.
    pub report_retention_hours: u32,
    /// Longest a worker spends on one report before failing it.
    pub report_timeout_secs: u64,
    /// Most rows one report's CSV may hold; a larger one fails, saying to narrow it.
    pub report_max_rows: u64,
    /// `json` for machines, `pretty` for people.
    pub log_format: LogFormat,
    /// Whether the services count Prometheus metrics and serve them on `/metrics`.
    pub metrics_enabled: bool,
    /// Where `eye worker` serves `/metrics` (the api and the admin serve it on their own port).
    pub worker_metrics_addr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownEventPolicy {
    /// Store it after the common checks.
    Accept,
    /// Reject it with `unknown_event_type`.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueCompression {
    Lz4,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The default `rate_limit`: 10000 events a second per application and api instance.
const DEFAULT_RATE_PER_SECOND: std::num::NonZeroU32 = match std::num::NonZeroU32::new(10_000) {
    Some(n) => n,
    None => panic!("10000 is not zero"),
};

/// The default `publishable_rate_limit`: 300 events a minute per client address, enough for
/// a person clicking through pages, with room for several behind one NAT.
const DEFAULT_PUBLISHABLE_RATE: Rate = match Rate::new(300, 60) {
    Some(rate) => rate,
    None => panic!("300/min is a rate"),
};

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            admin_database_url: None,
            amqp_url: None,
            queue_replicas: None,
            jwt_secret: None,
            queue_prefix: "eye".into(),
            api_addr: "127.0.0.1:8080".into(),
            api_workers: None,
            admin_addr: "127.0.0.1:8081".into(),
            admin_session_hours: 12,
            admin_login_attempts: 5,
            admin_login_window_secs: 900,
            admin_page_size: 50,
            admin_trusted_proxies: Vec::new(),
            admin_search_timeout_ms: 5_000,
            admin_silent_minutes: 60,
            max_events_per_request: 500,
            max_event_bytes: 32 * 1024,
            max_request_bytes: 512 * 1024,
            publish_timeout_ms: 5_000,
            publish_channels: 8,
            publish_linger_us: 500,
            outbox_max_bytes: 16 * 1024 * 1024,
            rate_limit: Rate::per_second(DEFAULT_RATE_PER_SECOND),
            rate_limit_burst: 20_000,
            publishable_rate_limit: DEFAULT_PUBLISHABLE_RATE,
            publishable_rate_limit_burst: 100,
            api_trusted_proxies: Vec::new(),
            token_refresh_ms: 2_000,
            worker_prefetch: 64,
            worker_batch_messages: 128,
            worker_batch_bytes: 1024 * 1024,
            worker_batch_wait_ms: 20,
            worker_rollups: true,
            delivery_limit: 10,
            queue_max_messages: 1_000_000,
            queue_max_bytes: 4 * 1024 * 1024 * 1024,
            amqp_management_url: None,
            clock_skew_secs: 60,
            event_not_before: DateTime::UNIX_EPOCH,
            unknown_events: UnknownEventPolicy::Accept,
            queue_compression: QueueCompression::Lz4,
            schema_dir: None,
            max_name_chars: 128,
            max_data_string_chars: 8 * 1024,
            memory_queue_capacity: 10_000,
            drain_timeout_secs: 60,
            retention_days: None,
            report_retention_hours: 7 * 24,
            report_timeout_secs: 300,
            report_max_rows: 1_000_000,
            log_format: LogFormat::Json,
            metrics_enabled: true,
            worker_metrics_addr: "127.0.0.1:8082".into(),
        }
    }
}

/// A list from `eye.toml`, or one string of comma-separated items from the environment.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        List(Vec<String>),
        Text(String),
    }
    let items = match Items::deserialize(d)? {
        Items::List(items) => items,
        Items::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// `rate_limit`, parsed when it is read; a wrong one is refused naming the setting.
fn rate_limit_setting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "rate_limit = {text:?} is refused: {e} (EYE_RATE_LIMIT or `rate_limit` in eye.toml)"
        ))
    })
}

/// `publishable_rate_limit`, parsed when it is read, like `rate_limit`.
fn publishable_rate_limit_setting<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Rate, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "publishable_rate_limit = {text:?} is refused: {e} (EYE_PUBLISHABLE_RATE_LIMIT or `publishable_rate_limit` in eye.toml)"
        ))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("could not read settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{0} is not set: export EYE_{1} or set `{0}` in eye.toml")]
    Missing(&'static str, &'static str),
    #[error("jwt_secret is too short: use at least 32 random bytes, e.g. `openssl rand -hex 32`")]
    WeakSecret,
    #[error(
        "jwt_secret is an example value that anyone can read: use your own 32 random bytes, e.g. `openssl rand -hex 32`"
    )]
    ExampleSecret,
    #[error("{}", join(.0))]
    Invalid(Vec<Invalid>),
}

/// Secrets that appear in The Eye's own files and documentation. Whoever holds the secret can
/// sign tokens, so a published one is refused however long it is.
const EXAMPLE_SECRETS: &[&str] = &[
    "change-me-to-32-or-more-random-bytes",
    "at least 32 random bytes, e.g. the output of `openssl rand -hex 32`",
];

/// An example secret, or a placeholder in the usual spelling of one.
fn is_example_secret(secret: &str) -> bool {
    let secret = secret.trim().to_ascii_lowercase();
    EXAMPLE_SECRETS.contains(&secret.as_str())
        || ["change-me", "change_me", "changeme"]
            .iter()
            .any(|placeholder| secret.contains(placeholder))
}

/// One setting outside its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name} = {value} is out of range: it must be {expected} (EYE_{env} or `{name}` in eye.toml)"
)]
pub struct Invalid {
    pub name: &'static str,
    pub value: String,
    pub expected: String,
    env: String,
}

fn join(invalid: &[Invalid]) -> String {
    let lines: Vec<String> = invalid.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

/// Collects the settings that are out of range.
#[derive(Default)]
struct Checks(Vec<Invalid>);

impl Checks {
    fn range<T>(&mut self, name: &'static str, value: T, range: std::ops::RangeInclusive<T>)
    where
        T: PartialOrd + std::fmt::Display,
    {
        if !range.contains(&value) {
            let expected = format!("between {} and {}", range.start(), range.end());
            self.fail(name, value.to_string(), expected);
        }
    }

    fn fail(&mut self, name: &'static str, value: String, expected: String) {
        self.0.push(Invalid {
            name,
            value,
            expected,
            env: name.to_ascii_uppercase(),
        });
    }

    fn address(&mut self, name: &'static str, value: &str) {
        let port = value
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
            self.fail(
                name,
                format!("{value:?}"),
                "host:port, e.g. 127.0.0.1:8080".into(),
            );
        }
    }
}

impl Settings {
    /// Reads `eye.toml` (if `file` exists) and then the `EYE_*` environment.
    pub fn load(file: &Path) -> Result<Self, SettingsError> {
        Figment::new()
            .merge(Toml::file(file))
            .merge(Env::prefixed("EYE_"))
            .extract()
            .map_err(|e| SettingsError::Load(Box::new(e)))
    }

    pub fn database_url(&self) -> Result<&str, SettingsError> {
        self.database_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .ok_or(SettingsError::Missing("database_url", "DATABASE_URL"))
    }

    /// `admin_database_url`, empty counting as unset (`EYE_ADMIN_DATABASE_URL=`).
    pub fn admin_database_url(&self) -> Option<&str> {
        self.admin_database_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .filter(|url| !url.trim().is_empty())
    }

    /// The replicas quorum queues are declared with: `queue_replicas`, or as many as
    /// `amqp_url` lists nodes (at most 3) when it lists several.
    pub fn queue_replicas(&self) -> Option<u16> {
        let listed = self
            .amqp_url
            .as_ref()
            .map_or(0, |urls| crate::queue::nodes(urls.expose_secret()).len());
        self.queue_replicas
            .or_else(|| (listed > 1).then(|| u16::try_from(listed.min(3)).unwrap_or(3)))
    }

    pub fn amqp_url(&self) -> Result<&str, SettingsError> {
        self.amqp_url
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .ok_or(SettingsError::Missing("amqp_url", "AMQP_URL"))
    }

    pub fn jwt_secret(&self) -> Result<&[u8], SettingsError> {
        let secret = self
            .jwt_secret
            .as_ref()
            .map(ExposeSecret::expose_secret)
            .ok_or(SettingsError::Missing("jwt_secret", "JWT_SECRET"))?;
        if secret.len() < 32 {
            return Err(SettingsError::WeakSecret);
        }
        if is_example_secret(secret) {
            return Err(SettingsError::ExampleSecret);
        }
        Ok(secret.as_bytes())
    }

    /// Checks every setting against its range, naming each one that is out of it. Services
    /// call it before they connect or listen.
    pub fn validate(&self) -> Result<(), SettingsError> {
        const KIB: usize = 1024;
        const MIB: usize = 1024 * KIB;
        let mut check = Checks::default();
        let prefix_ok = !self.queue_prefix.is_empty()
            && self.queue_prefix.len() <= 200
            && self
                .queue_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !prefix_ok {
            check.fail(
                "queue_prefix",
                format!("{:?}", self.queue_prefix),
                "1 to 200 characters of letters, digits, `.`, `-` and `_`".into(),
            );
        }
        if let Some(urls) = &self.amqp_url {
            let nodes = crate::queue::nodes(urls.expose_secret());
            // The URLs hold passwords: a bad one is named by its place in the list.
            if nodes.is_empty() {
                check.fail("amqp_url", "empty".into(), AMQP_URLS.into());
            }
            for (i, node) in nodes.iter().enumerate() {
                if !(node.starts_with("amqp://") || node.starts_with("amqps://")) {
                    check.fail("amqp_url", format!("node {}", i + 1), AMQP_URLS.into());
                }
            }
        }
        if let Some(url) = self.admin_database_url() {
            let postgres =
                |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
            // The URL holds a password: it is never repeated in the message.
            if !postgres(url) {
                check.fail(
                    "admin_database_url",
                    "not a PostgreSQL URL".into(),
                    "a postgres:// URL of a read replica of database_url".into(),
                );
            } else if self
                .database_url
                .as_ref()
                .is_some_and(|primary| !postgres(primary.expose_secret()))
            {
                check.fail(
                    "admin_database_url",
                    "set with a database_url that is not PostgreSQL".into(),
                    "unset, or a read replica of a PostgreSQL database_url".into(),
                );
            }
        }
        if let Some(replicas) = self.queue_replicas {
            check.range("queue_replicas", replicas, 1..=9);
        }
        check.address("api_addr", &self.api_addr);
        check.address("admin_addr", &self.admin_addr);
        check.address("worker_metrics_addr", &self.worker_metrics_addr);
        if let Some(workers) = self.api_workers {
            check.range("api_workers", workers, 1..=1024);
        }
        check.range(
            "admin_session_hours",
            self.admin_session_hours,
            1..=24 * 366,
        );
        check.range("admin_login_attempts", self.admin_login_attempts, 1..=1000);
        check.range(
            "admin_login_window_secs",
            self.admin_login_window_secs,
            1..=86_400,
        );
        check.range("admin_page_size", self.admin_page_size, 1..=1000);
        check.range(
            "admin_silent_minutes",
            self.admin_silent_minutes,
            1..=7 * 24 * 60,
        );
        check.range(
            "max_events_per_request",
            self.max_events_per_request,
            1..=10_000,
        );
        check.range("max_request_bytes", self.max_request_bytes, KIB..=64 * MIB);
        check.range(
            "max_event_bytes",
            self.max_event_bytes,
            256..=self.max_request_bytes.max(256),
        );
        check.range("publish_timeout_ms", self.publish_timeout_ms, 100..=600_000);
        check.range("publish_channels", self.publish_channels, 1..=1024);
        check.range("publish_linger_us", self.publish_linger_us, 0..=1_000_000);
        // Room for at least a few of the largest requests; at most what a semaphore counts.
        let least = self.max_request_bytes.saturating_mul(4).max(MIB);
        check.range(
            "outbox_max_bytes",
            self.outbox_max_bytes,
            least..=least.max(u32::MAX as usize),
        );
        check.range("token_refresh_ms", self.token_refresh_ms, 100..=3_600_000);
        // A full request must fit in a burst, or it could never pass the default limit.
        check.range(
            "rate_limit_burst",
            self.rate_limit_burst,
            (self.max_events_per_request as u64).max(1)..=u64::from(crate::rate_limit::MAX_EVENTS),
        );
        if let Err(e @ crate::rate_limit::RateLimitError::RefillTooLong { .. }) =
            RateLimit::new(self.rate_limit, self.rate_limit_burst)
        {
            check.fail(
                "rate_limit_burst",
                self.rate_limit_burst.to_string(),
                e.to_string(),
            );
        }
        check.range(
            "publishable_rate_limit_burst",
            self.publishable_rate_limit_burst,
            1..=u64::from(crate::rate_limit::MAX_EVENTS),
        );
        if let Err(e @ crate::rate_limit::RateLimitError::RefillTooLong { .. }) = RateLimit::new(
            self.publishable_rate_limit,
            self.publishable_rate_limit_burst,
        ) {
            check.fail(
                "publishable_rate_limit_burst",
                self.publishable_rate_limit_burst.to_string(),
                e.to_string(),
            );
        }
        check.range("worker_prefetch", self.worker_prefetch, 1..=u16::MAX);
        check.range(
            "worker_batch_messages",
            self.worker_batch_messages,
            1..=10_000,
        );
        check.range(
            "worker_batch_bytes",
            self.worker_batch_bytes,
            KIB..=256 * MIB,
        );
        check.range(
            "worker_batch_wait_ms",
            self.worker_batch_wait_ms,
            0..=60_000,
        );
        check.range("delivery_limit", self.delivery_limit, 1..=1000);
        check.range(
            "queue_max_messages",
            self.queue_max_messages,
            1_000..=1_000_000_000,
        );
        check.range(
            "queue_max_bytes",
            self.queue_max_bytes,
            64 * MIB as u64..=1 << 40,
        );
        if let Some(url) = &self.amqp_management_url {
            let url = url.expose_secret();
            let ok = url.eq_ignore_ascii_case("off")
                || url.starts_with("http://")
                || url.starts_with("https://");
            if !ok {
                // The value may hold a password: name the setting, not the value.
                check.fail(
                    "amqp_management_url",
                    "(hidden)".into(),
                    "an http(s):// URL of RabbitMQ's management api, or `off`".into(),
                );
            }
        }
        if self.event_not_before > chrono::Utc::now() {
            check.fail(
                "event_not_before",
                self.event_not_before.to_rfc3339(),
                "a time in the past (RFC 3339)".into(),
            );
        }
        if let Some(dir) = &self.schema_dir
            && !dir.is_dir()
        {
            check.fail(
                "schema_dir",
                format!("{:?}", dir.display().to_string()),
                "an existing directory of JSON Schema files".into(),
            );
        }
        check.range("clock_skew_secs", self.clock_skew_secs, 0..=7 * 86_400);
        check.range("max_name_chars", self.max_name_chars, 1..=1024);
        check.range("max_data_string_chars", self.max_data_string_chars, 1..=MIB);
        check.range("drain_timeout_secs", self.drain_timeout_secs, 1..=3600);
        if let Some(days) = self.retention_days {
            check.range("retention_days", days, 1..=36_500);
        }
        check.range(
            "report_retention_hours",
            self.report_retention_hours,
            1..=8_760,
        );
        check.range("report_timeout_secs", self.report_timeout_secs, 1..=86_400);
        check.range("report_max_rows", self.report_max_rows, 1..=100_000_000);
        check.range(
            "memory_queue_capacity",
            self.memory_queue_capacity,
            1..=1_000_000,
        );
        if check.0.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(check.0))
        }
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn publish_linger(&self) -> Duration {
        Duration::from_micros(self.publish_linger_us)
    }

    pub fn report_timeout(&self) -> Duration {
        Duration::from_secs(self.report_timeout_secs)
    }

    pub fn admin_search_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_search_timeout_ms)
    }

    /// The limit of every application without one of its own. Out of range bursts are refused
    /// by [`Settings::validate`]; here they are clamped.
    pub fn rate_limit(&self) -> RateLimit {
        let burst = self
            .rate_limit_burst
            .clamp(1, u64::from(crate::rate_limit::MAX_EVENTS));
        RateLimit::new(self.rate_limit, burst).unwrap_or(RateLimit {
            rate: self.rate_limit,
            burst: std::num::NonZeroU32::MIN,
        })
    }

    /// The limit per client address of publishable keys; clamped like [`Settings::rate_limit`].
    pub fn publishable_rate_limit(&self) -> RateLimit {
        let burst = self
            .publishable_rate_limit_burst
            .clamp(1, u64::from(crate::rate_limit::MAX_EVENTS));
        RateLimit::new(self.publishable_rate_limit, burst).unwrap_or(RateLimit {
            rate: self.publishable_rate_limit,
            burst: std::num::NonZeroU32::MIN,
        })
    }

    pub fn token_refresh(&self) -> Duration {
        Duration::from_millis(self.token_refresh_ms)
    }

    /// A batch never waits for more messages than the broker sends before an ack.
    pub fn worker_batch_limit(&self) -> crate::queue::BatchLimit {
        crate::queue::BatchLimit {
            messages: self
                .worker_batch_messages
                .min(usize::from(self.worker_prefetch.max(1))),
            bytes: self.worker_batch_bytes,
        }
    }

    pub fn worker_batch_wait(&self) -> Duration {
        Duration::from_millis(self.worker_batch_wait_ms)
    }
}

#[cfg(test)]
// figment's Jail fixes the closure's error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eye.toml",
                "queue_prefix = \"file\"\napi_addr = \"0.0.0.0:9000\"",
            )?;
            jail.set_env("EYE_QUEUE_PREFIX", "env");
            jail.set_env("EYE_UNKNOWN_EVENTS", "reject");
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.queue_prefix, "env");
            assert_eq!(settings.api_addr, "0.0.0.0:9000");
            assert_eq!(settings.unknown_events, UnknownEventPolicy::Reject);
            assert_eq!(settings.max_events_per_request, 500);
            Ok(())
        });
    }

    #[test]
    fn queue_compression_is_lz4_unless_turned_off_and_nothing_else() {
        figment::Jail::expect_with(|jail| {
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.queue_compression, QueueCompression::Lz4);
            jail.set_env("EYE_QUEUE_COMPRESSION", "off");
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.queue_compression, QueueCompression::Off);
            jail.set_env("EYE_QUEUE_COMPRESSION", "zstd");
            let error = Settings::load(Path::new("eye.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("EYE_") && error.contains("QUEUE_COMPRESSION"),
                "{error}"
            );
            assert!(error.contains("zstd"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn trusted_proxies_are_a_list_in_the_file_or_commas_in_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "eye.toml",
                "admin_trusted_proxies = [\"10.0.0.1\", \"192.168.0.0/16\"]",
            )?;
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(
                settings.admin_trusted_proxies,
                ["10.0.0.1", "192.168.0.0/16"]
            );
            jail.set_env("EYE_ADMIN_TRUSTED_PROXIES", "10.0.0.1, fd00::/8,");
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.admin_trusted_proxies, ["10.0.0.1", "fd00::/8"]);
            Ok(())
        });
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("EYE_JWT_SECRET", "a-very-secret-value-that-is-long-enough");
            jail.set_env("EYE_DATABASE_URL", "postgres://u:hunter2@db/eye");
            let settings = Settings::load(Path::new("missing.toml")).map_err(|e| e.to_string())?;
            let printed = format!("{settings:?}");
            assert!(!printed.contains("a-very-secret"), "{printed}");
            assert!(!printed.contains("hunter2"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn a_worker_batch_never_waits_for_more_than_the_prefetch() {
        let settings = Settings {
            worker_prefetch: 16,
            worker_batch_messages: 128,
            ..Settings::default()
        };
        assert_eq!(settings.worker_batch_limit().messages, 16);
        let settings = Settings {
            worker_prefetch: 64,
            worker_batch_messages: 32,
            ..Settings::default()
        };
        assert_eq!(settings.worker_batch_limit().messages, 32);
    }

    #[test]
    fn the_defaults_and_the_example_file_are_valid() {
        Settings::default().validate().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../eye.example.toml");
        assert!(example.exists());
        let settings: Settings = Figment::new().merge(Toml::file(example)).extract().unwrap();
        settings.validate().unwrap();
    }

    #[test]
    fn amqp_url_takes_several_nodes_and_names_a_bad_one_by_its_place_only() {
        let with = |urls: &str| Settings {
            amqp_url: Some(SecretString::from(urls.to_owned())),
            ..Settings::default()
        };
        with("amqp://a:5672/%2f, amqps://b:5671/%2f")
            .validate()
            .unwrap();
        let err = with("amqp://u:secret@a/%2f,http://u:secret@b/")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp_url = node 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(with(" , ").validate().is_err());
    }

    #[test]
    fn admin_database_url_is_a_postgres_replica_and_its_text_is_never_repeated() {
        let with = |primary: &str, reads: &str| Settings {
            database_url: Some(SecretString::from(primary.to_owned())),
            admin_database_url: Some(SecretString::from(reads.to_owned())),
            ..Settings::default()
        };
        let replica = with("postgres://p/eye", "postgres://u:secret@replica:5433/eye");
        replica.validate().unwrap();
        assert_eq!(
            replica.admin_database_url(),
            Some("postgres://u:secret@replica:5433/eye")
        );
        let err = with("postgres://p/eye", "mysql://u:secret@replica/eye")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("admin_database_url = not a PostgreSQL URL"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let err = with("sqlite://eye.db?mode=rwc", "postgres://replica/eye")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("EYE_ADMIN_DATABASE_URL"), "{err}");
        let empty = with("postgres://p/eye", " ");
        empty.validate().unwrap();
        assert_eq!(empty.admin_database_url(), None);
    }

    #[test]
    fn out_of_range_settings_are_named_with_their_value_and_range() {
        type Change = fn(&mut Settings);
        let cases: [(&str, Change); 19] = [
            ("schema_dir", |s| {
                s.schema_dir = Some("/nonexistent/eye-schemas".into())
            }),
            ("admin_silent_minutes", |s| s.admin_silent_minutes = 0),
            ("token_refresh_ms", |s| s.token_refresh_ms = 0),
            ("queue_max_messages", |s| s.queue_max_messages = 0),
            ("queue_max_bytes", |s| s.queue_max_bytes = 1),
            ("amqp_management_url", |s| {
                s.amqp_management_url = Some("ftp://x".into())
            }),
            ("event_not_before", |s| {
                s.event_not_before = chrono::Utc::now() + chrono::Duration::days(1)
            }),
            ("api_workers", |s| s.api_workers = Some(0)),
            ("retention_days", |s| s.retention_days = Some(0)),
            ("report_retention_hours", |s| s.report_retention_hours = 0),
            ("report_timeout_secs", |s| s.report_timeout_secs = 86_401),
            ("report_max_rows", |s| s.report_max_rows = 0),
            ("publish_channels", |s| s.publish_channels = 0),
            ("worker_batch_messages", |s| s.worker_batch_messages = 0),
            ("worker_prefetch", |s| s.worker_prefetch = 0),
            ("clock_skew_secs", |s| s.clock_skew_secs = -1),
            ("max_event_bytes", |s| {
                s.max_event_bytes = s.max_request_bytes + 1
            }),
            ("queue_prefix", |s| s.queue_prefix = "a b".into()),
            ("publishable_rate_limit_burst", |s| {
                s.publishable_rate_limit_burst = 0
            }),
        ];
        for (name, set) in cases {
            let mut settings = Settings::default();
            set(&mut settings);
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("{name} = ")), "{err}");
            assert!(err.contains("must be"), "{err}");
            assert!(
                err.contains(&format!("EYE_{}", name.to_uppercase())),
                "{err}"
            );
        }
    }

    #[test]
    fn the_default_rate_limit_is_read_from_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            let settings = Settings::load(Path::new("missing.toml")).map_err(|e| e.to_string())?;
            assert_eq!(
                settings.rate_limit().to_string(),
                "10000/s, bursts of 20000"
            );
            jail.create_file(
                "eye.toml",
                "rate_limit = \"600/min\"\nrate_limit_burst = 900",
            )?;
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.rate_limit().to_string(), "600/min, bursts of 900");
            jail.set_env("EYE_RATE_LIMIT", "50000/h");
            jail.set_env("EYE_RATE_LIMIT_BURST", "1000");
            let settings = Settings::load(Path::new("eye.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.rate_limit().to_string(), "50000/h, bursts of 1000");
            settings.validate().map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn a_zero_or_unreadable_rate_limit_is_refused_naming_the_setting() {
        figment::Jail::expect_with(|jail| {
            for (value, why) in [("0/s", "at least 1 event"), ("fast", "is not a rate")] {
                jail.set_env("EYE_RATE_LIMIT", value);
                let err = Settings::load(Path::new("missing.toml"))
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(&format!("rate_limit = \"{value}\"")), "{err}");
                assert!(err.contains(why), "{err}");
            }
            Ok(())
        });
    }

    #[test]
    fn a_burst_of_zero_or_below_a_full_request_is_refused_naming_the_setting() {
        for burst in [0, 499] {
            let settings = Settings {
                rate_limit_burst: burst,
                max_events_per_request: 500,
                ..Settings::default()
            };
            let err = settings.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("rate_limit_burst = {burst} ")),
                "{err}"
            );
            assert!(err.contains("between 500 and"), "{err}");
            assert!(err.contains("EYE_RATE_LIMIT_BURST"), "{err}");
        }
    }

    #[test]
    fn zero_api_workers_from_the_environment_is_refused_and_unset_means_one_per_core() {
        figment::Jail::expect_with(|jail| {
            let settings = Settings::load(Path::new("missing.toml")).map_err(|e| e.to_string())?;
            assert_eq!(settings.api_workers, None);
            jail.set_env("EYE_API_WORKERS", "0");
            let settings = Settings::load(Path::new("missing.toml")).map_err(|e| e.to_string())?;
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains("api_workers = 0"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_and_weak_secrets_say_what_to_set() {
        let mut settings = Settings::default();
        let err = settings.jwt_secret().unwrap_err().to_string();
        assert!(err.contains("EYE_JWT_SECRET"), "{err}");
        settings.jwt_secret = Some("short".into());
        assert!(matches!(
            settings.jwt_secret(),
            Err(SettingsError::WeakSecret)
        ));
    }

    #[test]
    fn example_secrets_are_refused_naming_jwt_secret() {
        for example in EXAMPLE_SECRETS
            .iter()
            .copied()
            .chain([" Change-Me-Please-32-bytes-or-more-really "])
        {
            let settings = Settings {
                jwt_secret: Some(example.into()),
                ..Settings::default()
            };
            let err = settings.jwt_secret().unwrap_err();
            assert!(matches!(err, SettingsError::ExampleSecret), "{example}");
            assert!(err.to_string().starts_with("jwt_secret "), "{err}");
        }
        let own = Settings {
            jwt_secret: Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c".into()),
            ..Settings::default()
        };
        assert!(own.jwt_secret().is_ok());
    }

    /// Every secret written out in the repository's examples and docs (a toml
    /// `jwt_secret = "…"`, a shell `EYE_JWT_SECRET=…`, a compose `EYE_JWT_SECRET: …` or its
    /// `${…:-default}`) is refused, so copying one from the docs cannot start a service.
    #[test]
    fn every_secret_written_in_the_repository_docs_is_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![
            root.join("docker-compose.yml"),
            root.join("eye.example.toml"),
            root.join("README.md"),
        ];
        for entry in std::fs::read_dir(root.join("docs")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
        let mut found = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            found.extend(written_secrets(&text));
        }
        assert!(
            found.iter().any(|s| s.contains("openssl rand")),
            "the example toml's secret was not found: {found:?}"
        );
        for secret in found {
            let settings = Settings {
                jwt_secret: Some(secret.as_str().into()),
                ..Settings::default()
            };
            assert!(
                settings.jwt_secret().is_err(),
                "`{secret}` is written in the docs and still accepted"
            );
        }
    }

    fn written_secrets(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let line = line.trim_start_matches(['#', ' ', '-', '\t']);
            if let Some(rest) = line.strip_prefix("jwt_secret") {
                let rest = rest.trim_start_matches([' ', '=']);
                if let Some(quoted) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    found.push(quoted.to_owned());
                }
            }
            // The first mention on a line is the one assigned; later ones are `${…}` uses.
            if let Some(at) = line.find("EYE_JWT_SECRET") {
                let rest = &line[at + "EYE_JWT_SECRET".len()..];
                let value = if let Some(value) = rest.strip_prefix('=') {
                    value.split_whitespace().next().unwrap_or_default()
                } else if let Some(value) = rest.strip_prefix(": ") {
                    value.trim()
                } else {
                    continue;
                };
                let value = value.trim_matches(['"', '\'']);
                if let Some(default) = value.split_once(":-").map(|(_, d)| d) {
                    found.push(default.trim_end_matches('}').to_owned());
                } else if !value.is_empty() && !value.starts_with('$') {
                    found.push(value.to_owned());
                }
            }
        }
        found
    }
}
