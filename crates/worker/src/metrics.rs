//! What a worker counts. Events are counted by their application's name, which the worker
//! reads from `applications` (and re-reads when it meets an id it does not know, at most once
//! per [`NAMES_REFRESH`]); reasons by the code of an event's first reason, bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use eye_core::metrics::{self as m, BoundedLabels, Registry};
use eye_entity::applications;
use metrics::{Counter, Gauge, Histogram, SharedString};
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use uuid::Uuid;

use crate::store::{Row, Written};

/// How often, at most, unknown application ids make the worker re-read the names.
const NAMES_REFRESH: Duration = Duration::from_secs(10);
/// How long reading the names may take.
const NAMES_TIMEOUT: Duration = Duration::from_secs(1);
/// Distinct reason codes counted apart; more count as `other`.
const MAX_REASONS: usize = 128;
/// Where dead letters come from: messages no worker can read, and RabbitMQ's dead-letter queue.
const DEAD_LETTER_SOURCES: [&str; 2] = ["unreadable", "broker"];
/// Applications whose names are kept for labels; more count as `other`.
const MAX_APPLICATIONS: usize = 10_000;

#[derive(Clone)]
pub struct WorkerMetrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    messages: Counter,
    consumed: Counter,
    duplicates: Counter,
    batch_events: Histogram,
    commit_seconds: Histogram,
    lag: Gauge,
    reasons: BoundedLabels,
    names: Mutex<Names>,
}

#[derive(Default)]
struct Names {
    by_id: HashMap<Uuid, SharedString>,
    read_at: Option<Instant>,
}

/// Why a write or a batch was tried again.
#[derive(Debug, Clone, Copy)]
pub enum Retry {
    /// The database was unreachable or busy.
    Database,
    /// The connection to the queue was lost.
    Queue,
    /// The database refused a row: the rows are written in halves.
    Split,
}

impl Retry {
    fn label(self) -> &'static str {
        match self {
            Retry::Database => "database",
            Retry::Queue => "queue",
            Retry::Split => "split",
        }
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new(Registry::disabled())
    }
}

impl WorkerMetrics {
    pub fn new(registry: Registry) -> Self {
        registry.spawn_upkeep();
        // Retries and dead letters show at zero before the first, so that alerts see the first.
        for class in [Retry::Database, Retry::Queue, Retry::Split] {
            registry
                .counter(
                    &m::WORKER_RETRIES,
                    &[("class", SharedString::const_str(class.label()))],
                )
                .increment(0);
        }
        for source in DEAD_LETTER_SOURCES {
            registry
                .counter(
                    &m::WORKER_DEAD_LETTERS,
                    &[("source", SharedString::const_str(source))],
                )
                .increment(0);
        }
        Self(Arc::new(Inner {
            messages: registry.counter(&m::WORKER_MESSAGES, &[]),
            consumed: registry.counter(&m::WORKER_EVENTS_CONSUMED, &[]),
            duplicates: registry.counter(&m::WORKER_EVENTS_DUPLICATE, &[]),
            batch_events: registry.histogram(&m::WORKER_BATCH_EVENTS, &[]),
            commit_seconds: registry.histogram(&m::WORKER_COMMIT_SECONDS, &[]),
            lag: registry.gauge(&m::WORKER_LAG, &[]),
            reasons: BoundedLabels::new(MAX_REASONS),
            names: Mutex::new(Names::default()),
            registry,
        }))
    }

    fn enabled(&self) -> bool {
        self.0.registry.is_enabled()
    }

    /// A batch was stored and acknowledged.
    pub(crate) fn batch(
        &self,
        messages: usize,
        events: usize,
        oldest: Option<chrono::DateTime<Utc>>,
    ) {
        self.0.messages.increment(messages as u64);
        self.0.consumed.increment(events as u64);
        self.0.batch_events.record(events as f64);
        if let Some(oldest) = oldest {
            let lag = (Utc::now() - oldest).num_milliseconds().max(0) as f64 / 1000.0;
            self.0.lag.set(lag);
        }
    }

