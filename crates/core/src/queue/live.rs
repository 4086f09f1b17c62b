//! Stored events, as they are stored, for whoever watches: the worker publishes each stored
//! batch after its commit, best effort; the admin streams them to browsers and `eye tail`.
//!
//! Nothing here may slow storage. Publishing never waits: a full hand-off channel or a broker
//! that is away loses the live copy, never the events. On RabbitMQ the batches go to a fanout
//! exchange without confirms, non-persistent, not `mandatory`. Each watcher gets an exclusive,
//! auto-deleted queue with a length limit that drops its oldest messages, so a watcher cannot
//! grow the broker either.
//!
//! With nobody watching nothing is built or sent. Each watcher also consumes an always-empty
//! presence queue; a worker asks for its consumer count at most every [`PRESENCE_FRESH`], and
//! a watcher starts only [`PRESENCE_SETTLE`] after it registered, by when every worker's
//! answer was asked after the registration: an event posted once a watcher started is never
//! missed for want of a fresh answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use uuid::Uuid;

use super::Topology;

/// Bytes of an event's `data` carried live; beyond it the text is cut and marked.
pub const DATA_LIMIT: usize = 4096;
/// Appended to cut `data`.
pub const TRUNCATED_MARKER: &str = "…(truncated)";
/// Batches the in-process broadcast keeps for its slowest watcher.
pub(super) const MEMORY_CAPACITY: usize = 256;
/// Batches waiting for a worker's live publisher; beyond them the live copy is dropped.
const HANDOFF_CAPACITY: usize = 64;
/// Batches a watcher's broker queue holds before it drops the oldest.
const WATCHER_QUEUE_LENGTH: i64 = 1000;
/// After a failed connection, the live publisher drops batches this long before retrying.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker trusts its last answer to "is anyone watching?".
const PRESENCE_FRESH: Duration = Duration::from_millis(250);
/// How long a new watcher waits after registering: longer than [`PRESENCE_FRESH`].
const PRESENCE_SETTLE: Duration = Duration::from_millis(400);
/// How long a worker waits for the answer before building the copy anyway. Generous: the
/// answer is trusted from when it was asked, so a slow one is simply used less long.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a worker waits to open the connection it asks on (at its first batch, or after
/// the broker went away) before building the copy anyway.
const PRESENCE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One stored event, or one rejected event (with its reason codes), as watchers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub application_id: Uuid,
    pub id: Uuid,
    /// None for a rejected event whose session id was missing or unreadable.
    #[serde(default)]
    pub session_id: Option<Uuid>,
    pub category: String,
    pub name: String,
    /// None for a rejected event whose timestamp was missing or unreadable.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// `data` as stored (JSON text), cut at [`DATA_LIMIT`] bytes; for a rejected event, the
    /// `data` it carried or, when unreadable, what was received.
    pub data: String,
    /// Whether `data` was cut (it then ends with [`TRUNCATED_MARKER`]).
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub rejected: bool,
    /// The reason codes of a rejected event.
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl LiveEvent {
    /// `text` as carried live: whole, or cut at a character boundary and marked.
    pub fn cut(text: &str) -> (String, bool) {
        if text.len() <= DATA_LIMIT {
            return (text.to_owned(), false);
        }
        let mut end = DATA_LIMIT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (format!("{}{TRUNCATED_MARKER}", &text[..end]), true)
    }
}

/// The events of one stored batch: one broker message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveBatch {
    pub events: Vec<LiveEvent>,
}

/// Where a worker announces what it stored.
#[derive(Clone, Default)]
pub enum LivePublisher {
    Amqp(Arc<AmqpLive>),
    Memory(broadcast::Sender<Arc<LiveBatch>>),
    /// Announces nothing.
    #[default]
    Off,
}

impl LivePublisher {
    pub(super) fn amqp(url: &str, topology: &Topology) -> Self {
        LivePublisher::Amqp(Arc::new(AmqpLive {
            url: url.to_owned(),
            exchange: topology.live_exchange.clone(),
            watchers: topology.live_watchers.clone(),
            handoff: OnceLock::new(),
            presence: tokio::sync::Mutex::new(Presence::default()),
        }))
    }

    /// Whether a batch is worth building: false when nobody is watching. On RabbitMQ this asks
    /// the broker at most every [`PRESENCE_FRESH`], for at most [`PRESENCE_TIMEOUT`].
    pub async fn wants(&self) -> bool {
        match self {
            LivePublisher::Amqp(amqp) => amqp.watched().await,
            LivePublisher::Memory(sender) => sender.receiver_count() > 0,
            LivePublisher::Off => false,
        }
    }

