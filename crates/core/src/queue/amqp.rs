//! RabbitMQ: durable exchange → quorum queue with a delivery limit → dead-letter queue.
//! Persistent messages, publisher confirms and `mandatory` publishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ConnectionStatus, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Acker, BatchLimit, ConsumeError, Delivery, PublishError, Readiness, Topology, codec};

const PERSISTENT: u8 = 2;
/// How long connecting to one broker node may take before the next node is tried.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// Connections one publisher opens at most; its channels share them.
const PUBLISH_CONNECTIONS: usize = 2;

/// The broker nodes an `amqp_url` names: one URL, or several separated by commas (the nodes
/// of a cluster).
pub fn nodes(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// For each `amqp_url` of the process, the node last connected to: tried first next time, so
/// that reconnecting does not wait on a dead node first every time.
static PREFERRED: LazyLock<std::sync::Mutex<HashMap<String, usize>>> =
    LazyLock::new(Default::default);

fn preferred(urls: &str) -> usize {
    let known = PREFERRED.lock().unwrap_or_else(|p| p.into_inner());
    known.get(urls).copied().unwrap_or(0)
}

fn prefer(urls: &str, node: usize) {
    let mut known = PREFERRED.lock().unwrap_or_else(|p| p.into_inner());
    known.insert(urls.to_owned(), node);
}

/// Connects to the first node of `urls` that answers, starting with the one that answered
/// last. Every connection of The Eye goes through here: when a node goes away, whatever
/// reconnects moves to another.
pub async fn connect(urls: &str) -> Result<Connection, lapin::Error> {
    let nodes = nodes(urls);
    if nodes.len() <= 1 {
        return Connection::connect(urls.trim(), ConnectionProperties::default()).await;
    }
    let first = preferred(urls) % nodes.len();
    let mut failed = Vec::new();
    for i in 0..nodes.len() {
        let at = (first + i) % nodes.len();
        let attempt = Connection::connect(nodes[at], ConnectionProperties::default());
        let error = match tokio::time::timeout(NODE_TIMEOUT, attempt).await {
            Ok(Ok(connection)) => {
                if at != first {
                    tracing::warn!(
                        node = at + 1,
                        nodes = nodes.len(),
                        "connected to another broker node"
                    );
                    prefer(urls, at);
                }
                return Ok(connection);
            }
            Ok(Err(e)) => e,
            Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time").into(),
        };
        // The node's place, never its URL: it holds a password.
        failed.push(format!("node {}: {error}", at + 1));
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        format!("no broker node could be reached ({})", failed.join("; ")),
    )
    .into())
}

/// A publisher's connections: up to [`PUBLISH_CONNECTIONS`], opened through [`connect`] when
/// fewer are up, so that they move to another node when theirs goes.
struct Connections {
    urls: String,
    open: Mutex<Vec<Arc<Connection>>>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Connections {
    async fn get(&self) -> Result<Arc<Connection>, PublishError> {
        let mut open = tokio::time::timeout(self.timeout, self.open.lock())
            .await
            .map_err(|_| PublishError::Timeout)?;
        open.retain(|c| c.status().connected());
        if open.len() < PUBLISH_CONNECTIONS {
            match tokio::time::timeout(self.timeout, connect(&self.urls)).await {
                Ok(Ok(connection)) => open.push(Arc::new(connection)),
                // The one already up serves meanwhile.
                _ if !open.is_empty() => {}
                Ok(Err(e)) => return Err(unavailable(e)),
                Err(_) => return Err(PublishError::Timeout),
            }
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % open.len();
        Ok(open[at].clone())
    }
}
/// Routing key of the readiness probe; nothing is bound to it.
const PROBE_ROUTING_KEY: &str = "readiness-probe";

/// Declares the exchanges and queues. Idempotent: api and workers all call it, whoever starts
/// first creates them. Queues are declared with their type only; everything an operator may
/// change (delivery limit, dead-lettering, length limits) is a broker policy, so changing it
/// never makes a declaration fail. A queue that already exists with other arguments (declared
/// by an older version) is used as it is, with a warning naming the difference.
pub async fn declare(connection: &Connection, topology: &Topology) -> Result<(), lapin::Error> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (exchange, kind) in [
        (&topology.dead_exchange, ExchangeKind::Fanout),
        (&topology.exchange, ExchangeKind::Direct),
    ] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                kind,
                durable,
                FieldTable::default(),
            )
            .await?;
    }
    let replicas = topology.replicas;
    let channel = declare_queue(connection, channel, &topology.dead_queue, replicas).await?;
    let channel = declare_queue(connection, channel, &topology.queue, replicas).await?;
    for (queue, exchange, key) in [
        (&topology.dead_queue, &topology.dead_exchange, ""),
        (
            &topology.queue,
            &topology.exchange,
            topology.routing_key.as_str(),
        ),
    ] {
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// Deletes the queues and exchanges of `topology`, whatever they hold: for tearing down a
/// prefix (tests, a tenant that leaves). What is already gone is skipped.
pub async fn delete(url: &str, topology: &Topology) -> Result<(), lapin::Error> {
    let connection = connect(url).await?;
    let channel = connection.create_channel().await?;
    for queue in [
        &topology.queue,
        &topology.dead_queue,
        &topology.live_watchers,
    ] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [
        &topology.exchange,
        &topology.dead_exchange,
        &topology.live_exchange,
        &topology.trends_exchange,
    ] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "deleted".into()).await;
    Ok(())
}

