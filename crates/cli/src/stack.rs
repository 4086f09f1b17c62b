//! A running The Eye: database, queue, api and workers, on either backend.

use std::time::Duration;

use anyhow::Context;
use eye_admin::{Admin, QueueProbe};
use eye_api::Api;
use eye_core::Settings;
use eye_core::queue::{
    AmqpConsumer, AmqpPublisher, Consumer, MemoryQueue, Publisher, Topology, TrendPublisher,
};
use eye_core::settings::QueueCompression;
use eye_migration::{Migrator, MigratorTrait};
use eye_worker::Worker;
use eye_worker::consume::Shutdown;
use eye_worker::dead_letters::DeadLetterMover;
use eye_worker::metrics::WorkerMetrics;
use eye_worker::reload::Validators;

use crate::metrics::{Registries, WorkerListener};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Where messages travel between api and workers.
#[derive(Clone)]
pub enum Queue {
    /// RabbitMQ at this URL.
    Amqp(String),
    /// The in-process queues of `eye dev` (events, and report jobs); api and workers must
    /// share the process.
    Memory {
        events: MemoryQueue,
        reports: MemoryQueue,
    },
}

impl Queue {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Queue::Amqp(settings.amqp_url()?.to_owned()))
    }

    pub fn memory(settings: &Settings) -> Self {
        Queue::Memory {
            events: MemoryQueue::new(settings.memory_queue_capacity, settings.publish_timeout()),
            reports: MemoryQueue::new(REPORT_JOBS_HELD, settings.publish_timeout()),
        }
    }

    /// The in-process events queue, if this is one.
    pub fn in_process(&self) -> Option<&MemoryQueue> {
        match self {
            Queue::Amqp(_) => None,
            Queue::Memory { events, .. } => Some(events),
        }
    }

    pub fn publisher(&self, settings: &Settings) -> anyhow::Result<Publisher> {
        Ok(match self {
            Queue::Amqp(url) => Publisher::Amqp(std::sync::Arc::new(
                AmqpPublisher::new(
                    url,
                    events_topology(settings),
                    settings.publish_channels,
                    settings.publish_timeout(),
                )?
                .with_compression(settings.queue_compression == QueueCompression::Lz4),
            )),
            Queue::Memory { events, .. } => Publisher::Memory(events.clone()),
        })
    }

    /// The in-process report jobs queue, if this is one.
    pub fn in_process_reports(&self) -> Option<&MemoryQueue> {
        match self {
            Queue::Amqp(_) => None,
            Queue::Memory { reports, .. } => Some(reports),
        }
    }

    /// Where the admin queues report jobs.
    pub fn reports_publisher(&self, settings: &Settings) -> anyhow::Result<Publisher> {
        Ok(match self {
            Queue::Amqp(url) => Publisher::Amqp(std::sync::Arc::new(
                AmqpPublisher::new(
                    url,
                    reports_topology(settings),
                    1,
                    settings.publish_timeout(),
                )?
                .with_compression(false),
            )),
            Queue::Memory { reports, .. } => Publisher::Memory(reports.clone()),
        })
    }

    /// Where a worker process takes report jobs, one at a time.
    pub fn reports_consumer(&self, settings: &Settings) -> Consumer {
        match self {
            Queue::Amqp(url) => Consumer::Amqp(Box::new(AmqpConsumer::new(
                url,
                reports_topology(settings),
                1,
            ))),
            Queue::Memory { reports, .. } => Consumer::Memory(reports.clone()),
        }
    }

    /// What the admin dashboard asks for queue depth; `consumers` is how many workers this
    /// process runs beside an in-process queue (RabbitMQ counts its own).
    pub fn probe(&self, settings: &Settings, consumers: usize) -> QueueProbe {
        match self {
            Queue::Amqp(url) => QueueProbe::Amqp {
                url: url.clone(),
                topology: events_topology(settings),
            },
            Queue::Memory { events, .. } => QueueProbe::Memory {
                queue: events.clone(),
                consumers: u32::try_from(consumers).unwrap_or(u32::MAX),
            },
        }
    }

    pub fn consumer(&self, settings: &Settings) -> Consumer {
        match self {
            Queue::Amqp(url) => Consumer::Amqp(Box::new(AmqpConsumer::new(
                url,
                events_topology(settings),
                settings.worker_prefetch,
            ))),
            Queue::Memory { events, .. } => Consumer::Memory(events.clone()),
        }
    }

    /// Starts the report runner of a worker process. The in-process queue first gets back
    /// the jobs still running in the database: their messages went with the last process.
    pub async fn spawn_report_runner(
        &self,
        settings: &Settings,
        db: &DatabaseConnection,
        reads: &DatabaseConnection,
        stop: &CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        if let Queue::Memory { .. } = self {
            let publisher = self.reports_publisher(settings)?;
            for id in eye_entity::report_jobs::running(db).await? {
                publisher
                    .publish(&eye_entity::report_jobs::message(id))
                    .await
                    .context("could not queue again a report left running")?;
            }
        }
        let runner = eye_worker::reports::ReportRunner::new(
            db.clone(),
            reads.clone(),
            self.reports_consumer(settings),
            settings,
            stop.clone(),
        );
        Ok(tokio::spawn(runner.run_until_stopped()))
    }

    /// Where this process's workers publish the per-minute trends.
    pub fn trend_publisher(&self, settings: &Settings) -> TrendPublisher {
        match self {
            Queue::Amqp(url) => {
                TrendPublisher::amqp(url, &Topology::new(&settings.queue_prefix).trends_exchange)
            }
            Queue::Memory { events, .. } => events.trend_publisher(),
        }
    }

    /// Where the per-minute trends can be subscribed to.
    pub fn trend_source(&self, settings: &Settings) -> eye_core::queue::TrendSource {
        self.probe(settings, 0).trend_source()
    }

    /// Starts the trends publisher of a worker process (one per process, whatever its
    /// concurrency: the database elects one per minute among all processes).
    pub fn spawn_trends(
        &self,
        settings: &Settings,
        db: &DatabaseConnection,
        stop: &CancellationToken,
    ) -> JoinHandle<()> {
        let runner =
            eye_worker::trends::TrendRunner::new(db.clone(), self.trend_publisher(settings));
        tokio::spawn(runner.run_until_stopped(stop.clone()))
    }

    /// Refuses further publishing on the in-process queues (RabbitMQ's are not this
    /// process's to close).
    pub fn close(&self) {
        if let Queue::Memory { events, reports } = self {
            events.close();
            reports.close();
        }
    }

    /// Sets the broker's queue policy (RabbitMQ only): idempotent, so every service does it
    /// at start and a changed setting takes effect on the live queue.
    pub async fn apply_policies(&self, settings: &Settings) -> anyhow::Result<()> {
        if let Queue::Amqp(_) = self {
            crate::broker::apply_policies(settings).await?;
        }
        Ok(())
    }

    /// The task that moves RabbitMQ's dead-letter queue into the `dead_letters` table; the
    /// in-process queue has none (its worker writes dead letters there directly).
    pub fn dead_letter_mover(
        &self,
        settings: &Settings,
        db: &DatabaseConnection,
        stop: &CancellationToken,
        metrics: &WorkerMetrics,
    ) -> Option<JoinHandle<()>> {
        let Queue::Amqp(url) = self else {
            return None;
        };
        let consumer = Consumer::Amqp(Box::new(AmqpConsumer::of_dead_letters(
            url,
            events_topology(settings),
            settings.worker_prefetch,
        )));
        let mover =
            DeadLetterMover::new(db.clone(), consumer, stop.clone()).with_metrics(metrics.clone());
        Some(tokio::spawn(mover.run_until_stopped()))
    }
}

