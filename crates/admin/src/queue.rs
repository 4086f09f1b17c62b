//! How deep the ingest queue is and how many workers consume it, for either queue kind.

use std::time::Duration;

use eye_core::queue::{LiveSource, MemoryQueue, Topology, TrendSource};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

// One per admin process, never moved in a hot path: boxing the names would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum QueueProbe {
    /// RabbitMQ: a passive declare reports the queue's counts without changing it.
    Amqp { url: String, topology: Topology },
    /// The in-process queue of `eye dev`, with the number of workers started beside it.
    Memory { queue: MemoryQueue, consumers: u32 },
    /// Nothing to ask (tools that only read the database).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting (each holds the events of one or more requests).
    pub messages: u64,
    pub consumers: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueProbeError {
    #[error("the broker did not answer in time")]
    Timeout,
    #[error("the broker could not be asked: {0}")]
    Broker(#[from] lapin::Error),
    #[error("no queue is configured")]
    Unconfigured,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl QueueProbe {
    /// Where stored events can be watched as they arrive, on the same queue.
    pub fn live_source(&self) -> LiveSource {
        match self {
            QueueProbe::Amqp { url, topology } => LiveSource::Amqp {
                url: url.clone(),
                topology: topology.clone(),
            },
            QueueProbe::Memory { queue, .. } => queue.live_source(),
            QueueProbe::None => LiveSource::None,
        }
    }

    /// Where the per-minute trends can be subscribed to, on the same broker.
    pub fn trend_source(&self) -> TrendSource {
        match self {
            QueueProbe::Amqp { url, topology } => TrendSource::Amqp {
                url: url.clone(),
                exchange: topology.trends_exchange.clone(),
            },
            QueueProbe::Memory { queue, .. } => queue.trend_source(),
            QueueProbe::None => TrendSource::None,
        }
    }

    pub async fn stats(&self) -> Result<QueueStats, QueueProbeError> {
        match self {
            QueueProbe::Memory { queue, consumers } => Ok(QueueStats {
                messages: queue.len() as u64,
                consumers: *consumers,
            }),
            QueueProbe::Amqp { url, topology } => {
                tokio::time::timeout(PROBE_TIMEOUT, amqp_stats(url, &topology.queue))
                    .await
                    .map_err(|_| QueueProbeError::Timeout)?
            }
            QueueProbe::None => Err(QueueProbeError::Unconfigured),
        }
    }
}

async fn amqp_stats(url: &str, queue: &str) -> Result<QueueStats, QueueProbeError> {
    let connection = eye_core::queue::connect(url).await?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await;
    let _ = connection.close(200, "OK".into()).await;
    let declared = declared?;
    Ok(QueueStats {
        messages: u64::from(declared.message_count()),
        consumers: declared.consumer_count(),
    })
}