/// Declares a durable quorum queue; if it exists with other arguments, checks that it exists
/// (a passive declaration) on a new channel, since the broker closed the first one.
async fn declare_queue(
    connection: &Connection,
    channel: Channel,
    queue: &str,
    replicas: Option<u16>,
) -> Result<Channel, lapin::Error> {
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // Only a declaration can set it; later, `rabbitmq-queues grow` / `shrink` change replicas.
    if let Some(replicas) = replicas {
        quorum.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongLongInt(i64::from(replicas)),
        );
    }
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    match channel.queue_declare(queue.into(), options, quorum).await {
        Ok(_) => Ok(channel),
        Err(e) if e.to_string().contains("PRECONDITION_FAILED") => {
            tracing::warn!(queue, difference = %e,
                "the queue exists with other arguments (declared by an older version); using it as it is. \
                 Its own arguments take precedence over the policy `eye migrate` sets");
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..options
            };
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            Ok(channel)
        }
        Err(e) => Err(e),
    }
}

/// Publishes over a fixed set of confirm-mode channels shared by every request. Each request
/// awaits only its own confirm, so confirms pipeline; a channel that broke is replaced by the
/// next request that picks its slot.
///
/// While RabbitMQ blocks the connection (a memory or disk alarm) nothing is handed to lapin:
/// lapin would hold the frames and write them once the alarm clears, long after the request
/// was answered.
pub struct AmqpPublisher {
    url: String,
    pool: Connections,
    slots: Vec<Mutex<Option<Slot>>>,
    /// The connection of each slot, readable without waiting for the slot's lock.
    connections: Vec<std::sync::Mutex<Option<ConnectionStatus>>>,
    next: AtomicUsize,
    topology: Topology,
    timeout: Duration,
    compress: bool,
}

#[derive(Clone)]
struct Slot {
    channel: Channel,
    connection: ConnectionStatus,
}

