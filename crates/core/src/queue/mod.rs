//! The queue seam. The api publishes envelopes through a [`Publisher`]; workers take them in
//! batches from a [`Consumer`]. Both come in two kinds with the same semantics: RabbitMQ
//! (production) and a bounded in-process queue (`eye dev` and quick tests).

mod amqp;
pub mod codec;
pub mod live;
mod memory;
pub mod trends;

pub use amqp::{AmqpConsumer, AmqpPublisher, connect, delete, nodes};
pub use live::{LiveBatch, LiveError, LiveEvent, LiveFeed, LiveItem, LivePublisher, LiveSource};
pub use memory::MemoryQueue;
pub use trends::{TopPage, Trend, TrendCount, TrendFeed, TrendItem, TrendPublisher, TrendSource};

use std::time::Duration;

use tokio::time::Instant;

/// Exchange and queue names, all under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Durable direct exchange the api publishes to.
    pub exchange: String,
    /// Quorum queue the workers consume.
    pub queue: String,
    /// Exchange and queue for messages past the delivery limit.
    pub dead_exchange: String,
    pub dead_queue: String,
    pub routing_key: String,
    /// Fanout exchange of stored events for whoever watches them live; nothing is bound to it
    /// unless someone watches, and then only exclusive, bounded queues.
    pub live_exchange: String,
    /// Queue that never holds a message: each watcher consumes it, so its consumer count tells
    /// workers whether anyone watches.
    pub live_watchers: String,
    /// Fanout exchange of the per-minute trends (`{prefix}.trends`), bound like the live one.
    pub trends_exchange: String,
    /// Replicas of each quorum queue when it is first declared
    /// (`x-quorum-initial-group-size`); `None`: RabbitMQ's default, every node.
    pub replicas: Option<u16>,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}.events"),
            queue: format!("{prefix}.events.ingest"),
            dead_exchange: format!("{prefix}.events.dlx"),
            dead_queue: format!("{prefix}.events.dead"),
            routing_key: "ingest".into(),
            live_exchange: format!("{prefix}.events.live"),
            live_watchers: format!("{prefix}.events.live.watchers"),
            trends_exchange: format!("{prefix}.trends"),
            replicas: None,
        }
    }

    /// The same names, their quorum queues declared with `replicas` replicas.
    pub fn with_replicas(mut self, replicas: Option<u16>) -> Self {
        self.replicas = replicas;
        self
    }

    /// The report jobs' exchange and queue (`{prefix}.reports`), shaped like the events' so
    /// the same publisher and consumer carry them. Nothing watches jobs live: those names are
    /// never declared.
    pub fn reports(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}.reports"),
            queue: format!("{prefix}.reports"),
            dead_exchange: format!("{prefix}.reports.dlx"),
            dead_queue: format!("{prefix}.reports.dead"),
            routing_key: "report".into(),
            live_exchange: format!("{prefix}.reports.live"),
            live_watchers: format!("{prefix}.reports.live.watchers"),
            trends_exchange: format!("{prefix}.trends"),
            replicas: None,
        }
    }
}

/// Why a message could not be confirmed. Every variant but [`PublishError::Unconfirmed`]
/// means "not accepted, never stored: try again".
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("the broker is unreachable: {0}")]
    Unavailable(String),
    #[error("the message was not sent before its deadline")]
    Timeout,
    #[error("the broker refused the message")]
    Nacked,
    #[error("no queue is bound to receive the message")]
    Unroutable,
    #[error("the queue is full")]
    Full,
    #[error("{BLOCKED}")]
    Blocked,
    /// The message was handed to the broker but no confirm came in time: it may still be
    /// stored. The only outcome that is not a plain refusal.
    #[error("the broker did not confirm in time ({0}); the events may still be stored")]
    Unconfirmed(String),
}

const BLOCKED: &str = "the broker refuses publishers for now: a memory or disk alarm is in effect";

impl PublishError {
    /// Every code [`PublishError::code`] gives.
    pub const CODES: [&'static str; 7] = [
        "broker_unavailable",
        "broker_timeout",
        "broker_rejected",
        "broker_unroutable",
        "queue_full",
        "broker_blocked",
        "broker_unconfirmed",
    ];

    /// Stable code for problem responses.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::Unavailable(_) => "broker_unavailable",
            PublishError::Timeout => "broker_timeout",
            PublishError::Nacked => "broker_rejected",
            PublishError::Unroutable => "broker_unroutable",
            PublishError::Full => "queue_full",
            PublishError::Blocked => "broker_blocked",
            PublishError::Unconfirmed(_) => "broker_unconfirmed",
        }
    }
}

/// Whether a message could be published now, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// The broker is up but refuses publishers (a resource alarm).
    Blocked,
    Unreachable(String),
}

impl Readiness {
    /// `ok`, `blocked` or `unreachable`.
    pub fn label(&self) -> &'static str {
        match self {
            Readiness::Ready => "ok",
            Readiness::Blocked => "blocked",
            Readiness::Unreachable(_) => "unreachable",
        }
    }

    pub fn reason(&self) -> Option<String> {
        match self {
            Readiness::Ready => None,
            Readiness::Blocked => Some(BLOCKED.into()),
            Readiness::Unreachable(why) => Some(why.clone()),
        }
    }
}

#[derive(Clone)]
pub enum Publisher {
    Amqp(std::sync::Arc<AmqpPublisher>),
    Memory(MemoryQueue),
}

impl Publisher {
    /// Returns once the message is durably queued, never before; gives up after the
    /// publisher's own timeout.
    pub async fn publish(&self, payload: &[u8]) -> Result<(), PublishError> {
        let deadline = Instant::now() + self.timeout();
        self.publish_by(payload, deadline).await
    }

