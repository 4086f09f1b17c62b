//! What the api counts, and its `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use eye_core::metrics::{self as m, Registry};
use eye_core::queue::PublishError;
use metrics::{Gauge, Histogram, SharedString};

use crate::State;
use crate::problem::ApiError;

/// The api's instruments; the few that every request touches are kept, the labelled ones
/// are looked up in the registry when counted.
pub struct ApiMetrics {
    registry: Registry,
    body_bytes: Histogram,
    token_cache_tokens: Gauge,
    token_cache_age: Gauge,
    pub(crate) outbox: OutboxMetrics,
}

/// What an outbox counts about the messages it publishes.
#[derive(Clone)]
pub struct OutboxMetrics {
    pub confirm_seconds: Histogram,
    pub envelopes_per_message: Histogram,
    pub in_flight: Gauge,
}

impl OutboxMetrics {
    pub fn disabled() -> Self {
        Self::new(&Registry::disabled())
    }

    pub fn new(registry: &Registry) -> Self {
        Self {
            confirm_seconds: registry.histogram(&m::API_CONFIRM_SECONDS, &[]),
            envelopes_per_message: registry.histogram(&m::API_ENVELOPES_PER_MESSAGE, &[]),
            in_flight: registry.gauge(&m::API_IN_FLIGHT, &[]),
        }
    }
}

impl ApiMetrics {
    pub fn new(registry: Registry) -> Self {
        registry.spawn_upkeep();
        // Failures show at zero before the first, so that alerts see the first one.
        for reason in PublishError::CODES {
            registry
                .counter(
                    &m::API_PUBLISH_FAILURES,
                    &[("reason", SharedString::const_str(reason))],
                )
                .increment(0);
        }
        Self {
            body_bytes: registry.histogram(&m::API_BODY_BYTES, &[]),
            token_cache_tokens: registry.gauge(&m::API_TOKEN_CACHE_TOKENS, &[]),
            token_cache_age: registry.gauge(&m::API_TOKEN_CACHE_AGE, &[]),
            outbox: OutboxMetrics::new(&registry),
            registry,
        }
    }

    pub(crate) fn body(&self, bytes: usize) {
        self.body_bytes.record(bytes as f64);
    }

    pub(crate) fn accepted(&self, application: &Arc<str>, events: usize) {
        self.registry
            .counter(
                &m::API_EVENTS_ACCEPTED,
                &[("application", application.clone().into())],
            )
            .increment(events as u64);
    }

    pub(crate) fn rate_limited(&self, application: &Arc<str>) {
        self.registry
            .counter(
                &m::API_RATE_LIMITED,
                &[("application", application.clone().into())],
            )
            .increment(1);
    }

    pub(crate) fn not_published(&self, error: &PublishError) {
        self.registry
            .counter(
                &m::API_PUBLISH_FAILURES,
                &[("reason", SharedString::const_str(error.code()))],
            )
            .increment(1);
    }

    /// Counts a request by its route, status and problem code, and its duration.
    fn answered(&self, route: SharedString, status: u16, code: &'static str, started: Instant) {
        self.registry
            .histogram(&m::API_REQUEST_SECONDS, &[("route", route.clone())])
            .record(started.elapsed().as_secs_f64());
        self.registry
            .counter(
                &m::API_REQUESTS,
                &[
                    ("route", route),
                    ("status", m::status_label(status)),
                    ("code", SharedString::const_str(code)),
                ],
            )
            .increment(1);
    }
}

/// Middleware: every answer counted, whatever produced it.
pub async fn track(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = request.app_data::<web::Data<State>>().cloned();
    let response = next.call(request).await?;
    if let Some(state) = state {
        let route = m::route_label(response.request().match_pattern());
        let code = response
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .map_or("", ApiError::code);
        state
            .metrics
            .answered(route, response.status().as_u16(), code, started);
    }
    Ok(response)
}

/// `GET /metrics`: the Prometheus text exposition of this api (and, in `eye dev`, of the
/// services sharing its process).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The Prometheus text exposition format.", body = String,
         content_type = "text/plain"),
        (status = 404, description = "`metrics_enabled` is false.", body = String,
         content_type = "text/plain")
    )
)]
pub async fn render(state: web::Data<State>) -> HttpResponse {
    let metrics = &state.metrics;
    if !metrics.registry.is_enabled() {
        return disabled();
    }
    let (tokens, age) = state.gate.cache_state();
    metrics.token_cache_tokens.set(tokens as f64);
    metrics
        .token_cache_age
        .set(age.map_or(f64::INFINITY, |a| a.as_secs_f64()));
    exposition(metrics.registry.render())
}

/// The answer to a scrape when `metrics_enabled` is false.
pub fn disabled() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("metrics are disabled: set metrics_enabled = true to serve them")
}

/// A scrape answer in the text format.
pub fn exposition(text: String) -> HttpResponse {
    HttpResponse::Ok().content_type(m::CONTENT_TYPE).body(text)
}