    /// Hands the batch on without waiting; when that is not possible at once it is dropped.
    pub fn publish(&self, batch: LiveBatch) {
        if batch.events.is_empty() {
            return;
        }
        match self {
            LivePublisher::Amqp(amqp) => amqp.publish(batch),
            LivePublisher::Memory(sender) => {
                // An error only means nobody watches.
                let _ = sender.send(Arc::new(batch));
            }
            LivePublisher::Off => {}
        }
    }
}

/// A worker's live publisher on RabbitMQ: a task of its own, started on first use, takes
/// batches from a bounded channel and publishes them on a connection of its own.
pub struct AmqpLive {
    url: String,
    exchange: String,
    watchers: String,
    handoff: OnceLock<Option<mpsc::Sender<LiveBatch>>>,
    presence: tokio::sync::Mutex<Presence>,
}

/// A worker's last answer to "is anyone watching?", and the connection it asks on.
#[derive(Default)]
struct Presence {
    /// The answer and until when it holds.
    known: Option<(bool, Instant)>,
    asking: Option<(Connection, Channel)>,
}

impl Presence {
    /// The watchers' count, and when it was asked: after the connection opened, which is not
    /// part of the answer's age.
    async fn consumers(
        &mut self,
        url: &str,
        watchers: &str,
    ) -> Result<(u32, Instant), Box<dyn std::error::Error + Send + Sync>> {
        let channel = match &self.asking {
            Some((_, channel)) if channel.status().connected() => channel.clone(),
            _ => {
                self.forget();
                let connect = async {
                    let connection = super::amqp::connect(url).await?;
                    let channel = connection.create_channel().await?;
                    Ok::<_, lapin::Error>((connection, channel))
                };
                let (connection, channel) =
                    tokio::time::timeout(PRESENCE_CONNECT_TIMEOUT, connect).await??;
                self.asking = Some((connection, channel.clone()));
                channel
            }
        };
        let asked = Instant::now();
        let consumers =
            tokio::time::timeout(PRESENCE_TIMEOUT, declare_watchers(&channel, watchers)).await??;
        Ok((consumers, asked))
    }

    /// Drops the connection asked on, closing it in the background.
    fn forget(&mut self) {
        if let Some((connection, _)) = self.asking.take() {
            tokio::spawn(async move {
                let closing = connection.close(200, "presence".into());
                let _ = tokio::time::timeout(CONNECT_TIMEOUT, closing).await;
            });
        }
    }
}

impl AmqpLive {
    /// Whether anyone watches. When the broker cannot say in time the answer is yes, for
    /// [`RECONNECT_AFTER`]: a copy built for nobody costs less than a watcher missing events.
    async fn watched(&self) -> bool {
        let mut presence = self.presence.lock().await;
        if let Some((watched, until)) = presence.known
            && Instant::now() < until
        {
            return watched;
        }
        // The answer holds from when it was asked, which is before the broker gave it.
        let known = match presence.consumers(&self.url, &self.watchers).await {
            Ok((consumers, asked)) => (consumers > 0, asked + PRESENCE_FRESH),
            Err(e) => {
                tracing::debug!(error = %e, "cannot ask the broker who watches live");
                presence.forget();
                (true, Instant::now() + RECONNECT_AFTER)
            }
        };
        presence.known = Some(known);
        known.0
    }

    fn publish(&self, batch: LiveBatch) {
        let handoff = self.handoff.get_or_init(|| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            let (tx, rx) = mpsc::channel(HANDOFF_CAPACITY);
            runtime.spawn(run_publisher(self.url.clone(), self.exchange.clone(), rx));
            Some(tx)
        });
        let Some(handoff) = handoff else {
            return;
        };
        if let Err(e) = handoff.try_send(batch) {
            tracing::debug!(error = %e, "live events dropped: their publisher is behind or gone");
        }
    }
}

