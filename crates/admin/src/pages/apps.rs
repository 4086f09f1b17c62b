//! Applications and their tokens: the same operations as `eye app` and `eye token`.

use std::collections::HashSet;

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use chrono::Utc;
use eye_core::origin::WebOrigin;
use eye_core::rate_limit::{Rate, RateLimit};
use eye_core::token::Scope;
use eye_entity::rate_limits;
use eye_entity::tokens::{self, TokenOpError};
use serde::Deserialize;
use uuid::Uuid;

use super::CsrfForm;
use crate::State;
use crate::auth::{self, Viewer};
use crate::error::PageError;
use crate::views::{Time, html};

pub struct AppRow {
    pub name: String,
    pub disabled: bool,
    pub created: Time,
    /// The application's own limit; `None` when it uses the default.
    pub limit: Option<RateLimit>,
}

pub struct TokenRow {
    pub id: Uuid,
    pub application: String,
    pub scopes: String,
    pub created: Time,
    pub expires: Time,
    pub last_used: Option<Time>,
    pub state: &'static str,
    /// A publishable key's origins; `None` for a secret token.
    pub origins: Option<Vec<String>>,
}

#[derive(Template)]
#[template(path = "applications.html")]
struct AppsPage {
    viewer: Option<Viewer>,
    csrf: String,
    apps: Vec<AppRow>,
    tokens: Vec<TokenRow>,
    notice: Option<String>,
    /// A form on this page that was refused, and why.
    error: Option<String>,
    default_limit: RateLimit,
}

#[derive(Template)]
#[template(path = "token_issued.html")]
struct IssuedPage {
    viewer: Option<Viewer>,
    id: Uuid,
    application: String,
    scopes: String,
    expires: Time,
    /// A publishable key's origins; empty for a secret token.
    origins: Vec<String>,
    jwt: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    #[serde(default)]
    revoked: String,
}

#[tracing::instrument(skip_all)]
pub async fn list(
    request: HttpRequest,
    state: web::Data<State>,
    notice: web::Query<Notice>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer(&request, &state).await?;
    let notice = Uuid::parse_str(&notice.revoked).ok().map(|id| {
        format!(
            "Token {id} is revoked; every api refuses it within {} ms.",
            state.token_refresh_ms
        )
    });
    page(&state, viewer, notice, None).await
}

/// The page, with a notice or the error of a refused form.
async fn page(
    state: &State,
    viewer: Viewer,
    notice: Option<String>,
    error: Option<String>,
) -> Result<HttpResponse, PageError> {
    let now = Utc::now();
    let apps = eye_entity::tokens::applications(&state.db)
        .await?
        .into_iter()
        .map(|a| AppRow {
            limit: rate_limits::override_of(&a),
            name: a.name,
            disabled: a.disabled,
            created: a.created_at.into(),
        })
        .collect();
    let tokens = tokens::list(&state.db)
        .await?
        .into_iter()
        .map(|(token, app)| (tokens::state(&token, &app, now), token, app))
        .map(|(state, token, app)| TokenRow {
            origins: tokens::origins(&token)
                .map(|origins| origins.iter().map(ToString::to_string).collect()),
            id: token.id,
            application: app.name,
            scopes: token.scopes,
            created: token.created_at.into(),
            expires: token.expires_at.into(),
            last_used: token.last_used_at.map(Time::from),
            state,
        })
        .collect();
    let page = AppsPage {
        csrf: viewer.csrf.clone(),
        viewer: Some(viewer),
        apps,
        tokens,
        notice,
        error,
        default_limit: state.rate_limit,
    };
    let refused = page.error.is_some();
    let mut response = html(&page)?;
    if refused {
        *response.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    }
    Ok(response)
}

fn back() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, "/applications"))
        .finish()
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf: String,
    name: String,
}

#[tracing::instrument(skip_all)]
pub async fn create(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let app = tokens::ensure_application(&state.db, &form.name).await?;
    tracing::info!(user = %viewer.username, application = %app.name, "application created");
    Ok(back())
}

#[derive(Debug, Deserialize)]
pub struct StateForm {
    csrf: String,
    name: String,
    disabled: bool,
}

#[tracing::instrument(skip_all)]
pub async fn set_state(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<StateForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    tokens::set_application_disabled(&state.db, &form.name, form.disabled).await?;
    tracing::info!(user = %viewer.username, application = %form.name, disabled = form.disabled, "application state changed");
    Ok(back())
}

#[derive(Debug, Deserialize)]
pub struct LimitForm {
    csrf: String,
    name: String,
    #[serde(default)]
    rate: String,
    #[serde(default)]
    burst: String,
    /// Present when the application goes back to the default limit.
    #[serde(default)]
    default: Option<String>,
}

