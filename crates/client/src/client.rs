//! The handle applications hold: `send`, `flush`, `close`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use reqwest::header::HeaderValue;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::batcher::{self, Command, Pending};
use crate::{Builder, ClientError, Event, Overflow, Report, SendError};

/// Sends events to one api with one token. See the [crate documentation](crate).
pub struct Client {
    shared: Arc<Shared>,
    // Unbounded, but every message holds a permit of `shared.buffer`, which is bounded.
    tx: Option<mpsc::UnboundedSender<Command>>,
    task: Option<JoinHandle<()>>,
    next_seq: AtomicU64,
}

/// What `send` returns: the event's place among this client's events and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    pub id: Uuid,
}

/// State the background task and the handle share.
pub(crate) struct Shared {
    pub(crate) options: Builder,
    pub(crate) http: reqwest::Client,
    pub(crate) endpoint: String,
    pub(crate) authorization: HeaderValue,
    /// One permit per event the client may still take.
    pub(crate) buffer: Semaphore,
    report: Mutex<Report>,
    health: Mutex<Health>,
}

struct Health {
    last_accepted: Instant,
    last_error: Option<String>,
    unauthorized: Option<String>,
}

impl Shared {
    pub(crate) fn record(&self, report: Report) {
        if report.accepted > 0 {
            let mut health = lock(&self.health);
            health.last_accepted = Instant::now();
            health.last_error = None;
        }
        lock(&self.report).merge(report);
    }

    pub(crate) fn failed(&self, error: String) {
        lock(&self.health).last_error = Some(error);
    }

    pub(crate) fn unauthorized(&self, error: String) {
        lock(&self.health).unauthorized = Some(error);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data stays consistent across a panic: every update is one assignment or merge.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Client {
    /// A client with the default options for the api at `url` (e.g. `http://127.0.0.1:8080`)
    /// and an `events:write` token.
    pub fn new(url: &str, token: &str) -> Result<Self, ClientError> {
        Self::builder(url, token).build()
    }

    /// Options to change before [`Builder::build`].
    pub fn builder(url: &str, token: &str) -> Builder {
        Builder::new(url, token)
    }

    pub(crate) fn start(options: Builder) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        if !(options.url.starts_with("http://") || options.url.starts_with("https://")) {
            return Err(ClientError::InvalidUrl(options.url));
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", options.token))
            .map_err(|_| ClientError::InvalidToken)?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.concurrency)
            .user_agent(concat!("eye-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Http)?;
        let shared = Arc::new(Shared {
            endpoint: format!("{}/v1/events", options.url),
            buffer: Semaphore::new(options.max_buffered_events),
            options,
            http,
            authorization,
            report: Mutex::new(Report::default()),
            health: Mutex::new(Health {
                last_accepted: Instant::now(),
                last_error: None,
                unauthorized: None,
            }),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let task = runtime.spawn(batcher::run(shared.clone(), rx));
        Ok(Self {
            shared,
            tx: Some(tx),
            task: Some(task),
            next_seq: AtomicU64::new(0),
        })
    }

    /// Takes an event for delivery and returns at once with its id; the outcome comes in a
    /// later [`Report`]. When the buffer is full it waits or fails, as
    /// [`Builder::overflow`] says. Once the server refused the token (401/403), every `send`
    /// fails with [`SendError::Unauthorized`].
    pub async fn send(&self, event: Event) -> Result<Receipt, SendError> {
        if let Some(error) = lock(&self.shared.health).unauthorized.clone() {
            return Err(SendError::Unauthorized(error));
        }
        let tx = self.tx.as_ref().ok_or(SendError::Closed)?;
        let permit = match self.shared.options.overflow {
            Overflow::Wait => self
                .shared
                .buffer
                .acquire()
                .await
                .map_err(|_| SendError::Closed)?,
            Overflow::Fail => self.shared.buffer.try_acquire().map_err(|e| match e {
                tokio::sync::TryAcquireError::Closed => SendError::Closed,
                tokio::sync::TryAcquireError::NoPermits => self.buffer_full(),
            })?,
        };
        // Given back by the background task once the event is answered.
        permit.forget();
        let id = event.event_id();
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            seq,
            id,
            json: event.into_json(),
        };
        tx.send(Command::Event(pending))
            .map_err(|_| SendError::Closed)?;
        Ok(Receipt { seq, id })
    }

    fn buffer_full(&self) -> SendError {
        let health = lock(&self.shared.health);
        SendError::BufferFull {
            capacity: self.shared.options.max_buffered_events,
            url: self.shared.options.url.clone(),
            silent: health.last_accepted.elapsed(),
            last_error: health.last_error.clone(),
        }
    }

    /// Sends what waits in a batch now and returns once every event sent before this call is
    /// answered, with what was accepted and refused since the previous report.
    pub async fn flush(&self) -> Result<Report, ClientError> {
        let tx = self.tx.as_ref().ok_or(ClientError::Stopped)?;
        let (done, answered) = oneshot::channel();
        tx.send(Command::Flush(done))
            .map_err(|_| ClientError::Stopped)?;
        answered.await.map_err(|_| ClientError::Stopped)?;
        Ok(self.take_report())
    }

    /// Flushes, stops the background task and returns the last report.
    pub async fn close(mut self) -> Result<Report, ClientError> {
        // Closing the channel lets the task deliver what it holds, then end.
        drop(self.tx.take());
        if let Some(task) = self.task.take() {
            task.await.map_err(|_| ClientError::Stopped)?;
        }
        Ok(self.take_report())
    }

    /// What was accepted and refused since the previous report, without waiting.
    pub fn take_report(&self) -> Report {
        std::mem::take(&mut *lock(&self.shared.report))
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.shared.options.url)
            .finish_non_exhaustive()
    }
}