/// The events' names, their quorum queues declared with `queue_replicas`.
fn events_topology(settings: &Settings) -> Topology {
    Topology::new(&settings.queue_prefix).with_replicas(settings.queue_replicas())
}

/// The report jobs' names, declared like the events'.
fn reports_topology(settings: &Settings) -> Topology {
    Topology::reports(&settings.queue_prefix).with_replicas(settings.queue_replicas())
}

/// Report jobs a queue holds (in-process, or `{prefix}.reports` by its policy) before asking
/// for one more waits (and answers 503).
pub(crate) const REPORT_JOBS_HELD: usize = 1_000;

/// Connects to PostgreSQL or SQLite. Connecting is lazy about nothing: a wrong URL fails here.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    Database::connect(pool(url))
        .await
        .with_context(|| format!("failed to connect to the database at {}", redact(url)))
}

/// Every pool's size, timeouts and SQLite pragmas.
fn pool(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(16)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false)
        .map_sqlx_sqlite_opts(sqlite_pragmas);
    options
}

/// Set on every connection the pool opens, not only the first: most pragmas belong to one
/// connection. WAL lets the api read tokens while the worker writes; `NORMAL` syncs at WAL
/// checkpoints only, which WAL keeps consistent after a crash; a writer waits for another
/// instead of failing at once; foreign keys are checked as on PostgreSQL.
fn sqlite_pragmas(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
}