    /// One successful write of `rows`, which took `took`.
    pub(crate) async fn written(
        &self,
        db: &DatabaseConnection,
        rows: &[Row],
        written: &Written,
        took: Duration,
    ) {
        if !self.enabled() {
            return;
        }
        self.0.commit_seconds.record(took.as_secs_f64());
        self.0.duplicates.increment(written.duplicates);
        let mut rejected: HashMap<(Uuid, SharedString), u64> = HashMap::new();
        let mut dead = 0;
        for row in rows {
            match row {
                Row::Rejected(r) => {
                    let code = r.reasons[0]["code"].as_str().unwrap_or("");
                    *rejected
                        .entry((r.application_id, self.0.reasons.label(code)))
                        .or_default() += 1;
                }
                Row::Dead(_) => dead += 1,
                Row::Event(_) => {}
            }
        }
        if dead > 0 {
            self.dead_letters("unreadable", dead);
        }
        let ids = written
            .stored_by_application
            .iter()
            .map(|(id, _)| *id)
            .chain(rejected.keys().map(|(id, _)| *id));
        self.learn_names(db, ids).await;
        for (application, stored) in &written.stored_by_application {
            let label = self.name(*application);
            self.0
                .registry
                .counter(&m::WORKER_EVENTS_STORED, &[("application", label)])
                .increment(*stored);
        }
        for ((application, reason), n) in rejected {
            let label = self.name(application);
            self.0
                .registry
                .counter(
                    &m::WORKER_EVENTS_REJECTED,
                    &[("application", label), ("reason", reason)],
                )
                .increment(n);
        }
    }

    pub(crate) fn retried(&self, why: Retry) {
        self.0
            .registry
            .counter(
                &m::WORKER_RETRIES,
                &[("class", SharedString::const_str(why.label()))],
            )
            .increment(1);
    }

    /// `source` is one of [`DEAD_LETTER_SOURCES`].
    pub(crate) fn dead_letters(&self, source: &'static str, n: u64) {
        self.0
            .registry
            .counter(
                &m::WORKER_DEAD_LETTERS,
                &[("source", SharedString::const_str(source))],
            )
            .increment(n);
    }

    fn name(&self, application: Uuid) -> SharedString {
        let names = self.0.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .by_id
            .get(&application)
            .cloned()
            .unwrap_or(SharedString::const_str("other"))
    }

    /// Re-reads the names when one of `ids` is unknown and the last read is old enough.
    async fn learn_names(&self, db: &DatabaseConnection, ids: impl Iterator<Item = Uuid>) {
        let due = {
            let names = self.0.names.lock().unwrap_or_else(|p| p.into_inner());
            let mut ids = ids;
            ids.any(|id| !names.by_id.contains_key(&id))
                && names.read_at.is_none_or(|at| at.elapsed() >= NAMES_REFRESH)
        };
        if !due {
            return;
        }
        // Between a batch's commit and its ack: a slow database must not hold the ack long.
        let query = applications::Entity::find()
            .select_only()
            .column(applications::Column::Id)
            .column(applications::Column::Name)
            .limit(MAX_APPLICATIONS as u64)
            .into_tuple::<(Uuid, String)>()
            .all(db);
        let read = match tokio::time::timeout(NAMES_TIMEOUT, query).await {
            Ok(read) => read,
            Err(_) => Err(sea_orm::DbErr::Custom("timed out".into())),
        };
        let mut names = self.0.names.lock().unwrap_or_else(|p| p.into_inner());
        names.read_at = Some(Instant::now());
        match read {
            Ok(rows) => {
                names.by_id = rows
                    .into_iter()
                    .map(|(id, name)| (id, SharedString::from_owned(name)))
                    .collect();
            }
            Err(e) => tracing::debug!(error = %e, "could not read application names for metrics"),
        }
    }
}
