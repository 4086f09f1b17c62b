//! Prometheus metrics. Every service counts into a [`Registry`] of its own and renders it on
//! `/metrics`: one per process in production, one per service when several share a process
//! in tests, so a scrape shows one service. Unlabelled instruments are looked up once and
//! kept; labelled ones are looked up in the registry when counted (a hash of their labels).
//! Label values are bounded: route patterns and status codes, problem and reason codes
//! from the code, application names from the database.
//!
//! Every metric is declared once in [`CATALOGUE`], with its help text; `docs/OPERATIONS.md`
//! explains each and a test keeps the two in step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// What a metric measures and how it is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

const fn def(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        help,
        labels,
    }
}

use Kind::{Counter as C, Gauge as G, Histogram as H};

pub const API_REQUESTS: Def = def(
    "eye_api_requests_total",
    C,
    &["route", "status", "code"],
    "Requests answered by the api, by route, HTTP status and problem code (empty on success).",
);
pub const API_REQUEST_SECONDS: Def = def(
    "eye_api_request_duration_seconds",
    H,
    &["route"],
    "Time from a request's arrival to its answer.",
);
pub const API_EVENTS_ACCEPTED: Def = def(
    "eye_api_events_accepted_total",
    C,
    &["application"],
    "Events answered 202: confirmed by the broker.",
);
pub const API_BODY_BYTES: Def = def(
    "eye_api_request_body_bytes",
    H,
    &[],
    "Size of request bodies as sent (compressed, if they were).",
);
pub const API_CONFIRM_SECONDS: Def = def(
    "eye_api_broker_confirm_seconds",
    H,
    &[],
    "Time from publishing a message to the broker's confirm (or refusal).",
);
pub const API_ENVELOPES_PER_MESSAGE: Def = def(
    "eye_api_outbox_envelopes_per_message",
    H,
    &[],
    "Requests carried by one broker message.",
);
pub const API_IN_FLIGHT: Def = def(
    "eye_api_messages_in_flight",
    G,
    &[],
    "Messages published and awaiting the broker's confirm.",
);
pub const API_PUBLISH_FAILURES: Def = def(
    "eye_api_publish_failures_total",
    C,
    &["reason"],
    "Requests whose events were not confirmed, by reason (the problem code they were answered with).",
);
pub const API_TOKEN_CACHE_TOKENS: Def = def(
    "eye_api_token_cache_tokens",
    G,
    &[],
    "Api tokens in this instance's cache.",
);
pub const API_TOKEN_CACHE_AGE: Def = def(
    "eye_api_token_cache_age_seconds",
    G,
    &[],
    "Time since the token cache was last reloaded from the database.",
);
pub const API_RATE_LIMITED: Def = def(
    "eye_api_rate_limited_total",
    C,
    &["application"],
    "Requests refused for their application's rate limit: 429 `rate_limited`, or 413 `batch_over_burst` for a batch larger than the burst.",
);

pub const WORKER_MESSAGES: Def = def(
    "eye_worker_messages_total",
    C,
    &[],
    "Messages taken from the queue and acknowledged after their batch was stored.",
);
pub const WORKER_EVENTS_CONSUMED: Def = def(
    "eye_worker_events_consumed_total",
    C,
    &[],
    "Events read from messages, whatever became of them.",
);
pub const WORKER_EVENTS_STORED: Def = def(
    "eye_worker_events_stored_total",
    C,
    &["application"],
    "Events written to `events` (a duplicate of a stored event is not counted).",
);
pub const WORKER_EVENTS_DUPLICATE: Def = def(
    "eye_worker_events_duplicate_total",
    C,
    &[],
    "Events skipped because the same application already stored the same id.",
);
pub const WORKER_EVENTS_REJECTED: Def = def(
    "eye_worker_events_rejected_total",
    C,
    &["application", "reason"],
    "Events written to `rejected_events`, by the code of their first reason.",
);
pub const WORKER_BATCH_EVENTS: Def = def(
    "eye_worker_batch_events",
    H,
    &[],
    "Events in one stored batch.",
);
pub const WORKER_COMMIT_SECONDS: Def = def(
    "eye_worker_commit_seconds",
    H,
    &[],
    "Time to write and commit one batch's rows.",
);
pub const WORKER_RETRIES: Def = def(
    "eye_worker_retries_total",
    C,
    &["class"],
    "Failed attempts that were retried: `database` (unreachable or busy), `queue` (the broker connection was lost), `split` (the database refused a row; the rows are written in halves).",
);
pub const WORKER_DEAD_LETTERS: Def = def(
    "eye_worker_dead_letters_total",
    C,
    &["source"],
    "Messages written to `dead_letters`: `unreadable` (no worker can read or store them) or `broker` (moved from RabbitMQ's dead-letter queue).",
);
pub const WORKER_LAG: Def = def(
    "eye_worker_lag_seconds",
    G,
    &[],
    "Age of the oldest event in the last stored batch: now minus its `received_at`.",
);

