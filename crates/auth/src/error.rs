//! Why a request's token was refused, as `application/problem+json` with a stable `code`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use eye_http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("send the token as `Authorization: Bearer <token>`")]
    MissingToken,
    #[error("the token is malformed, its signature is not valid, or it does not match its record")]
    InvalidToken,
    #[error("the token has expired; create a new one with `eye token create`")]
    TokenExpired,
    #[error("the token has been revoked")]
    TokenRevoked,
    #[error("the token is not known to this installation")]
    UnknownToken,
    #[error("the token's application is disabled")]
    ApplicationDisabled,
    #[error("the token lacks the `{0}` scope")]
    MissingScope(&'static str),
    #[error(
        "a publishable key is accepted only from the web pages of its origins, and this request names none (no `Origin` header)"
    )]
    OriginRequired,
    #[error(
        "`{0}` is not one of this publishable key's origins: create a key that lists it (`eye token create --publishable --origin {0}`)"
    )]
    OriginNotAllowed(String),
    #[error("tokens cannot be checked right now")]
    Unavailable(#[source] sea_orm::DbErr),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenRevoked => "token_revoked",
            AuthError::UnknownToken => "unknown_token",
            AuthError::ApplicationDisabled => "application_disabled",
            AuthError::MissingScope(_) => "missing_scope",
            AuthError::OriginRequired => "origin_required",
            AuthError::OriginNotAllowed(_) => "origin_not_allowed",
            AuthError::Unavailable(_) => "auth_unavailable",
        }
    }

    fn title(&self) -> &'static str {
        match self.status_code() {
            StatusCode::UNAUTHORIZED => "Not authenticated",
            StatusCode::FORBIDDEN => "Not allowed",
            _ => "Temporarily unavailable",
        }
    }
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthError::MissingScope(_)
            | AuthError::OriginRequired
            | AuthError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        eye_http::problem::log(status, self.code(), self);
        let problem = Problem::new(status, self.title(), self.code(), self.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem.retry_after(1).response()
        } else {
            problem.response()
        }
    }
}
