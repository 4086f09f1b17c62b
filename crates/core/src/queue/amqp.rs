//! RabbitMQ: durable exchange → quorum queue with a delivery limit → dead-letter queue.
//! Persistent messages, publisher confirms and `mandatory` publishing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_lapin::{Config, Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use lapin::Confirmation;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ConnectionStatus, ExchangeKind,
};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Acker, BatchLimit, ConsumeError, Delivery, PublishError, Readiness, Topology};

const PERSISTENT: u8 = 2;
/// Routing key of the readiness probe; nothing is bound to it.
const PROBE_ROUTING_KEY: &str = "readiness-probe";

/// Declares the exchanges and queues. Idempotent: api and workers all call it, whoever starts
/// first creates them, and the arguments are the same everywhere.
pub async fn declare(
    channel: &Channel,
    topology: &Topology,
    delivery_limit: u32,
) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let queue_options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );

    channel
        .exchange_declare(
            topology.dead_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            topology.dead_queue.as_str().into(),
            queue_options,
            quorum.clone(),
        )
        .await?;
    channel
        .queue_bind(
            topology.dead_queue.as_str().into(),
            topology.dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut ingest = quorum;
    let limit = i32::try_from(delivery_limit).unwrap_or(i32::MAX);
    ingest.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
    ingest.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(topology.dead_exchange.as_str().into()),
    );
    channel
        .exchange_declare(
            topology.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(topology.queue.as_str().into(), queue_options, ingest)
        .await?;
    channel
        .queue_bind(
            topology.queue.as_str().into(),
            topology.exchange.as_str().into(),
            topology.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
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
    pool: Pool,
    slots: Vec<Mutex<Option<Slot>>>,
    /// The connection of each slot, readable without waiting for the slot's lock.
    connections: Vec<std::sync::Mutex<Option<ConnectionStatus>>>,
    next: AtomicUsize,
    topology: Topology,
    delivery_limit: u32,
    timeout: Duration,
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
        delivery_limit: u32,
        channels: usize,
        timeout: Duration,
    ) -> Result<Self, PublishError> {
        let mut pool_config = PoolConfig::new(2);
        pool_config.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        let config = Config {
            url: Some(url.to_owned()),
            pool: Some(pool_config),
        };
        let pool = config
            .create_pool(ConnectionProperties::default, Runtime::Tokio1)
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let channels = channels.max(1);
        Ok(Self {
            url: url.to_owned(),
            pool,
            slots: (0..channels).map(|_| Mutex::new(None)).collect(),
            connections: (0..channels).map(|_| std::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            topology,
            delivery_limit,
            timeout,
        })
    }

    /// A publisher with the same settings and connections of its own. Connections run on the
    /// runtime that first uses them, so a sibling per thread keeps publishing on that thread.
    pub fn sibling(&self) -> Result<Self, PublishError> {
        Self::new(
            &self.url,
            self.topology.clone(),
            self.delivery_limit,
            self.slots.len(),
            self.timeout,
        )
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
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into());
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
                payload,
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

    async fn channel(&self) -> Result<Slot, PublishError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(live) = slot.as_ref().filter(|s| s.channel.status().connected()) {
            return Ok(live.clone());
        }
        let connection = self.pool.get().await.map_err(unavailable)?;
        // A blocked connection writes nothing, not even the frames that open a channel.
        if connection.status().blocked() {
            return Err(PublishError::Blocked);
        }
        let status = connection.status().clone();
        let channel = connection.create_channel().await.map_err(unavailable)?;
        declare(&channel, &self.topology, self.delivery_limit)
            .await
            .map_err(unavailable)?;
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
    topology: Topology,
    delivery_limit: u32,
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
    pub fn new(url: &str, topology: Topology, delivery_limit: u32, prefetch: u16) -> Self {
        Self {
            url: url.to_owned(),
            topology,
            delivery_limit,
            prefetch,
            live: None,
        }
    }

    async fn connect(&self) -> Result<Live, lapin::Error> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        declare(&channel, &self.topology, self.delivery_limit).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
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
        let mut bytes = first.data.len();
        let mut batch = vec![into_delivery(first)];
        let deadline = tokio::time::Instant::now() + wait;
        while !limit.reached(batch.len(), bytes) {
            match tokio::time::timeout_at(deadline, live.consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    bytes += delivery.data.len();
                    batch.push(into_delivery(delivery));
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

pub(super) async fn dead_letter(acker: &lapin::Acker) -> Result<(), ConsumeError> {
    acker
        .reject(BasicRejectOptions { requeue: false })
        .await
        .map(|_| ())
        .map_err(lost)
}

fn into_delivery(delivery: lapin::message::Delivery) -> Delivery {
    Delivery {
        body: delivery.data,
        acker: Acker::Amqp(delivery.acker),
    }
}

fn lost(error: impl std::fmt::Display) -> ConsumeError {
    ConsumeError(error.to_string())
}