impl AmqpPublisher {
    pub fn new(
        url: &str,
        topology: Topology,
        channels: usize,
        timeout: Duration,
    ) -> Result<Self, PublishError> {
        let pool = Connections {
            urls: url.to_owned(),
            open: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            timeout,
        };
        let channels = channels.max(1);
        Ok(Self {
            url: url.to_owned(),
            pool,
            slots: (0..channels).map(|_| Mutex::new(None)).collect(),
            connections: (0..channels).map(|_| std::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            topology,
            timeout,
            compress: true,
        })
    }

    /// Whether envelopes worth it travel compressed ([`codec`]); on unless turned off.
    pub fn with_compression(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    /// A publisher with the same settings and connections of its own. Connections run on the
    /// runtime that first uses them, so a sibling per thread keeps publishing on that thread.
    pub fn sibling(&self) -> Result<Self, PublishError> {
        Self::new(
            &self.url,
            self.topology.clone(),
            self.slots.len(),
            self.timeout,
        )
        .map(|sibling| sibling.with_compression(self.compress))
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether RabbitMQ told one of this publisher's live connections that it blocks them.
    pub(super) fn is_blocked(&self) -> bool {
        self.connections.iter().any(|connection| {
            connection
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|c| c.connected() && c.blocked())
        })
    }

    /// Sends the message and waits for its confirm until `deadline`. Before the frames are
    /// handed to lapin every failure is a refusal; after, a missing confirm is
    /// [`PublishError::Unconfirmed`], since the broker may still take the message.
    pub(super) async fn publish(
        &self,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(), PublishError> {
        if self.is_blocked() {
            return Err(PublishError::Blocked);
        }
        let slot = tokio::time::timeout_at(deadline, self.channel())
            .await
            .map_err(|_| PublishError::Timeout)??;
        if slot.connection.blocked() {
            return Err(PublishError::Blocked);
        }
        if Instant::now() >= deadline {
            return Err(PublishError::Timeout);
        }
        let (body, encoding) = if self.compress {
            codec::encode(payload)
        } else {
            (payload.into(), None)
        };
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into());
        if let Some(encoding) = encoding {
            properties = properties.with_content_encoding(encoding.into());
        }
        // The first poll queues the frames; from here on they may reach the broker.
        let sent = tokio::time::timeout_at(
            deadline,
            slot.channel.basic_publish(
                self.topology.exchange.as_str().into(),
                self.topology.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                properties,
            ),
        )
        .await;
        let confirm = match sent {
            Err(_) => return Err(unconfirmed("not written before the deadline")),
            // Refused by lapin before the whole message was written: the broker cannot route
            // part of a message.
            Ok(Err(e)) => return Err(unavailable(e)),
            Ok(Ok(confirm)) => confirm,
        };
        match tokio::time::timeout_at(deadline, confirm).await {
            Err(_) => Err(unconfirmed("no confirm before the deadline")),
            Ok(Err(e)) => Err(unconfirmed(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => {
                Err(PublishError::Unavailable("confirms are off".into()))
            }
        }
    }

    /// Ready when a channel is open and the broker confirms an empty probe message. RabbitMQ
    /// tells a connection it is blocked only once it publishes during an alarm, so the probe
    /// is what lets an idle api notice one.
    pub(super) async fn readiness(&self) -> Readiness {
        if self.is_blocked() {
            return Readiness::Blocked;
        }
        let probe = async {
            let slot = self.channel().await?;
            if slot.connection.blocked() {
                return Err(PublishError::Blocked);
            }
            // Unbound routing key, not mandatory: the broker confirms and drops it.
            slot.channel
                .basic_publish(
                    self.topology.exchange.as_str().into(),
                    PROBE_ROUTING_KEY.into(),
                    BasicPublishOptions::default(),
                    b"",
                    BasicProperties::default(),
                )
                .await
                .map_err(unavailable)?
                .await
                .map_err(unavailable)?;
            Ok(())
        };
        match tokio::time::timeout(self.timeout, probe).await {
            _ if self.is_blocked() => Readiness::Blocked,
            Ok(Ok(())) => Readiness::Ready,
            Ok(Err(PublishError::Blocked)) => Readiness::Blocked,
            Ok(Err(e)) => Readiness::Unreachable(e.to_string()),
            Err(_) => Readiness::Unreachable("the broker did not answer in time".into()),
        }
    }

    /// Opens every channel now, so the first requests do not wait for a connection and the
    /// topology's declaration. Bounded by the publish timeout; what fails is opened again by
    /// the request that needs it.
    pub(super) async fn warm(&self) {
        let open = futures_util::future::join_all((0..self.slots.len()).map(|_| self.channel()));
        match tokio::time::timeout(self.timeout, open).await {
            Ok(opened) => {
                if let Some(Err(e)) = opened.into_iter().find(Result::is_err) {
                    tracing::debug!(error = %e, "a publish channel could not be opened yet");
                }
            }
            Err(_) => tracing::debug!("the publish channels were not all open in time"),
        }
    }

    async fn channel(&self) -> Result<Slot, PublishError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(live) = slot.as_ref().filter(|s| s.channel.status().connected()) {
            return Ok(live.clone());
        }
        let connection = self.pool.get().await?;
        // A blocked connection writes nothing, not even the frames that open a channel.
        if connection.status().blocked() {
            return Err(PublishError::Blocked);
        }
        let status = connection.status().clone();
        declare(&connection, &self.topology)
            .await
            .map_err(unavailable)?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        let live = Slot {
            channel,
            connection: status.clone(),
        };
        *slot = Some(live.clone());
        *self.connections[index]
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(live)
    }
}

fn unconfirmed(error: impl std::fmt::Display) -> PublishError {
    PublishError::Unconfirmed(error.to_string())
}

fn unavailable(error: impl std::fmt::Display) -> PublishError {
    PublishError::Unavailable(error.to_string())
}

/// A worker's subscription: one connection, one channel, bounded prefetch. It reconnects on
/// the next call after the broker went away; unacknowledged messages return to the queue.
pub struct AmqpConsumer {
    url: String,
    /// The queue consumed: the ingest queue, or the dead-letter queue.
    queue: String,
    topology: Topology,
    prefetch: u16,
    live: Option<Live>,
}

struct Live {
    // Kept so the connection lives as long as the subscription.
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
}

impl AmqpConsumer {
    pub fn new(url: &str, topology: Topology, prefetch: u16) -> Self {
        Self {
            url: url.to_owned(),
            queue: topology.queue.clone(),
            topology,
            prefetch,
            live: None,
        }
    }

    /// A consumer of the dead-letter queue instead of the ingest queue.
    pub fn of_dead_letters(url: &str, topology: Topology, prefetch: u16) -> Self {
        Self {
            queue: topology.dead_queue.clone(),
            ..Self::new(url, topology, prefetch)
        }
    }

    pub(super) fn reset(&mut self) {
        self.live = None;
    }

    pub(super) fn live_publisher(&self) -> super::LivePublisher {
        super::LivePublisher::amqp(&self.url, &self.topology)
    }

    async fn connect(&self) -> Result<Live, lapin::Error> {
        let connection = connect(&self.url).await?;
        declare(&connection, &self.topology).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Live {
            _connection: connection,
            channel,
            consumer,
        })
    }

    pub(super) async fn next_batch(
        &mut self,
        limit: BatchLimit,
        wait: Duration,
    ) -> Result<Vec<Delivery>, ConsumeError> {
        if self
            .live
            .as_ref()
            .is_none_or(|l| !l.channel.status().connected())
        {
            self.live = None;
            let live = self.connect().await.map_err(lost)?;
            self.live = Some(live);
        }
        let Some(live) = self.live.as_mut() else {
            return Err(ConsumeError("not connected".into()));
        };
        let first = match live.consumer.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(self.drop_connection(e)),
            None => return Err(self.drop_connection("the broker cancelled the subscription")),
        };
        let first = into_delivery(first);
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while !limit.reached(batch.len(), bytes) {
            match tokio::time::timeout_at(deadline, live.consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    let delivery = into_delivery(delivery);
                    bytes += delivery.body.len();
                    batch.push(delivery);
                }
                // The batch so far is still good; the error shows again on the next call.
                Ok(Some(Err(_)) | None) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    fn drop_connection(&mut self, error: impl std::fmt::Display) -> ConsumeError {
        self.live = None;
        lost(error)
    }

    /// Acknowledges the whole batch with one `multiple` ack on its last delivery. Safe because
    /// one consumer handles its deliveries strictly batch after batch.
    pub(super) async fn ack(&mut self, batch: Vec<Delivery>) -> Result<(), ConsumeError> {
        let Some(last) = batch.into_iter().next_back() else {
            return Ok(());
        };
        if let Acker::Amqp(acker) = last.acker {
            acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map_err(lost)?;
        }
        Ok(())
    }
}

fn into_delivery(delivery: lapin::message::Delivery) -> Delivery {
    let encoding = delivery.properties.content_encoding().as_ref();
    let (body, undecodable) = match codec::decode(delivery.data, encoding.map(|e| e.as_str())) {
        Ok(body) => (body, None),
        Err((body, why)) => (body, Some(why)),
    };
    Delivery {
        body,
        undecodable,
        headers: delivery.properties.headers().clone(),
        acker: Acker::Amqp(delivery.acker),
    }
}

fn lost(error: impl std::fmt::Display) -> ConsumeError {
    ConsumeError(error.to_string())
}

/// AMQP headers as JSON, for people reading a dead letter.
pub(super) fn headers_json(table: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::Float(n) => J::from(*n),
        AMQPValue::Double(n) => J::from(*n),
        AMQPValue::ShortString(s) => J::String(s.to_string()),
        AMQPValue::LongString(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::FieldArray(items) => J::Array(items.as_slice().iter().map(value_json).collect()),
        AMQPValue::FieldTable(table) => headers_json(table),
        AMQPValue::ByteArray(bytes) => J::String(format!("{} bytes", bytes.as_slice().len())),
        AMQPValue::DecimalValue(d) => J::String(format!("{d:?}")),
        AMQPValue::Void => J::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_the_urls_between_commas() {
        assert_eq!(nodes("amqp://a/%2f"), ["amqp://a/%2f"]);
        assert_eq!(
            nodes(" amqp://a:5672/%2f , amqp://b:5672/%2f,"),
            ["amqp://a:5672/%2f", "amqp://b:5672/%2f"]
        );
        assert!(nodes(" , ").is_empty());
    }

    #[tokio::test]
    async fn connecting_skips_nodes_that_refuse_and_says_so_when_none_answers() {
        // Ports nothing listens on: each node refuses at once.
        let dead = |port: u16| format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
        let urls = format!("{},{}", dead(1), dead(2));
        let error = connect(&urls).await.unwrap_err().to_string();
        assert!(
            error.contains("node 1") && error.contains("node 2"),
            "{error}"
        );
        assert!(
            !error.contains("guest:guest"),
            "no credentials in errors: {error}"
        );
    }
}
