//! Stored events as they arrive, as Server-Sent Events: for programs with a read token
//! (`/api/v1/events/stream`) and for the Live page with the admin session (`/live/stream`).
//!
//! Each stream watches on its own ([`LiveSource::subscribe`]); one that falls behind is
//! dropped with an `event: dropped` notice instead of slowing storage or other watchers.
//! Filters are applied here, before anything is sent.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, ResponseError};
use eye_core::queue::{LiveError, LiveEvent, LiveFeed, LiveItem, LiveSource, TrendSource};
use eye_http::Problem;
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::filter::FilterError;
use crate::queries;

/// Streams one admin process serves at once; past it new ones are answered 503.
pub const MAX_STREAMS: usize = 64;
/// Events waiting for a stream's client before it is dropped as too slow (their `data` is cut
/// at 4 KiB, so a few MiB at most).
const BACKLOG: usize = 1000;
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an unknown application id may reload the names.
const NAMES_REFRESH: Duration = Duration::from_secs(5);

/// Everything a stream needs from the admin.
#[derive(Clone)]
pub struct Live {
    source: LiveSource,
    pub(crate) trends: TrendSource,
    /// Shared by the events' and the trends' streams.
    pub(crate) streams: Arc<Semaphore>,
    /// Cancelled when the admin stops.
    pub(crate) closing: CancellationToken,
}

impl Live {
    pub fn new(source: LiveSource, trends: TrendSource, closing: CancellationToken) -> Self {
        Self {
            source,
            trends,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            closing,
        }
    }
}

/// The query string of a stream; every filter optional.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// An application's name (a token of one application sees only its own).
    pub application: String,
    /// Only events of this category.
    pub category: String,
    /// Only events of this name.
    pub name: String,
    /// Only events of this session.
    #[param(format = Uuid)]
    pub session_id: String,
}

/// Which applications a stream shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applications {
    All,
    Only(Uuid),
    /// One the reader may not see, or that does not exist.
    None,
}

#[derive(Debug, Clone)]
pub struct LiveFilter {
    pub applications: Applications,
    category: Option<String>,
    name: Option<String>,
    session_id: Option<Uuid>,
}

impl LiveFilter {
    /// The query's filters but the application, which the caller decides.
    pub fn parse(query: &StreamQuery, applications: Applications) -> Result<Self, FilterError> {
        let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let session_id = match query.session_id.trim() {
            "" => None,
            id => Some(Uuid::parse_str(id).map_err(|_| FilterError::Session)?),
        };
        Ok(Self {
            applications,
            category: text(&query.category),
            name: text(&query.name),
            session_id,
        })
    }

    fn matches(&self, event: &LiveEvent) -> bool {
        let application = match self.applications {
            Applications::All => true,
            Applications::Only(id) => event.application_id == id,
            Applications::None => false,
        };
        application
            && self.category.as_ref().is_none_or(|c| *c == event.category)
            && self.name.as_ref().is_none_or(|n| *n == event.name)
            && self.session_id.is_none_or(|s| event.session_id == Some(s))
    }
}

/// The application a name filter asks for, among `names`.
pub fn named(asked: &str, names: &HashMap<Uuid, String>) -> Applications {
    match asked.trim() {
        "" => Applications::All,
        asked => names
            .iter()
            .find(|(_, name)| name.as_str() == asked)
            .map_or(Applications::None, |(id, _)| Applications::Only(*id)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("too many live streams are open on this admin; try again later")]
    TooMany,
    #[error("events cannot be watched live right now: {0}")]
    Unavailable(#[from] LiveError),
}

impl StreamError {
    fn code(&self) -> &'static str {
        match self {
            StreamError::TooMany => "too_many_streams",
            StreamError::Unavailable(_) => "live_unavailable",
        }
    }
}

impl ResponseError for StreamError {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        eye_http::problem::log(status, self.code(), self);
        Problem::new(status, "Service Unavailable", self.code(), self.to_string()).response()
    }
}

/// Starts watching and answers with the stream.
pub async fn stream(
    live: &Live,
    db: DatabaseConnection,
    filter: LiveFilter,
    names: HashMap<Uuid, String>,
) -> Result<HttpResponse, StreamError> {
    let permit = live
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| StreamError::TooMany)?;
    let feed = live.source.subscribe(BACKLOG).await?;
    let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = Watch {
        feed,
        filter,
        names,
        names_loaded: Instant::now(),
        db,
        // Sent at once, so a client knows it is watching from now on.
        pending: VecDeque::from([Bytes::from_static(b": watching\n\n")]),
        keep_alive,
        closing: live.closing.clone(),
        done: false,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(watch, |mut watch| async move {
        let chunk = watch.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), watch))
    });
    Ok(sse(body))
}

/// A Server-Sent Events response of `body`.
pub(crate) fn sse(
    body: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + 'static,
) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-store"))
        // Proxies that buffer responses (nginx) would hold the events back.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

/// Ends a stream because the admin stops.
pub(crate) const CLOSING: &[u8] =
    b"event: closed\ndata: {\"reason\":\"the admin is stopping; reconnect to watch again\"}\n\n";
/// Ends a stream whose client fell behind.
pub(crate) const DROPPED: &[u8] =
    b"event: dropped\ndata: {\"reason\":\"the client read too slowly; reconnect to watch again\"}\n\n";
/// Ends a stream whose source went away.
pub(crate) const SOURCE_GONE: &[u8] =
    b"event: closed\ndata: {\"reason\":\"the live source went away; reconnect to watch again\"}\n\n";

/// One open stream.
struct Watch {
    feed: LiveFeed,
    filter: LiveFilter,
    names: HashMap<Uuid, String>,
    names_loaded: Instant,
    db: DatabaseConnection,
    pending: VecDeque<Bytes>,
    keep_alive: tokio::time::Interval,
    closing: CancellationToken,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

/// One event as sent: the live event with its application's name.
#[derive(Serialize)]
struct Sent<'a> {
    application: Option<&'a str>,
    #[serde(flatten)]
    event: &'a LiveEvent,
}

impl Watch {
    /// The next chunk to send; none once the stream is over.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            tokio::select! {
                () = self.closing.cancelled() => {
                    self.pending.push_back(Bytes::from_static(CLOSING));
                    self.done = true;
                }
                _ = self.keep_alive.tick() => {
                    self.pending.push_back(Bytes::from_static(b": keep-alive\n\n"));
                }
                item = self.feed.next() => match item {
                    LiveItem::Batch(batch) => {
                        for event in &batch.events {
                            if self.filter.matches(event) {
                                self.send(event).await;
                            }
                        }
                    }
                    LiveItem::Dropped => {
                        tracing::debug!("a live stream fell behind and was dropped");
                        self.pending.push_back(Bytes::from_static(DROPPED));
                        self.done = true;
                    }
                    LiveItem::Closed => {
                        self.pending.push_back(Bytes::from_static(SOURCE_GONE));
                        self.done = true;
                    }
                },
            }
        }
    }

    async fn send(&mut self, event: &LiveEvent) {
        if !self.names.contains_key(&event.application_id)
            && self.names_loaded.elapsed() >= NAMES_REFRESH
        {
            self.names_loaded = Instant::now();
            if let Ok(names) = queries::application_names(&self.db).await {
                self.names = names;
            }
        }
        let sent = Sent {
            application: self.names.get(&event.application_id).map(String::as_str),
            event,
        };
        let Ok(json) = serde_json::to_string(&sent) else {
            return;
        };
        let kind = if event.rejected { "rejected" } else { "event" };
        self.pending
            .push_back(Bytes::from(format!("event: {kind}\ndata: {json}\n\n")));
    }
}
