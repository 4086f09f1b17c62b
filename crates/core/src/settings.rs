//! Typed settings: defaults < `eye.toml` < `EYE_*` environment variables.

use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Every knob of The Eye. Each field can be set in `eye.toml` or as `EYE_<FIELD>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// PostgreSQL (`postgres://…`) or SQLite (`sqlite://…?mode=rwc`) URL. Required outside `eye dev`.
    pub database_url: Option<SecretString>,
    /// RabbitMQ URL (`amqp://user:pass@host:5672/%2f`). Required outside `eye dev`.
    pub amqp_url: Option<SecretString>,
    /// HS256 key for api tokens, at least 32 bytes. Required outside `eye dev`.
    pub jwt_secret: Option<SecretString>,
    /// Prefix of every exchange and queue name, so tenants and tests do not collide.
    pub queue_prefix: String,
    /// Where `eye api` listens.
    pub api_addr: String,
    /// HTTP worker threads of `eye api`; 0 means one per core.
    pub api_workers: usize,
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
    /// Most events one request may carry.
    pub max_events_per_request: usize,
    /// Largest single event, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes, before and after gzip decompression.
    pub max_request_bytes: usize,
    /// How long the api waits for the broker to confirm a message before answering 503.
    pub publish_timeout_ms: u64,
    /// AMQP channels the api publishes on, and the most messages awaiting a confirm at once;
    /// requests arriving meanwhile are coalesced into the next message.
    pub publish_channels: usize,
    /// How long the api may wait to fill a message with more requests, in microseconds.
    pub publish_linger_us: u64,
    /// How often every api instance reloads revoked tokens and disabled applications.
    pub token_refresh_ms: u64,
    /// Messages the broker may hand one worker before it acknowledges any.
    pub worker_prefetch: u16,
    /// Most messages the worker stores in one transaction.
    pub worker_batch_messages: usize,
    /// A batch stops growing once its messages hold this many bytes (one message may be more).
    pub worker_batch_bytes: usize,
    /// How long the worker waits to fill a batch once the first message arrived.
    pub worker_batch_wait_ms: u64,
    /// Deliveries of one message before it is dead-lettered (a message that keeps failing).
    pub delivery_limit: u32,
    /// How far in the future an event's timestamp may be, relative to its receipt.
    pub clock_skew_secs: i64,
    /// What to do with events whose (category, name) has no validator.
    pub unknown_events: UnknownEventPolicy,
    /// Longest category or name, in characters.
    pub max_name_chars: usize,
    /// Longest string anywhere inside `data`, in characters.
    pub max_data_string_chars: usize,
    /// Messages the in-process queue of `eye dev` holds before publishing waits.
    pub memory_queue_capacity: usize,
    /// `json` for machines, `pretty` for people.
    pub log_format: LogFormat,
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
pub enum LogFormat {
    Json,
    Pretty,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            amqp_url: None,
            jwt_secret: None,
            queue_prefix: "eye".into(),
            api_addr: "127.0.0.1:8080".into(),
            api_workers: 0,
            admin_addr: "127.0.0.1:8081".into(),
            admin_session_hours: 12,
            admin_login_attempts: 5,
            admin_login_window_secs: 900,
            admin_page_size: 50,
            admin_trusted_proxies: Vec::new(),
            admin_search_timeout_ms: 5_000,
            max_events_per_request: 500,
            max_event_bytes: 32 * 1024,
            max_request_bytes: 512 * 1024,
            publish_timeout_ms: 5_000,
            publish_channels: 8,
            publish_linger_us: 500,
            token_refresh_ms: 2_000,
            worker_prefetch: 16,
            worker_batch_messages: 128,
            worker_batch_bytes: 1024 * 1024,
            worker_batch_wait_ms: 20,
            delivery_limit: 10,
            clock_skew_secs: 60,
            unknown_events: UnknownEventPolicy::Accept,
            max_name_chars: 128,
            max_data_string_chars: 8 * 1024,
            memory_queue_capacity: 10_000,
            log_format: LogFormat::Json,
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

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("could not read settings: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{0} is not set: export EYE_{1} or set `{0}` in eye.toml")]
    Missing(&'static str, &'static str),
    #[error("jwt_secret is too short: use at least 32 random bytes, e.g. `openssl rand -hex 32`")]
    WeakSecret,
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
        Ok(secret.as_bytes())
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn publish_linger(&self) -> Duration {
        Duration::from_micros(self.publish_linger_us)
    }

    pub fn admin_search_timeout(&self) -> Duration {
        Duration::from_millis(self.admin_search_timeout_ms)
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
}
