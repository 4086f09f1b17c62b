//! What the admin counts, and its `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use eye_core::metrics::{self as m, Registry};
use metrics::SharedString;

use crate::State;

pub struct AdminMetrics {
    registry: Registry,
}

/// Put in a read-api request's extensions once its token is known: the application it reads
/// for, a label of `eye_admin_read_api_requests_total`.
#[derive(Clone)]
pub struct ReadApplication(pub Arc<str>);

/// Why a login was refused.
#[derive(Debug, Clone, Copy)]
pub enum LoginFailure {
    Credentials,
    Throttled,
}

impl AdminMetrics {
    pub fn new(registry: Registry) -> Self {
        registry.spawn_upkeep();
        let metrics = Self { registry };
        // Failed logins show at zero before the first, so that alerts see the first.
        for why in [LoginFailure::Credentials, LoginFailure::Throttled] {
            metrics.login_counter(why).increment(0);
        }
        metrics
    }

    fn login_counter(&self, why: LoginFailure) -> metrics::Counter {
        let reason = match why {
            LoginFailure::Credentials => "credentials",
            LoginFailure::Throttled => "throttled",
        };
        self.registry.counter(
            &m::ADMIN_LOGINS_FAILED,
            &[("reason", SharedString::const_str(reason))],
        )
    }

    pub fn login_failed(&self, why: LoginFailure) {
        self.login_counter(why).increment(1);
    }
}

/// Middleware: every page and read-api answer counted by route pattern and status.
pub async fn track(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = request.app_data::<web::Data<State>>().cloned();
    let response = next.call(request).await?;
    let Some(state) = state else {
        return Ok(response);
    };
    let registry = &state.metrics.registry;
    let pattern = response.request().match_pattern();
    let read_api = pattern.as_deref().is_some_and(|p| p.starts_with("/api/"));
    let route = m::route_label(pattern);
    let status = m::status_label(response.status().as_u16());
    registry
        .histogram(&m::ADMIN_REQUEST_SECONDS, &[("route", route.clone())])
        .record(started.elapsed().as_secs_f64());
    registry
        .counter(
            &m::ADMIN_REQUESTS,
            &[("route", route), ("status", status.clone())],
        )
        .increment(1);
    if read_api {
        // Requests refused before their token was known count under `none`.
        let application = response
            .request()
            .extensions()
            .get::<ReadApplication>()
            .map_or(SharedString::const_str("none"), |a| a.0.clone().into());
        registry
            .counter(
                &m::ADMIN_READ_API_REQUESTS,
                &[("application", application), ("status", status)],
            )
            .increment(1);
    }
    Ok(response)
}

/// `GET /metrics`.
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
    if !state.metrics.registry.is_enabled() {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("metrics are disabled: set metrics_enabled = true to serve them");
    }
    HttpResponse::Ok()
        .content_type(m::CONTENT_TYPE)
        .body(state.metrics.registry.render())
}
