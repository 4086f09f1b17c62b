//! The per-minute trends as Server-Sent Events (`/api/v1/trends/stream`, for `eye tail
//! --trends`): each published minute as `event: trend`, narrowed to the applications the
//! token reads, with their names. A minute in which a reader's applications stored nothing
//! still comes, with empty lists: the stream says "nothing happened" rather than stay silent.

use std::collections::{HashMap, VecDeque};

use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use eye_core::queue::{Trend, TrendFeed, TrendItem};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::State;
use crate::live::{self, Applications, KEEP_ALIVE, StreamError};
use crate::queries;
use crate::read_api::{ReadError, stream_reach};

/// The query string of the trends' stream.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// An application's name (a token of one application sees only its own).
    pub application: String,
}

/// One minute as sent.
#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SentTrend {
    /// The minute's start (UTC); the counts are of events whose `timestamp` falls in it.
    pub minute: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
    pub counts: Vec<SentCount>,
    /// Up to 10 pages per application: events whose `data` has a string `path`.
    pub top_pages: Vec<SentPage>,
    /// False when the pages could not be counted in time (`top_pages` is then empty).
    pub pages_counted: bool,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SentCount {
    pub application_id: Uuid,
    pub application: Option<String>,
    pub category: String,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SentPage {
    pub application_id: Uuid,
    pub application: Option<String>,
    pub host: Option<String>,
    pub path: String,
    pub count: i64,
}

/// `trend` narrowed to `applications`, named.
pub fn narrowed(
    trend: &Trend,
    applications: Applications,
    names: &HashMap<Uuid, String>,
) -> SentTrend {
    let shown = |id: Uuid| match applications {
        Applications::All => true,
        Applications::Only(only) => id == only,
        Applications::None => false,
    };
    let name = |id: &Uuid| names.get(id).cloned();
    SentTrend {
        minute: trend.minute,
        published_at: trend.published_at,
        counts: trend
            .counts
            .iter()
            .filter(|c| shown(c.application_id))
            .map(|c| SentCount {
                application_id: c.application_id,
                application: name(&c.application_id),
                category: c.category.clone(),
                name: c.name.clone(),
                count: c.count,
            })
            .collect(),
        top_pages: trend
            .top_pages
            .iter()
            .filter(|p| shown(p.application_id))
            .map(|p| SentPage {
                application_id: p.application_id,
                application: name(&p.application_id),
                host: p.host.clone(),
                path: p.path.clone(),
                count: p.count,
            })
            .collect(),
        pages_counted: trend.pages_counted,
    }
}

/// Each minute's trend as it is published, for the token's applications.
#[utoipa::path(
    get,
    path = "/api/v1/trends/stream",
    tag = "read",
    operation_id = "stream_trends",
    params(TrendQuery),
    responses((
        status = 200,
        description = "Server-Sent Events, one a minute: `event: trend` with a `SentTrend` as JSON in `data:`, published by one worker about 10 s after the minute ended; `: keep-alive` comments every 15 s; `event: dropped` (the client read too slowly) or `event: closed` (the admin stops, or the broker went away) end the stream.",
        content_type = "text/event-stream",
        body = String
    )),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn stream(
    request: HttpRequest,
    state: web::Data<State>,
    query: web::Query<TrendQuery>,
) -> Result<HttpResponse, ReadError> {
    let (applications, names) = stream_reach(&state, &request, &query.application).await?;
    let permit = state
        .live
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| StreamError::TooMany)?;
    let feed = state
        .live
        .trends
        .subscribe()
        .await
        .map_err(StreamError::Unavailable)?;
    let mut keep_alive = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = Watch {
        feed,
        applications,
        names,
        state: state.clone(),
        pending: VecDeque::from([Bytes::from_static(b": watching\n\n")]),
        keep_alive,
        closing: state.live.closing.clone(),
        done: false,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(watch, |mut watch| async move {
        let chunk = watch.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), watch))
    });
    Ok(live::sse(body))
}

struct Watch {
    feed: TrendFeed,
    applications: Applications,
    names: HashMap<Uuid, String>,
    state: web::Data<State>,
    pending: VecDeque<Bytes>,
    keep_alive: tokio::time::Interval,
    closing: CancellationToken,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Watch {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            let end = |done: &mut bool, text: &'static [u8]| {
                *done = true;
                Bytes::from_static(text)
            };
            let chunk = tokio::select! {
                () = self.closing.cancelled() => end(&mut self.done, live::CLOSING),
                _ = self.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
                item = self.feed.next() => match item {
                    TrendItem::Trend(trend) => {
                        // Names once a minute: an application created meanwhile is named.
                        if let Ok(names) = queries::application_names(&self.state.db).await {
                            self.names = names;
                        }
                        let sent = narrowed(&trend, self.applications, &self.names);
                        let Ok(json) = serde_json::to_string(&sent) else {
                            continue;
                        };
                        Bytes::from(format!("event: trend\ndata: {json}\n\n"))
                    }
                    TrendItem::Dropped => end(&mut self.done, live::DROPPED),
                    TrendItem::Closed => end(&mut self.done, live::SOURCE_GONE),
                },
            };
            self.pending.push_back(chunk);
        }
    }
}