/// Publishes until every sender is gone (the worker stopped).
async fn run_publisher(url: String, exchange: String, mut batches: mpsc::Receiver<LiveBatch>) {
    let mut live: Option<(Connection, Channel)> = None;
    let mut failed_at: Option<Instant> = None;
    while let Some(batch) = batches.recv().await {
        if live.as_ref().is_none_or(|(_, c)| !c.status().connected()) {
            live = None;
            if failed_at.is_some_and(|at| at.elapsed() < RECONNECT_AFTER) {
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&url, &exchange)).await {
                Ok(Ok(connected)) => {
                    live = Some(connected);
                    failed_at = None;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "live events dropped: cannot reach the broker");
                    failed_at = Some(Instant::now());
                    continue;
                }
                Err(_) => {
                    tracing::debug!("live events dropped: the broker did not answer in time");
                    failed_at = Some(Instant::now());
                    continue;
                }
            }
        }
        let Some((_, channel)) = live.as_ref() else {
            continue;
        };
        let Ok(body) = serde_json::to_vec(&batch) else {
            continue;
        };
        let sent = channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "live events dropped: publishing failed");
            live = None;
        }
    }
    if let Some((connection, _)) = live {
        let _ = connection.close(200, "stopped".into()).await;
    }
}

async fn connect(url: &str, exchange: &str) -> Result<(Connection, Channel), lapin::Error> {
    let connection = super::amqp::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare_exchange(&channel, exchange).await?;
    Ok((connection, channel))
}

pub(super) async fn declare_exchange(
    channel: &Channel,
    exchange: &str,
) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares the presence queue and returns how many watchers consume it. It is bound to
/// nothing and holds no message, whoever publishes to it by name.
async fn declare_watchers(channel: &Channel, watchers: &str) -> Result<u32, lapin::Error> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare(watchers.into(), durable, arguments)
        .await?;
    Ok(queue.consumer_count())
}

/// Where the admin watches stored events.
// One per admin process, never moved in a hot path: boxing the names would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Default)]
pub enum LiveSource {
    Amqp {
        url: String,
        topology: Topology,
    },
    Memory(broadcast::Sender<Arc<LiveBatch>>),
    /// Nothing to watch (tools that only read the database).
    #[default]
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("the broker cannot be reached: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer in time")]
    Timeout,
    #[error("no queue is configured to watch")]
    Unconfigured,
}

impl LiveSource {
    /// Starts watching: batches stored from now on, at most `backlog` events of them waiting
    /// for the watcher before it is dropped as too slow.
    pub async fn subscribe(&self, backlog: usize) -> Result<LiveFeed, LiveError> {
        match self {
            LiveSource::Memory(sender) => {
                let (feed, handoff) = LiveFeed::new(backlog);
                let mut receiver = sender.subscribe();
                tokio::spawn(async move {
                    loop {
                        let received = tokio::select! {
                            () = handoff.batches.closed() => break,
                            received = receiver.recv() => received,
                        };
                        let passed = match received {
                            Ok(batch) => handoff.pass(batch),
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                handoff.overflow();
                                false
                            }
                            Err(broadcast::error::RecvError::Closed) => false,
                        };
                        if !passed {
                            break;
                        }
                    }
                });
                Ok(feed)
            }
            LiveSource::Amqp { url, topology } => {
                tokio::time::timeout(CONNECT_TIMEOUT, watch(url, topology, backlog))
                    .await
                    .map_err(|_| LiveError::Timeout)?
            }
            LiveSource::None => Err(LiveError::Unconfigured),
        }
    }
}

/// One watcher's batches.
pub struct LiveFeed {
    batches: mpsc::Receiver<Arc<LiveBatch>>,
    shared: Arc<Backlog>,
}

/// Events handed to a watcher and not yet taken, and whether it fell behind.
struct Backlog {
    events: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
}

/// The sending side of a [`LiveFeed`], in the task that fills it.
struct Handoff {
    batches: mpsc::Sender<Arc<LiveBatch>>,
    shared: Arc<Backlog>,
}

impl Handoff {
    /// Hands a batch on; false when the watcher is gone or fell behind (then it is marked).
    fn pass(&self, batch: Arc<LiveBatch>) -> bool {
        let n = batch.events.len();
        if self.shared.events.load(Ordering::SeqCst) + n > self.shared.limit {
            self.overflow();
            return false;
        }
        self.shared.events.fetch_add(n, Ordering::SeqCst);
        match self.batches.try_send(batch) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn overflow(&self) {
        self.shared.overflowed.store(true, Ordering::SeqCst);
    }
}

/// What a watcher gets next.
#[derive(Debug)]
pub enum LiveItem {
    Batch(Arc<LiveBatch>),
    /// The watcher fell too far behind; nothing more comes.
    Dropped,
    /// The source went away (the broker, or the process stopping); nothing more comes.
    Closed,
}

impl LiveFeed {
    fn new(backlog: usize) -> (Self, Handoff) {
        let backlog = backlog.max(1);
        let (tx, batches) = mpsc::channel(backlog);
        let shared = Arc::new(Backlog {
            events: AtomicUsize::new(0),
            limit: backlog,
            overflowed: AtomicBool::new(false),
        });
        let handoff = Handoff {
            batches: tx,
            shared: shared.clone(),
        };
        (Self { batches, shared }, handoff)
    }

