//! Log in and out. Failed logins are throttled per username and per address.

use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::CsrfForm;
use crate::State;
use crate::auth::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE, sessions, users};
use crate::error::PageError;
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

#[tracing::instrument(skip_all, fields(username = %form.username))]
pub async fn submit(
    request: HttpRequest,
    state: web::Data<State>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, PageError> {
    let mut form = form.into_inner();
    // One spelling per account, so that " ana" and "ana" share their throttle.
    form.username = form.username.trim().to_owned();
    let expected = request.cookie(LOGIN_CSRF_COOKIE);
    if !expected.is_some_and(|c| sessions::same_secret(c.value(), &form.csrf)) {
        return Err(PageError::Csrf);
    }
    let address = request
        .peer_addr()
        .map_or_else(String::new, |a| a.ip().to_string());
    let again = |error: String, status| {
        let login = LoginPage {
            viewer: None,
            csrf: sessions::random_secret(),
            next: local(&form.next),
            username: form.username.clone(),
            error: Some(error),
        };
        page(&request, status, login)
    };
    if let Some(wait) = state.throttle.wait(&form.username, &address) {
        tracing::warn!(%address, "login throttled");
        let minutes = wait.as_secs().div_ceil(60);
        return again(
            format!("Too many failed logins. Try again in {minutes} minute(s)."),
            actix_web::http::StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let user = users::find(&state.db, &form.username).await?;
    let password = form.password.clone();
    let checked = user.clone();
    let valid = web::block(move || users::verify(checked.as_ref(), &password))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| valid) else {
        state.throttle.failed(&form.username, &address);
        tracing::info!(%address, "login failed");
        return again(
            "Wrong username or password.".into(),
            actix_web::http::StatusCode::UNAUTHORIZED,
        );
    };
    state.throttle.succeeded(&form.username);
    let lifetime = chrono::Duration::hours(state.session_hours.max(1));
    let secret = sessions::create(&state.db, &user, lifetime).await?;
    tracing::info!("logged in");
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
