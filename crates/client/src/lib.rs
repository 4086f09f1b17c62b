//! A client for The Eye's ingestion api (`POST /v1/events`).
//!
//! [`Client::send`] hands an event to a background task and returns its id at once; the task
//! groups events into batches (by count, by size and after a short linger), compresses large
//! ones and posts them, several at a time. What it guarantees:
//!
//! - **Each event is stored once.** Every event gets a UUIDv7 id when it is sent (or keeps the
//!   one it carries) and the api stores an id once, so retries never store twice — including
//!   after a `504 broker_unconfirmed`, where the events may or may not be stored.
//! - **Transient failures are retried** with exponential backoff and jitter: connection errors,
//!   timeouts, 5xx, and 429 / 503 / 504, waiting at least their `Retry-After`.
//! - **Refusals are reported per event, never retried.** A `400 invalid_events` names fields per
//!   event; the client drops those events, reports them in [`Report::refused`] with their errors,
//!   and sends the rest of the batch again. A batch the server finds too large is split.
//! - **Memory is bounded.** At most [`Builder::max_buffered_events`] events wait for an answer;
//!   beyond that [`Client::send`] waits ([`Overflow::Wait`], the default) or fails with
//!   [`SendError::BufferFull`] ([`Overflow::Fail`]).
//!
//! [`Client::flush`] returns once everything sent before it is answered, with a [`Report`] of
//! what was accepted and refused since the previous report. [`Client::close`] flushes and stops
//! the background task.
//!
//! **Dropping a client without `close`** stops nothing already sent: the background task keeps
//! delivering the buffered events for as long as the tokio runtime runs, and ends when they are
//! answered; nobody learns the outcome. Call [`Client::close`] to wait for it and read the report.
//!
//! ```no_run
//! use eye_client::{Client, Event};
//! use serde_json::json;
//! use uuid::Uuid;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080", "<an events:write token>")?;
//! let session = Uuid::new_v4();
//! client
//!     .send(Event::new(session, "page interaction", "pageview").data(json!({"path": "/"})))
//!     .await?;
//! let report = client.close().await?;
//! assert_eq!(report.accepted, 1);
//! # Ok(()) }
//! ```
//!
//! The client needs a tokio runtime with the `time` driver; every method must be called inside it.

mod batcher;
mod client;
mod deliver;
mod error;
mod event;
mod options;
mod report;

pub use client::{Client, Receipt};
pub use error::{ClientError, SendError};
pub use event::{Event, EventError};
pub use options::{Builder, Overflow};
pub use report::{FieldError, Refusal, Report};