/// Where the admin and the report runner read events: `admin_database_url`, or else `db`.
/// The replica's pool connects when first used: a replica that is away fails the reads
/// that need it, never the start of a worker that stores events.
pub async fn reads(
    settings: &Settings,
    db: &DatabaseConnection,
) -> anyhow::Result<DatabaseConnection> {
    let Some(url) = settings.admin_database_url() else {
        return Ok(db.clone());
    };
    let mut options = pool(url);
    options.connect_lazy(true);
    Database::connect(options)
        .await
        .context("admin_database_url (EYE_ADMIN_DATABASE_URL)")
}

/// Brings the schema up to date and creates the coming months' partitions.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None)
        .await
        .context("failed to migrate the database")?;
    eye_entity::partitions::create_ahead(db, chrono::Utc::now(), None)
        .await
        .context("failed to create the coming months' partitions")?;
    Ok(())
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Api, admin and workers running in this process, stopped together.
pub struct Running {
    pub api_port: u16,
    pub admin_port: u16,
    /// Where the workers serve `/metrics`, when they have a listener of their own.
    pub worker_metrics_port: Option<u16>,
    worker_metrics: Option<WorkerListener>,
    api: actix_web::dev::ServerHandle,
    api_task: JoinHandle<std::io::Result<()>>,
    admin: eye_admin::AdminHandle,
    admin_task: JoinHandle<std::io::Result<()>>,
    workers: Vec<WorkerHandle>,
    mover: Option<JoinHandle<()>>,
    schema_watch: Option<JoinHandle<()>>,
    upkeep: Option<JoinHandle<()>>,
    reports: Option<JoinHandle<()>>,
    trends: Option<JoinHandle<()>>,
    stop: CancellationToken,
    queue: Queue,
}

/// Starts the api, the admin and `workers` workers (at least one) on one database and queue,
/// counting into `metrics`.
pub async fn start(
    settings: &Settings,
    db: &DatabaseConnection,
    queue: &Queue,
    workers: usize,
    metrics: &Registries,
) -> anyhow::Result<Running> {
    start_with_workers(settings, db, queue, workers.max(1), metrics).await
}

/// Like [`start`], but `workers` may be 0 for tests that drive a worker themselves.
pub async fn start_with_workers(
    settings: &Settings,
    db: &DatabaseConnection,
    queue: &Queue,
    workers: usize,
    metrics: &Registries,
) -> anyhow::Result<Running> {
    eye_admin::check_settings(settings)?;
    let reads = reads(settings, db).await?;
    let seen = if workers > 0 {
        latest_reload(settings, db).await
    } else {
        None
    };
    let validators = load_validators(settings)?;
    queue.apply_policies(settings).await?;
    let worker_metrics = if workers > 0 {
        metrics.serve_worker(settings)?
    } else {
        None
    };
    let api = Api::build(
        settings,
        db.clone(),
        queue.publisher(settings)?,
        metrics.api.clone(),
    )
    .await?;
    let api_port = api.port();
    let handle = api.handle();
    let api_task = tokio::spawn(api.run_until_stopped());
    // The admin replays dead letters through a publisher of its own, as the api publishes.
    let admin = Admin::build(
        settings,
        db.clone(),
        reads.clone(),
        queue.probe(settings, workers),
        eye_admin::Publishers {
            dead_letters: Some(queue.publisher(settings)?),
            reports: Some(queue.reports_publisher(settings)?),
        },
        metrics.admin.clone(),
    )
    .await?;
    let admin_port = admin.port();
    let admin_handle = admin.handle();
    let admin_task = tokio::spawn(admin.run_until_stopped());
    let stop = CancellationToken::new();
    let mover = (workers > 0)
        .then(|| queue.dead_letter_mover(settings, db, &stop, &metrics.worker))
        .flatten();
    let schema_watch = (workers > 0)
        .then(|| validators.watch(db.clone(), settings.token_refresh(), stop.clone(), seen))
        .flatten();
    let upkeep = (workers > 0)
        .then(|| eye_worker::upkeep::spawn(db.clone(), settings.retention_days, stop.clone()));
    let reports = if workers > 0 {
        Some(
            queue
                .spawn_report_runner(settings, db, &reads, &stop)
                .await?,
        )
    } else {
        None
    };
    let trends = (workers > 0).then(|| queue.spawn_trends(settings, db, &stop));
    let workers = (0..workers)
        .map(|_| {
            let worker = Worker::new(db.clone(), queue.consumer(settings), settings, stop.clone())
                .with_metrics(metrics.worker.clone())
                .with_validators(validators.clone());
            spawn_worker(worker)
        })
        .collect();
    Ok(Running {
        api_port,
        admin_port,
        worker_metrics_port: worker_metrics.as_ref().map(|l| l.port),
        worker_metrics,
        api: handle,
        api_task,
        admin: admin_handle,
        admin_task,
        workers,
        mover,
        schema_watch,
        upkeep,
        reports,
        trends,
        stop,
        queue: queue.clone(),
    })
}

