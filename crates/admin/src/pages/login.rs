//! Log in and out. Failed logins are throttled per username and per address.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::CsrfForm;
use crate::State;
use crate::auth::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE, checks, sessions, users};
use crate::error::PageError;
use crate::metrics::LoginFailure;
use crate::views::html;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    viewer: Option<auth::Viewer>,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: String,
}

/// Only paths of this site: a login link must not send anyone elsewhere.
fn local(next: &str) -> String {
    // Browsers drop tabs and newlines inside URLs, so `/\t/evil.example` would become
    // `//evil.example`: refuse control characters and spaces outright.
    let plain = !next.chars().any(|c| c.is_control() || c.is_whitespace());
    if plain && next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

fn page(
    request: &HttpRequest,
    status: actix_web::http::StatusCode,
    page: LoginPage,
) -> Result<HttpResponse, PageError> {
    let csrf = page.csrf.clone();
    let mut response = html(&page)?;
    *response.status_mut() = status;
    response
        .add_cookie(&auth::cookie(request, LOGIN_CSRF_COOKIE, csrf))
        .map_err(|e| PageError::BadForm(e.to_string()))?;
    Ok(response)
}

#[tracing::instrument(skip_all)]
pub async fn form(
    request: HttpRequest,
    query: web::Query<Next>,
) -> Result<HttpResponse, PageError> {
    let login = LoginPage {
        viewer: None,
        csrf: sessions::random_secret(),
        next: local(&query.next),
        username: String::new(),
        error: None,
    };
    page(&request, actix_web::http::StatusCode::OK, login)
}

/// Longer names are refused before anything is counted or looked up: no account has one
/// (names have at most 64 characters), and the throttle's keys stay small.
pub const MAX_USERNAME_CHARS: usize = 150;

/// Every line logged here names the login by a keyed tag of the username (`user`), never its
/// text: people type passwords into the name field.
#[tracing::instrument(skip_all, fields(user = tracing::field::Empty, address = tracing::field::Empty))]
pub async fn submit(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    use actix_web::http::StatusCode;
    let mut form = form.into_inner();
    // One spelling per account, so that " ana" and "ana" share their throttle.
    form.username = form.username.trim().to_owned();
    let expected = request.cookie(LOGIN_CSRF_COOKIE);
    if !expected.is_some_and(|c| sessions::same_secret(c.value(), &form.csrf)) {
        return Err(PageError::Csrf);
    }
    let too_long = form.username.chars().count() > MAX_USERNAME_CHARS;
    let again = |error: String, status| {
        let login = LoginPage {
            viewer: None,
            csrf: sessions::random_secret(),
            next: local(&form.next),
            username: if too_long {
                String::new()
            } else {
                form.username.clone()
            },
            error: Some(error),
        };
        page(&request, status, login)
    };
    if too_long {
        return again(
            format!("Usernames have at most {MAX_USERNAME_CHARS} characters."),
            StatusCode::BAD_REQUEST,
        );
    }
    let origin = state.proxies.origin(&request);
    let span = tracing::Span::current();
    span.record(
        "user",
        tracing::field::display(state.name_tags.tag(&form.username)),
    );
    span.record("address", tracing::field::display(origin.address));
    // Counted now, before the password is checked, so that guesses sent at once all count.
    let attempt = match state.throttle.attempt(&form.username, origin.address) {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::warn!("login throttled");
            state.metrics.login_failed(LoginFailure::Throttled);
            let minutes = wait.as_secs().div_ceil(60).max(1);
            return again(
                format!("Too many failed logins. Try again in {minutes} minute(s)."),
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
    };
    let user = match users::find(&state.db, &form.username).await {
        Ok(user) => user,
        Err(e) => {
            state.throttle.unchecked(attempt);
            return Err(e.into());
        }
    };
    let valid = match state
        .password_checks
        .verify(user.clone(), form.password.clone())
        .await
    {
        Ok(valid) => valid,
        Err(checks::Busy) => {
            state.throttle.unchecked(attempt);
            tracing::warn!("login not checked: too many at once");
            let mut response = again(
                "Too many logins are being checked at once, so yours was not: try again in a \
                 moment."
                    .into(),
                StatusCode::SERVICE_UNAVAILABLE,
            )?;
            response.headers_mut().insert(
                actix_web::http::header::RETRY_AFTER,
                actix_web::http::header::HeaderValue::from_static("1"),
            );
            return Ok(response);
        }
    };
    let Some(user) = user.filter(|_| valid) else {
        tracing::info!("login failed");
        state.metrics.login_failed(LoginFailure::Credentials);
        return again(
            "Wrong username or password.".into(),
            StatusCode::UNAUTHORIZED,
        );
    };
    state.throttle.succeeded(attempt);
    let lifetime = chrono::Duration::hours(state.session_hours.max(1));
    let secret = sessions::create(&state.db, &user, lifetime).await?;
    // A real account's name is no secret.
    tracing::info!(username = %user.username, "logged in");
    let mut session = auth::cookie(&request, SESSION_COOKIE, secret);
    session.set_max_age(actix_web::cookie::time::Duration::hours(
        state.session_hours.max(1),
    ));
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, local(&form.next)))
        .cookie(session)
        .cookie(auth::expired_cookie(&request, LOGIN_CSRF_COOKIE))
        .finish())
}

#[tracing::instrument(skip_all)]
pub async fn logout(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, PageError> {
    let viewer = auth::viewer_posting(&request, &state, &form.csrf).await?;
    auth::logout(&state, &viewer).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, "/login"))
        .cookie(auth::expired_cookie(&request, SESSION_COOKIE))
        .finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(super::local("/events?category=x"), "/events?category=x");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "",
        ] {
            assert_eq!(super::local(bad), "/", "{bad}");
        }
    }
}

#[cfg(test)]
mod redirect_tests {
    use super::local;

    #[test]
    fn only_paths_on_this_site_are_followed_after_login() {
        for (next, expected) in [
            ("/events?category=x", "/events?category=x"),
            ("//evil.example", "/"),
            ("/\t/evil.example", "/"),
            ("/\n/evil.example", "/"),
            ("/\\evil.example", "/"),
            ("https://evil.example", "/"),
            ("/ /evil.example", "/"),
        ] {
            assert_eq!(local(next), expected, "{next:?}");
        }
    }
}
