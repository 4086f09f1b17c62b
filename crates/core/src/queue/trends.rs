//! Per-minute trends for whoever subscribes: once a minute one worker publishes the last
//! minute's counts per event type and its top pages (see `eye_worker::trends`); the admin
//! streams them to `eye tail --trends`.
//!
//! On RabbitMQ a trend goes to the fanout exchange `{prefix}.trends` with a publisher confirm,
//! so a worker marks a minute published only once the broker took it. Nothing is bound to the
//! exchange unless someone subscribes, and each subscriber gets an exclusive, auto-deleted
//! queue of [`SUBSCRIBER_QUEUE_LENGTH`] messages that drops its oldest. In `eye dev` a
//! broadcast channel stands in for the exchange.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, broadcast, mpsc};
use uuid::Uuid;

use super::PublishError;
use super::live::{LiveError, declare_exchange, subscriber_queue};

/// Trends the in-process broadcast keeps for its slowest subscriber.
pub(super) const MEMORY_CAPACITY: usize = 16;
/// Trends waiting for a subscriber before it is dropped as too slow: a quarter of an hour.
const BACKLOG: usize = 15;
/// Trends a subscriber's broker queue holds before it drops the oldest.
const SUBSCRIBER_QUEUE_LENGTH: i64 = 15;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// One minute's trend: what was stored with a timestamp in it, by the time it was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
    /// Stored events per application and type.
    pub counts: Vec<TrendCount>,
    /// Each application's most viewed pages (events whose `data` has a `path`).
    pub top_pages: Vec<TopPage>,
    /// False when the pages could not be counted in time; `top_pages` is then empty.
    pub pages_counted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrendCount {
    pub application_id: Uuid,
    pub category: String,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopPage {
    pub application_id: Uuid,
    /// `data.host`, when the events carry one.
    pub host: Option<String>,
    /// `data.path`.
    pub path: String,
    pub count: i64,
}

/// Where the elected worker publishes trends.
#[derive(Clone)]
pub enum TrendPublisher {
    Amqp(Arc<AmqpTrends>),
    Memory(broadcast::Sender<Arc<Trend>>),
}

impl TrendPublisher {
    pub fn amqp(url: &str, exchange: &str) -> Self {
        TrendPublisher::Amqp(Arc::new(AmqpTrends {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            channel: Mutex::new(None),
        }))
    }

    /// Publishes, and on RabbitMQ waits for the broker's confirm.
    pub async fn publish(&self, trend: &Trend) -> Result<(), PublishError> {
        match self {
            TrendPublisher::Amqp(amqp) => {
                tokio::time::timeout(PUBLISH_TIMEOUT, amqp.publish(trend))
                    .await
                    .map_err(|_| PublishError::Timeout)?
            }
            TrendPublisher::Memory(sender) => {
                // An error only means nobody subscribes.
                let _ = sender.send(Arc::new(trend.clone()));
                Ok(())
            }
        }
    }
}

/// A confirm-mode channel of its own, opened on first use and again after the broker went.
pub struct AmqpTrends {
    url: String,
    exchange: String,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpTrends {
    async fn publish(&self, trend: &Trend) -> Result<(), PublishError> {
        let body = serde_json::to_vec(trend).map_err(|e| unavailable(&e))?;
        let mut open = self.channel.lock().await;
        let channel = match open.as_ref() {
            Some((_, channel)) if channel.status().connected() => channel.clone(),
            _ => {
                *open = None;
                let connection = super::amqp::connect(&self.url)
                    .await
                    .map_err(|e| unavailable(&e))?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| unavailable(&e))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| unavailable(&e))?;
                declare_exchange(&channel, &self.exchange)
                    .await
                    .map_err(|e| unavailable(&e))?;
                *open = Some((connection, channel.clone()));
                channel
            }
        };
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await
            .map_err(|e| unavailable(&e))?
            .await
            .map_err(|e| unavailable(&e))?;
        match confirm {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => Err(unavailable(&"confirms are off")),
        }
    }
}

fn unavailable(error: &dyn std::fmt::Display) -> PublishError {
    PublishError::Unavailable(error.to_string())
}

/// Where the admin subscribes to trends.
#[derive(Clone, Default)]
pub enum TrendSource {
    Amqp {
        url: String,
        exchange: String,
    },
    Memory(broadcast::Sender<Arc<Trend>>),
    #[default]
    None,
}