    pub async fn next(&mut self) -> LiveItem {
        // A watcher that fell behind learns it before what was left waiting.
        if self.shared.overflowed.load(Ordering::SeqCst) {
            return LiveItem::Dropped;
        }
        match self.batches.recv().await {
            Some(batch) => {
                self.shared
                    .events
                    .fetch_sub(batch.events.len(), Ordering::SeqCst);
                LiveItem::Batch(batch)
            }
            None if self.shared.overflowed.load(Ordering::SeqCst) => LiveItem::Dropped,
            None => LiveItem::Closed,
        }
    }
}

/// An exclusive, auto-deleted queue of bounded length bound to the fanout exchange, consumed
/// without acks by a task that hands batches to the watcher and gives up on it once
/// `backlog` events wait unread. The queue goes with the task's connection.
async fn watch(url: &str, topology: &Topology, backlog: usize) -> Result<LiveFeed, LiveError> {
    let (connection, channel, mut consumer) =
        subscriber_queue(url, &topology.live_exchange, WATCHER_QUEUE_LENGTH).await?;
    // Registered as a watcher for as long as the connection lives.
    declare_watchers(&channel, &topology.live_watchers).await?;
    let presence = channel
        .basic_consume(
            topology.live_watchers.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::time::sleep(PRESENCE_SETTLE).await;
    let (feed, handoff) = LiveFeed::new(backlog);
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                () = handoff.batches.closed() => break,
                delivery = consumer.next() => delivery,
            };
            let Some(Ok(delivery)) = delivery else {
                break;
            };
            let Ok(batch) = serde_json::from_slice::<LiveBatch>(&delivery.data) else {
                continue;
            };
            if !handoff.pass(Arc::new(batch)) {
                break;
            }
        }
        // Dropping the consumer cancels it: held until the watcher is gone.
        drop(presence);
        let _ = connection.close(200, "watcher gone".into()).await;
    });
    Ok(feed)
}

/// A connection with an exclusive, auto-deleted queue of at most `length` messages (the oldest
/// dropped first) bound to the fanout `exchange`, and its consumer without acks. The queue
/// goes when the connection closes.
pub(super) async fn subscriber_queue(
    url: &str,
    exchange: &str,
    length: i64,
) -> Result<(Connection, Channel, lapin::Consumer), lapin::Error> {
    let connection = super::amqp::connect(url).await?;
    let channel = connection.create_channel().await?;
    declare_exchange(&channel, exchange).await?;
    let queue = format!("{exchange}.{}", Uuid::now_v7().simple());
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(length));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), exclusive, arguments)
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((connection, channel, consumer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_over_the_limit_is_cut_at_a_character_and_marked() {
        let (short, cut) = LiveEvent::cut("{\"a\":1}");
        assert_eq!((short.as_str(), cut), ("{\"a\":1}", false));
        let long = format!("\"{}\"", "é".repeat(DATA_LIMIT));
        let (text, cut) = LiveEvent::cut(&long);
        assert!(cut);
        assert!(text.ends_with(TRUNCATED_MARKER));
        assert!(text.len() <= DATA_LIMIT + TRUNCATED_MARKER.len());
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_the_in_process_broadcast_is_dropped() {
        let sender = broadcast::Sender::new(2);
        let publisher = LivePublisher::Memory(sender.clone());
        assert!(!publisher.wants().await);
        let mut feed = LiveSource::Memory(sender).subscribe(3).await.unwrap();
        assert!(publisher.wants().await);
        let batch = || LiveBatch {
            events: vec![LiveEvent {
                application_id: Uuid::nil(),
                id: Uuid::nil(),
                session_id: None,
                category: "c".into(),
                name: "n".into(),
                timestamp: None,
                received_at: Utc::now(),
                data: "{}".into(),
                truncated: false,
                rejected: false,
                reasons: Vec::new(),
            }],
        };
        publisher.publish(batch());
        assert!(matches!(feed.next().await, LiveItem::Batch(_)));
        for _ in 0..5 {
            publisher.publish(batch());
        }
        assert!(matches!(feed.next().await, LiveItem::Dropped));
    }
}