impl LimitForm {
    /// The limit asked for (`None`: the default), or what is wrong with the form.
    fn limit(&self) -> Result<Option<RateLimit>, String> {
        if self.default.is_some() {
            return Ok(None);
        }
        let rate: Rate = self.rate.parse().map_err(|e| format!("Rate: {e}"))?;
        let burst: u64 = self
            .burst
            .trim()
            .parse()
            .map_err(|_| format!("Burst: `{}` is not a number of events", self.burst.trim()))?;
        let limit = RateLimit::new(rate, burst).map_err(|e| format!("Burst: {e}"))?;
        Ok(Some(limit))
    }
}

/// Sets or clears an application's own rate limit, as `eye app limit` does.
#[tracing::instrument(skip_all)]
pub async fn set_limit(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<LimitForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let limit = match form.limit() {
        Ok(limit) => limit,
        Err(error) => {
            let error = format!("The limit of `{}` is unchanged. {error}", form.name);
            return page(&state, viewer, None, Some(error)).await;
        }
    };
    match rate_limits::set(&state.db, &form.name, limit).await {
        Ok(_) => {}
        Err(TokenOpError::NoSuchApplication(name)) => {
            let error = format!("No application is named `{name}`.");
            return page(&state, viewer, None, Some(error)).await;
        }
        Err(e) => return Err(e.into()),
    }
    let described = limit.map_or_else(|| "default".to_owned(), |l| l.to_string());
    tracing::info!(user = %viewer.username, application = %form.name, limit = %described, "application rate limit changed");
    Ok(back())
}

#[derive(Debug, Deserialize)]
pub struct IssueForm {
    csrf: String,
    application: String,
    #[serde(default)]
    write: Option<String>,
    #[serde(default)]
    read: Option<String>,
    days: i64,
    /// Present for a publishable key, which needs `origins`.
    #[serde(default)]
    publishable: Option<String>,
    /// Origins separated by spaces, commas or lines.
    #[serde(default)]
    origins: String,
}

impl IssueForm {
    /// A publishable key's origins (`None` for a secret token), or what is wrong with them.
    fn origins(&self) -> Result<Option<Vec<WebOrigin>>, String> {
        if self.publishable.is_none() {
            if !self.origins.trim().is_empty() {
                return Err("Origins are only for a publishable key: tick \"publishable\".".into());
            }
            return Ok(None);
        }
        if self.read.is_some() {
            return Err("A publishable key only sends events: untick events:read.".into());
        }
        let origins = self
            .origins
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|o| !o.is_empty())
            .map(|o| WebOrigin::parse(o).map_err(|e| format!("Origins: {e}.")))
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err(
                "A publishable key needs the origin of the pages that embed it, e.g. https://shop.example."
                    .into(),
            );
        }
        if origins.len() > tokens::MAX_ORIGINS {
            return Err(format!(
                "A publishable key lists at most {} origins.",
                tokens::MAX_ORIGINS
            ));
        }
        Ok(Some(origins))
    }
}

#[tracing::instrument(skip_all)]
pub async fn issue(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<IssueForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let origins = match form.origins() {
        Ok(origins) => origins,
        Err(error) => {
            let error = format!("No token was issued. {error}");
            return page(&state, viewer, None, Some(error)).await;
        }
    };
    let mut scopes = HashSet::new();
    if form.write.is_some() {
        scopes.insert(Scope::EventsWrite);
    }
    if form.read.is_some() {
        scopes.insert(Scope::EventsRead);
    }
    if scopes.is_empty() {
        return Err(PageError::BadForm("choose at least one scope".into()));
    }
    if !(1..=3650).contains(&form.days) {
        return Err(PageError::BadForm("a token lives 1 to 3650 days".into()));
    }
    let lifetime = chrono::Duration::days(form.days);
    let issued = match origins {
        Some(origins) => {
            tokens::issue_publishable(&state.db, &state.keys, &form.application, origins, lifetime)
                .await?
        }
        None => tokens::issue(&state.db, &state.keys, &form.application, scopes, lifetime).await?,
    };
    tracing::info!(user = %viewer.username, token = %issued.id, publishable = !issued.origins.is_empty(), "token issued");
    let mut scopes: Vec<_> = issued.scopes.iter().map(|s| s.as_str()).collect();
    scopes.sort_unstable();
    html(&IssuedPage {
        viewer: Some(viewer),
        id: issued.id,
        application: issued.application.name,
        scopes: scopes.join(","),
        expires: issued.expires_at.into(),
        origins: issued.origins.iter().map(ToString::to_string).collect(),
        jwt: issued.jwt,
    })
}

#[tracing::instrument(skip_all)]
pub async fn revoke(
    request: HttpRequest,
    state: web::Data<State>,
    id: web::Path<Uuid>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    let id = id.into_inner();
    if !tokens::revoke(&state.db, id).await? {
        return Err(PageError::NotFound);
    }
    tracing::info!(user = %viewer.username, token = %id, "token revoked");
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/applications?revoked={id}")))
        .finish())
}