pub const ADMIN_REQUESTS: Def = def(
    "eye_admin_requests_total",
    C,
    &["route", "status"],
    "Requests answered by the admin, by route pattern and HTTP status.",
);
pub const ADMIN_REQUEST_SECONDS: Def = def(
    "eye_admin_request_duration_seconds",
    H,
    &["route"],
    "Time to answer an admin page or read-api request, by route pattern.",
);
pub const ADMIN_LOGINS_FAILED: Def = def(
    "eye_admin_logins_failed_total",
    C,
    &["reason"],
    "Refused admin logins: `credentials` (wrong user or password) or `throttled`.",
);
pub const ADMIN_READ_API_REQUESTS: Def = def(
    "eye_admin_read_api_requests_total",
    C,
    &["application", "status"],
    "Read-api requests by the application of their token and HTTP status.",
);

/// Every metric The Eye exports.
pub const CATALOGUE: &[Def] = &[
    API_REQUESTS,
    API_REQUEST_SECONDS,
    API_EVENTS_ACCEPTED,
    API_BODY_BYTES,
    API_CONFIRM_SECONDS,
    API_ENVELOPES_PER_MESSAGE,
    API_IN_FLIGHT,
    API_PUBLISH_FAILURES,
    API_TOKEN_CACHE_TOKENS,
    API_TOKEN_CACHE_AGE,
    API_RATE_LIMITED,
    WORKER_MESSAGES,
    WORKER_EVENTS_CONSUMED,
    WORKER_EVENTS_STORED,
    WORKER_EVENTS_DUPLICATE,
    WORKER_EVENTS_REJECTED,
    WORKER_BATCH_EVENTS,
    WORKER_COMMIT_SECONDS,
    WORKER_RETRIES,
    WORKER_DEAD_LETTERS,
    WORKER_LAG,
    ADMIN_REQUESTS,
    ADMIN_REQUEST_SECONDS,
    ADMIN_LOGINS_FAILED,
    ADMIN_READ_API_REQUESTS,
];

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BYTES: &[f64] = &[
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];
/// Counts: events in a batch, envelopes in a message.
const COUNTS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// How often histograms are folded into their buckets when nobody scrapes, so that what they
/// hold stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> = Metadata::new("eye", Level::INFO, Some("eye"));

/// Where one service's metrics are counted; cheap to clone. A disabled registry hands out
/// instruments that do nothing and renders nothing.
#[derive(Clone)]
pub struct Registry(Option<Arc<Inner>>);

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    upkeep: AtomicBool,
}

