//! Every error a page answers with: one status and one stable code each, shown as a small
//! HTML page (or a redirect to the login form).

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, LOCATION};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use eye_entity::tokens::TokenOpError;
use sea_orm::DbErr;

use crate::filter::FilterError;
use crate::queries::events::SearchError;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("log in to see this page")]
    LoginRequired { next: String },
    #[error("the form has expired or did not come from this page; reload the page and try again")]
    Csrf,
    #[error(transparent)]
    BadFilter(#[from] FilterError),
    #[error("{0}")]
    BadForm(String),
    #[error("there is nothing here")]
    NotFound,
    #[error(transparent)]
    SearchTimeout(SearchError),
    #[error(
        "the statistics took longer than {} s and were stopped: narrow the window, and try again",
        .0.as_secs_f64()
    )]
    StatsTimeout(std::time::Duration),
    #[error("the database could not answer")]
    Db(#[from] DbErr),
    #[error("the page could not be drawn")]
    Render(#[from] askama::Error),
    #[error("the token could not be issued")]
    Sign(#[source] eye_core::token::SignError),
    /// The queue did not take a replayed dead letter; nothing not yet published was removed.
    #[error("{0}")]
    Replay(String),
    #[error(transparent)]
    Report(#[from] crate::reports::ReportError),
}

impl From<TokenOpError> for PageError {
    fn from(e: TokenOpError) -> Self {
        match e {
            TokenOpError::Db(e) => PageError::Db(e),
            TokenOpError::Sign(e) => PageError::Sign(e),
            other => PageError::BadForm(other.to_string()),
        }
    }
}

impl From<SearchError> for PageError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Db(e) => PageError::Db(e),
            timeout @ SearchError::Timeout(_) => PageError::SearchTimeout(timeout),
        }
    }
}

impl PageError {
    pub fn code(&self) -> &'static str {
        match self {
            PageError::LoginRequired { .. } => "login_required",
            PageError::Csrf => "csrf_failed",
            PageError::BadFilter(_) => "invalid_filter",
            PageError::BadForm(_) => "invalid_form",
            PageError::NotFound => "not_found",
            PageError::SearchTimeout(_) => "search_timeout",
            PageError::StatsTimeout(_) => "stats_timeout",
            PageError::Db(_) => "database_unavailable",
            PageError::Render(_) => "render_failed",
            PageError::Sign(_) => "sign_failed",
            PageError::Replay(_) => "replay_failed",
            PageError::Report(e) => e.code(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: String,
    code: &'a str,
    /// For the operator to quote; the same id is in the logs of this request.
    request_id: Option<eye_http::RequestId>,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::LoginRequired { .. } => StatusCode::SEE_OTHER,
            PageError::Csrf => StatusCode::FORBIDDEN,
            PageError::BadFilter(_) | PageError::BadForm(_) => StatusCode::BAD_REQUEST,
            PageError::NotFound => StatusCode::NOT_FOUND,
            PageError::SearchTimeout(_)
            | PageError::StatsTimeout(_)
            | PageError::Db(_)
            | PageError::Replay(_) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Render(_) | PageError::Sign(_) => StatusCode::INTERNAL_SERVER_ERROR,
            PageError::Report(e) => e.status(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let PageError::LoginRequired { next } = self {
            let location = format!("/login?next={}", crate::views::url_encode(next));
            return HttpResponse::SeeOther()
                .insert_header((LOCATION, location))
                .finish();
        }
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %crate::views::ErrorChain(self as &dyn std::error::Error), "page failed");
        } else {
            tracing::debug!(code = self.code(), error = %self, "page refused");
        }
        let page = ErrorPage {
            status: status.as_u16(),
            message: self.to_string(),
            code: self.code(),
            request_id: eye_http::current_request_id(),
        };
        let body = page.render().unwrap_or_else(|_| self.to_string());
        HttpResponse::build(status)
            .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(body)
    }
}