/// The latest schema reload request, to read before [`load_validators`] and hand to
/// `Validators::watch`; nothing to read without `schema_dir`.
pub async fn latest_reload(settings: &Settings, db: &DatabaseConnection) -> Option<i64> {
    settings.schema_dir.as_ref()?;
    Validators::latest_reload(db).await
}

/// The event types every worker of this process checks: the built-in ones and those of
/// `schema_dir`. A file that cannot be used stops the start, named.
pub fn load_validators(settings: &Settings) -> anyhow::Result<Validators> {
    Validators::load(settings).map_err(|errors| {
        anyhow::anyhow!(
            "schema_dir (EYE_SCHEMA_DIR) holds files that cannot be used; fix or remove them \
             (`eye schemas check DIR` checks a directory): {errors}"
        )
    })
}

impl Running {
    /// Stops everything now, without draining; for tests that end abruptly.
    pub fn abort(self) {
        self.stop.cancel();
        self.queue.close();
        tokio::spawn(self.api.stop(false));
        tokio::spawn(self.admin.stop(false));
        self.api_task.abort();
        self.admin_task.abort();
        if let Some(listener) = self.worker_metrics {
            tokio::spawn(listener.stop());
        }
    }

    /// Stops taking requests, lets those in flight finish, then stops the workers once they
    /// stored everything the in-process queue still holds; says what they drained and what
    /// they could not store.
    pub async fn shutdown(self) -> Shutdown {
        self.api.stop(true).await;
        let _ = self.api_task.await;
        self.admin.stop(true).await;
        let _ = self.admin_task.await;
        self.queue.close();
        self.stop.cancel();
        let mut total = Shutdown::default();
        for worker in self.workers {
            let shutdown = worker.finish().await;
            total.drained += shutdown.drained;
            total.unstored += shutdown.unstored;
        }
        if let Some(mover) = self.mover {
            let _ = mover.await;
        }
        if let Some(watch) = self.schema_watch {
            let _ = watch.await;
        }
        if let Some(upkeep) = self.upkeep {
            let _ = upkeep.await;
        }
        if let Some(reports) = self.reports {
            let _ = reports.await;
        }
        if let Some(trends) = self.trends {
            let _ = trends.await;
        }
        if let Some(listener) = self.worker_metrics {
            listener.stop().await;
        }
        if let Some(queue) = self.queue.in_process() {
            // What no worker took (one that stopped early) is lost too.
            total.unstored += Consumer::Memory(queue.clone()).abandon();
        }
        total
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A running worker and, once it stopped, what it drained.
pub struct WorkerHandle {
    task: JoinHandle<()>,
    report: tokio::sync::oneshot::Receiver<Shutdown>,
}

/// Starts a worker supervised: a panicked worker ends the process rather than leave the queue
/// unconsumed (what it held returns to the broker).
pub fn spawn_worker(worker: Worker) -> WorkerHandle {
    let (tx, report) = tokio::sync::oneshot::channel();
    let task = eye_core::supervise::spawn_critical("worker", async move {
        let _ = tx.send(worker.run_until_stopped().await);
    });
    WorkerHandle { task, report }
}

impl WorkerHandle {
    pub async fn finish(self) -> Shutdown {
        let _ = self.task.await;
        self.report.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact("postgres://eye:hunter2@db:5432/eye"),
            "postgres://eye:***@db:5432/eye"
        );
        assert_eq!(redact("amqp://guest@mq/%2f"), "amqp://guest@mq/%2f");
        assert_eq!(
            redact("sqlite://./eye-data/eye.db?mode=rwc"),
            "sqlite://./eye-data/eye.db?mode=rwc"
        );
    }
}