    /// Like [`Publisher::publish`], giving up at `deadline`: with [`PublishError::Timeout`]
    /// if nothing was sent by then, [`PublishError::Unconfirmed`] if it was.
    pub async fn publish_by(&self, payload: &[u8], deadline: Instant) -> Result<(), PublishError> {
        match self {
            Publisher::Amqp(amqp) => amqp.publish(payload, deadline).await,
            Publisher::Memory(memory) => memory.publish(payload, deadline).await,
        }
    }

    /// Opens the broker connections now rather than on the first publish; never fails.
    pub async fn warm(&self) {
        if let Publisher::Amqp(amqp) = self {
            amqp.warm().await;
        }
    }

    /// Whether the broker is known to refuse publishers right now; answers at once.
    pub fn is_blocked(&self) -> bool {
        match self {
            Publisher::Amqp(amqp) => amqp.is_blocked(),
            Publisher::Memory(_) => false,
        }
    }

    fn timeout(&self) -> Duration {
        match self {
            Publisher::Amqp(amqp) => amqp.timeout(),
            Publisher::Memory(memory) => memory.publish_timeout(),
        }
    }

    /// A publisher to the same queue with connections of its own (the in-process queue has
    /// none, so it is shared).
    pub fn sibling(&self) -> Publisher {
        match self {
            Publisher::Amqp(amqp) => match amqp.sibling() {
                Ok(sibling) => Publisher::Amqp(std::sync::Arc::new(sibling)),
                Err(_) => self.clone(),
            },
            Publisher::Memory(_) => self.clone(),
        }
    }

    /// Whether a publish could be attempted right now.
    pub async fn is_ready(&self) -> bool {
        self.readiness().await == Readiness::Ready
    }

    /// Whether a publish could be attempted right now, and if not, why.
    pub async fn readiness(&self) -> Readiness {
        match self {
            Publisher::Amqp(amqp) => amqp.readiness().await,
            Publisher::Memory(memory) if memory.is_closed() => {
                Readiness::Unreachable("the in-process queue is shut down".into())
            }
            Publisher::Memory(_) => Readiness::Ready,
        }
    }
}

/// One message taken from the queue, not yet acknowledged.
pub struct Delivery {
    /// The message as it was published (decompressed when it travelled compressed).
    pub body: Vec<u8>,
    /// Why the body could not be decoded: then it is the bytes as they came.
    pub undecodable: Option<String>,
    /// AMQP headers (`x-death` on a dead-lettered message); none on the in-process queue.
    headers: Option<lapin::types::FieldTable>,
    acker: Acker,
}

impl Delivery {
    /// The message's headers as JSON text, `{}` when it has none.
    pub fn headers_json(&self) -> String {
        self.headers
            .as_ref()
            .map(|h| amqp::headers_json(h).to_string())
            .unwrap_or_else(|| "{}".into())
    }
}

enum Acker {
    Amqp(lapin::Acker),
    Memory,
}

/// How much one batch may hold: it stops growing at either limit (and always holds at least
/// one message, however large).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    pub messages: usize,
    pub bytes: usize,
}

impl BatchLimit {
    pub fn messages(messages: usize) -> Self {
        Self {
            messages,
            bytes: usize::MAX,
        }
    }

    /// Whether a batch of `messages` messages and `bytes` bytes is full.
    pub fn reached(&self, messages: usize, bytes: usize) -> bool {
        messages >= self.messages.max(1) || bytes >= self.bytes
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lost the queue: {0}")]
pub struct ConsumeError(pub String);

pub enum Consumer {
    Amqp(Box<AmqpConsumer>),
    Memory(MemoryQueue),
}

impl Consumer {
    /// Waits for at least one message, then gathers more up to `limit` for at most `wait`.
    pub async fn next_batch(
        &mut self,
        limit: BatchLimit,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ConsumeError> {
        match self {
            Consumer::Amqp(amqp) => amqp.next_batch(limit, wait).await,
            Consumer::Memory(memory) => Ok(memory.next_batch(limit).await),
        }
    }

    /// Whatever is ready now, without waiting; used to drain before shutdown. AMQP needs no
    /// drain: what is not acknowledged stays in the broker.
    pub fn ready_batch(&mut self, limit: BatchLimit) -> Vec<Delivery> {
        match self {
            Consumer::Amqp(_) => Vec::new(),
            Consumer::Memory(memory) => memory.try_take(limit),
        }
    }

    /// Whether messages live only in this process (nothing keeps them if it stops).
    pub fn is_in_process(&self) -> bool {
        matches!(self, Consumer::Memory(_))
    }

    /// Acknowledges every delivery of a batch at once.
    pub async fn ack(&mut self, batch: Vec<Delivery>) -> Result<(), ConsumeError> {
        match self {
            Consumer::Amqp(amqp) => amqp.ack(batch).await,
            Consumer::Memory(memory) => {
                memory.release(batch.len());
                Ok(())
            }
        }
    }

    /// Where the worker consuming this queue announces what it stored.
    pub fn live_publisher(&self) -> LivePublisher {
        match self {
            Consumer::Amqp(amqp) => amqp.live_publisher(),
            Consumer::Memory(memory) => LivePublisher::Memory(memory.live_sender()),
        }
    }

    /// Forgets the connection after a failed batch: RabbitMQ puts back what was not acked.
    pub fn reset(&mut self) {
        if let Consumer::Amqp(amqp) = self {
            amqp.reset();
        }
    }

    /// Gives up on everything the in-process queue still holds (a stopping worker that cannot
    /// store it); returns how many messages that was. RabbitMQ keeps its own.
    pub fn abandon(&mut self) -> usize {
        match self {
            Consumer::Amqp(_) => 0,
            Consumer::Memory(memory) => memory.abandon(),
        }
    }
}