impl Registry {
    /// A registry holding every metric of [`CATALOGUE`], described.
    pub fn enabled() -> Self {
        let recorder = builder().build_recorder();
        for def in CATALOGUE {
            let help = SharedString::const_str(def.help);
            let name = def.name.into();
            match def.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Gauge => recorder.describe_gauge(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
        let handle = recorder.handle();
        Self(Some(Arc::new(Inner {
            recorder,
            handle,
            upkeep: AtomicBool::new(false),
        })))
    }

    /// A registry that counts nothing (`metrics_enabled = false`).
    pub fn disabled() -> Self {
        Self(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    pub fn counter(&self, def: &Def, labels: &[(&'static str, SharedString)]) -> Counter {
        match &self.0 {
            Some(inner) => inner
                .recorder
                .register_counter(&key(def, Kind::Counter, labels), &METADATA),
            None => Counter::noop(),
        }
    }

    pub fn gauge(&self, def: &Def, labels: &[(&'static str, SharedString)]) -> Gauge {
        match &self.0 {
            Some(inner) => inner
                .recorder
                .register_gauge(&key(def, Kind::Gauge, labels), &METADATA),
            None => Gauge::noop(),
        }
    }

    pub fn histogram(&self, def: &Def, labels: &[(&'static str, SharedString)]) -> Histogram {
        match &self.0 {
            Some(inner) => inner
                .recorder
                .register_histogram(&key(def, Kind::Histogram, labels), &METADATA),
            None => Histogram::noop(),
        }
    }

    /// The Prometheus text exposition of everything counted so far; empty when disabled.
    pub fn render(&self) -> String {
        self.0
            .as_ref()
            .map(|inner| inner.handle.render())
            .unwrap_or_default()
    }

    /// Starts the periodic upkeep once per registry (later calls do nothing); it ends when
    /// the registry is dropped. Needs a tokio runtime.
    pub fn spawn_upkeep(&self) {
        let Some(inner) = &self.0 else { return };
        if inner.upkeep.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.handle.run_upkeep();
            }
        });
    }
}

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A route pattern (`/v1/events`) as a label, or `unmatched` for paths no route serves: a
/// label never holds a path a client chose.
pub fn route_label(pattern: Option<String>) -> SharedString {
    match pattern {
        Some(pattern) => SharedString::from_owned(pattern),
        None => SharedString::const_str("unmatched"),
    }
}

/// An HTTP status as a label, without formatting the common ones.
pub fn status_label(status: u16) -> SharedString {
    let known = match status {
        200 => "200",
        202 => "202",
        204 => "204",
        303 => "303",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        504 => "504",
        _ => return SharedString::from_owned(status.to_string()),
    };
    SharedString::const_str(known)
}

fn builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    // The bucket lists are constants, non-empty: building cannot fail.
    builder
        .set_buckets(COUNTS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES))
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

fn key(def: &Def, kind: Kind, labels: &[(&'static str, SharedString)]) -> Key {
    debug_assert_eq!(def.kind, kind, "{} is not a {kind:?}", def.name);
    debug_assert!(
        labels.len() == def.labels.len() && labels.iter().zip(def.labels).all(|((k, _), d)| k == d),
        "{} is labelled {:?}",
        def.name,
        def.labels
    );
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, v.clone()))
        .collect();
    Key::from_parts(def.name, labels)
}

/// A label value from a set that code defines but does not list in one place (validation
/// reason codes): the first `cap` distinct values are kept, later ones count as `other`, so
/// a bug cannot grow the series without bound.
pub struct BoundedLabels {
    seen: Mutex<Vec<SharedString>>,
    cap: usize,
}

impl BoundedLabels {
    pub fn new(cap: usize) -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
            cap,
        }
    }

    /// `value` as a label if it is a short snake_case code within the cap, else `other`.
    pub fn label(&self, value: &str) -> SharedString {
        let code_like = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !code_like {
            return SharedString::const_str("other");
        }
        let Ok(mut seen) = self.seen.lock() else {
            return SharedString::const_str("other");
        };
        if let Some(known) = seen.iter().find(|s| s.as_ref() == value) {
            return known.clone();
        }
        if seen.len() >= self.cap {
            return SharedString::const_str("other");
        }
        let label = SharedString::from_owned(value.to_owned());
        seen.push(label.clone());
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_renders_what_was_counted_with_its_labels_and_help() {
        let registry = Registry::enabled();
        registry
            .counter(
                &API_RATE_LIMITED,
                &[("application", SharedString::from_owned("shop".into()))],
            )
            .increment(3);
        registry.histogram(&WORKER_COMMIT_SECONDS, &[]).record(0.02);
        let text = registry.render();
        assert!(
            text.contains("eye_api_rate_limited_total{application=\"shop\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# HELP eye_api_rate_limited_total Requests refused"),
            "{text}"
        );
        assert!(
            text.contains("eye_worker_commit_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_disabled_registry_counts_and_renders_nothing() {
        let registry = Registry::disabled();
        registry.counter(&WORKER_MESSAGES, &[]).increment(1);
        assert_eq!(registry.render(), "");
    }

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut names: Vec<_> = CATALOGUE.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for def in CATALOGUE {
            assert!(def.name.starts_with("eye_"), "{}", def.name);
            assert_eq!(
                def.name.ends_with("_total"),
                def.kind == Kind::Counter,
                "{}",
                def.name
            );
        }
    }

    #[test]
    fn bounded_labels_keep_codes_up_to_the_cap_and_refuse_free_text() {
        let labels = BoundedLabels::new(2);
        assert_eq!(labels.label("required").as_ref(), "required");
        assert_eq!(labels.label("too_long").as_ref(), "too_long");
        assert_eq!(labels.label("required").as_ref(), "required");
        assert_eq!(labels.label("third").as_ref(), "other");
        assert_eq!(labels.label("Not a code!").as_ref(), "other");
    }
}
