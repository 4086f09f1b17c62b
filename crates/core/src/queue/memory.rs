//! The bounded in-process queue behind `eye dev`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::{Acker, BatchLimit, Delivery, PublishError};

/// Capacity counts messages queued plus messages taken and not yet acknowledged, so a slow
/// worker makes publishers wait (and then answer 503) instead of growing memory.
#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<Inner>,
}

struct Inner {
    messages: Mutex<VecDeque<Vec<u8>>>,
    ready: Notify,
    capacity: Semaphore,
    publish_timeout: Duration,
    closed: AtomicBool,
    /// Stored batches for whoever watches live; sending never waits, a lagging watcher loses.
    live: tokio::sync::broadcast::Sender<Arc<super::LiveBatch>>,
    /// Per-minute trends for whoever subscribes, as `{prefix}.trends` on RabbitMQ.
    trends: tokio::sync::broadcast::Sender<Arc<super::Trend>>,
}

impl MemoryQueue {
    pub fn new(capacity: usize, publish_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                messages: Mutex::new(VecDeque::new()),
                ready: Notify::new(),
                capacity: Semaphore::new(capacity),
                publish_timeout,
                closed: AtomicBool::new(false),
                live: tokio::sync::broadcast::Sender::new(super::live::MEMORY_CAPACITY),
                trends: tokio::sync::broadcast::Sender::new(super::trends::MEMORY_CAPACITY),
            }),
        }
    }

    /// Waits for room until `deadline` (or the queue's own timeout, whichever is sooner).
    pub(super) async fn publish(
        &self,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<(), PublishError> {
        if self.is_closed() {
            return Err(PublishError::Unavailable("the queue is shut down".into()));
        }
        let deadline = deadline.min(Instant::now() + self.inner.publish_timeout);
        let permit = tokio::time::timeout_at(deadline, self.inner.capacity.acquire())
            .await
            .map_err(|_| PublishError::Full)?
            .map_err(|_| PublishError::Unavailable("the queue is shut down".into()))?;
        permit.forget();
        self.messages().push_back(payload.to_vec());
        self.inner.ready.notify_one();
        Ok(())
    }

    pub(super) fn publish_timeout(&self) -> Duration {
        self.inner.publish_timeout
    }

    /// Refuses further publishing; what is queued can still be consumed.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    pub(super) fn live_sender(&self) -> tokio::sync::broadcast::Sender<Arc<super::LiveBatch>> {
        self.inner.live.clone()
    }

    /// Where the admin watches stored events live.
    pub fn live_source(&self) -> super::LiveSource {
        super::LiveSource::Memory(self.inner.live.clone())
    }

    /// Where the elected worker publishes trends.
    pub fn trend_publisher(&self) -> super::TrendPublisher {
        super::TrendPublisher::Memory(self.inner.trends.clone())
    }

    /// Where the admin subscribes to trends.
    pub fn trend_source(&self) -> super::TrendSource {
        super::TrendSource::Memory(self.inner.trends.clone())
    }

    /// Messages waiting to be taken.
    pub fn len(&self) -> usize {
        self.messages().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) async fn next_batch(&self, limit: BatchLimit) -> Vec<Delivery> {
        loop {
            let notified = self.inner.ready.notified();
            let batch = self.try_take(limit);
            if !batch.is_empty() {
                return batch;
            }
            notified.await;
        }
    }

    pub(super) fn try_take(&self, limit: BatchLimit) -> Vec<Delivery> {
        let mut messages = self.messages();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while !limit.reached(batch.len(), bytes) {
            let Some(body) = messages.pop_front() else {
                break;
            };
            bytes += body.len();
            batch.push(Delivery {
                body,
                undecodable: None,
                headers: None,
                acker: Acker::Memory,
            });
        }
        if !messages.is_empty() {
            self.inner.ready.notify_one();
        }
        batch
    }

    /// Drops every queued message; returns how many.
    pub(super) fn abandon(&self) -> usize {
        let dropped = self.messages().drain(..).count();
        self.release(dropped);
        dropped
    }

    pub(super) fn release(&self, n: usize) {
        self.inner.capacity.add_permits(n);
    }

    fn messages(&self) -> MutexGuard<'_, VecDeque<Vec<u8>>> {
        // A panic while holding this lock cannot leave the deque half-updated.
        self.inner
            .messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{BatchLimit, Consumer, Publisher};

    #[tokio::test]
    async fn messages_come_out_in_order_and_in_bounded_batches() {
        let queue = MemoryQueue::new(10, Duration::from_millis(50));
        let publisher = Publisher::Memory(queue.clone());
        for i in 0..5u8 {
            publisher.publish(&[i]).await.unwrap();
        }
        let mut consumer = Consumer::Memory(queue);
        let first = consumer
            .next_batch(BatchLimit::messages(3), Duration::ZERO)
            .await
            .unwrap();
        let bodies: Vec<_> = first.iter().map(|d| d.body[0]).collect();
        assert_eq!(bodies, [0, 1, 2]);
        let rest = consumer.ready_batch(BatchLimit::messages(10));
        assert_eq!(rest.len(), 2);
    }

    #[tokio::test]
    async fn a_batch_stops_growing_at_its_byte_limit_but_holds_at_least_one_message() {
        let queue = MemoryQueue::new(10, Duration::from_millis(50));
        let publisher = Publisher::Memory(queue.clone());
        for size in [10, 10, 10, 100] {
            publisher.publish(&vec![b'x'; size]).await.unwrap();
        }
        let mut consumer = Consumer::Memory(queue);
        let limit = BatchLimit {
            messages: 10,
            bytes: 15,
        };
        let sizes = |batch: Vec<crate::queue::Delivery>| {
            batch.iter().map(|d| d.body.len()).collect::<Vec<_>>()
        };
        assert_eq!(sizes(consumer.ready_batch(limit)), [10, 10]);
        assert_eq!(sizes(consumer.ready_batch(limit)), [10, 100]);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_until_messages_are_acknowledged() {
        let queue = MemoryQueue::new(2, Duration::from_millis(20));
        let publisher = Publisher::Memory(queue.clone());
        publisher.publish(b"a").await.unwrap();
        publisher.publish(b"b").await.unwrap();
        assert!(matches!(
            publisher.publish(b"c").await,
            Err(PublishError::Full)
        ));

        let mut consumer = Consumer::Memory(queue);
        let batch = consumer
            .next_batch(BatchLimit::messages(2), Duration::ZERO)
            .await
            .unwrap();
        // Taken but not acknowledged still counts against capacity.
        assert!(matches!(
            publisher.publish(b"c").await,
            Err(PublishError::Full)
        ));
        consumer.ack(batch).await.unwrap();
        publisher.publish(b"c").await.unwrap();
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_new_messages_but_keeps_the_old() {
        let queue = MemoryQueue::new(2, Duration::from_millis(20));
        let publisher = Publisher::Memory(queue.clone());
        publisher.publish(b"a").await.unwrap();
        queue.close();
        assert!(matches!(
            publisher.publish(b"b").await,
            Err(PublishError::Unavailable(_))
        ));
        assert!(!publisher.is_ready().await);
        assert_eq!(
            Consumer::Memory(queue)
                .ready_batch(BatchLimit::messages(5))
                .len(),
            1
        );
    }
}