impl TrendSource {
    /// Starts receiving the trends published from now on.
    pub async fn subscribe(&self) -> Result<TrendFeed, LiveError> {
        let (tx, trends) = mpsc::channel(BACKLOG);
        let dropped = Arc::new(AtomicBool::new(false));
        let feed = TrendFeed {
            trends,
            dropped: dropped.clone(),
        };
        let handoff = Handoff { tx, dropped };
        match self {
            TrendSource::Memory(sender) => {
                let mut receiver = sender.subscribe();
                tokio::spawn(async move {
                    loop {
                        let received = tokio::select! {
                            () = handoff.tx.closed() => break,
                            received = receiver.recv() => received,
                        };
                        let passed = match received {
                            Ok(trend) => handoff.pass(trend),
                            Err(broadcast::error::RecvError::Lagged(_)) => handoff.overflow(),
                            Err(broadcast::error::RecvError::Closed) => false,
                        };
                        if !passed {
                            break;
                        }
                    }
                });
            }
            TrendSource::Amqp { url, exchange } => {
                let (connection, _channel, mut consumer) = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    subscriber_queue(url, exchange, SUBSCRIBER_QUEUE_LENGTH),
                )
                .await
                .map_err(|_| LiveError::Timeout)??;
                tokio::spawn(async move {
                    loop {
                        // A subscriber that went away closes the queue at once, not at the
                        // next minute.
                        let delivery = tokio::select! {
                            () = handoff.tx.closed() => break,
                            delivery = consumer.next() => delivery,
                        };
                        let Some(Ok(delivery)) = delivery else {
                            break;
                        };
                        let Ok(trend) = serde_json::from_slice::<Trend>(&delivery.data) else {
                            continue;
                        };
                        if !handoff.pass(Arc::new(trend)) {
                            break;
                        }
                    }
                    let _ = connection.close(200, "subscriber gone".into()).await;
                });
            }
            TrendSource::None => return Err(LiveError::Unconfigured),
        }
        Ok(feed)
    }
}

/// The sending side of a [`TrendFeed`], in the task that fills it.
struct Handoff {
    tx: mpsc::Sender<Arc<Trend>>,
    dropped: Arc<AtomicBool>,
}

impl Handoff {
    /// Hands a trend on; false when the subscriber is gone or fell behind (then marked).
    fn pass(&self, trend: Arc<Trend>) -> bool {
        match self.tx.try_send(trend) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => self.overflow(),
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Marks the subscriber as fallen behind; always false.
    fn overflow(&self) -> bool {
        self.dropped.store(true, Ordering::SeqCst);
        false
    }
}

/// One subscriber's trends.
pub struct TrendFeed {
    trends: mpsc::Receiver<Arc<Trend>>,
    dropped: Arc<AtomicBool>,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum TrendItem {
    Trend(Arc<Trend>),
    /// The subscriber fell [`BACKLOG`] trends behind; nothing more comes.
    Dropped,
    /// The source went away; nothing more comes.
    Closed,
}

impl TrendFeed {
    pub async fn next(&mut self) -> TrendItem {
        if self.dropped.load(Ordering::SeqCst) {
            return TrendItem::Dropped;
        }
        match self.trends.recv().await {
            Some(trend) => TrendItem::Trend(trend),
            None if self.dropped.load(Ordering::SeqCst) => TrendItem::Dropped,
            None => TrendItem::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend(minute: i64) -> Trend {
        Trend {
            minute: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            published_at: Utc::now(),
            counts: Vec::new(),
            top_pages: Vec::new(),
            pages_counted: true,
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_is_published_after_it_came_and_is_dropped_when_behind() {
        let sender = broadcast::Sender::new(MEMORY_CAPACITY);
        let publisher = TrendPublisher::Memory(sender.clone());
        publisher.publish(&trend(1)).await.unwrap();
        let mut feed = TrendSource::Memory(sender).subscribe().await.unwrap();
        publisher.publish(&trend(2)).await.unwrap();
        match feed.next().await {
            TrendItem::Trend(t) => assert_eq!(t.minute, trend(2).minute),
            other => panic!("expected the second minute, got {other:?}"),
        }
        for minute in 3..=3 + BACKLOG as i64 {
            publisher.publish(&trend(minute)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(feed.next().await, TrendItem::Dropped));
    }
}
