//! Who is looking: a session cookie (HttpOnly, SameSite=Strict, Secure behind TLS) naming a
//! row in `admin_sessions`, and the CSRF token every form of that session carries.

pub mod checks;
pub mod sessions;
pub mod throttle;
pub mod users;

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::State;
use crate::error::PageError;

pub const SESSION_COOKIE: &str = "eye_session";
/// Before login there is no session: the login form's token is also set as a cookie and the
/// two must match.
pub const LOGIN_CSRF_COOKIE: &str = "eye_login_csrf";

/// The logged-in person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub username: String,
    pub csrf: String,
    session_id: String,
}

/// The viewer of this request, or a redirect to the login form that comes back here.
pub async fn viewer(request: &HttpRequest, state: &State) -> Result<Viewer, PageError> {
    let next = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Some(cookie) = request.cookie(SESSION_COOKIE) else {
        return Err(PageError::LoginRequired { next });
    };
    match sessions::find(&state.db, cookie.value()).await? {
        Some((session, user)) => Ok(Viewer {
            username: user.username,
            csrf: session.csrf_token,
            session_id: session.id,
        }),
        None => Err(PageError::LoginRequired { next }),
    }
}

/// The viewer, if the form's CSRF token is theirs.
pub async fn viewer_posting(
    request: &HttpRequest,
    state: &State,
    csrf: &str,
) -> Result<Viewer, PageError> {
    let viewer = viewer(request, state).await?;
    if !sessions::same_secret(&viewer.csrf, csrf) {
        return Err(PageError::Csrf);
    }
    Ok(viewer)
}

pub async fn logout(state: &State, viewer: &Viewer) -> Result<(), PageError> {
    sessions::delete(&state.db, &viewer.session_id).await?;
    Ok(())
}

/// Secure when the request came over TLS (directly or as a proxy's `X-Forwarded-Proto` says).
pub fn cookie(request: &HttpRequest, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(request.connection_info().scheme() == "https")
        .finish()
}

pub fn expired_cookie(request: &HttpRequest, name: &'static str) -> Cookie<'static> {
    let mut cookie = cookie(request, name, String::new());
    cookie.set_max_age(time::Duration::ZERO);
    cookie
}

/// Short tags for usernames typed at the login form, for logs: people type passwords there, so
/// the text is never logged. The tag is a keyed hash (HMAC-SHA-256 under `jwt_secret`, 12 hex
/// digits), the same for one name in every instance, and no one without the secret can test
/// guesses against it.
pub struct NameTags(Hmac<Sha256>);

impl NameTags {
    pub fn new(secret: &[u8]) -> Result<Self, hmac::digest::InvalidLength> {
        Hmac::<Sha256>::new_from_slice(secret).map(Self)
    }

    pub fn tag(&self, username: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(b"admin login name\0");
        mac.update(username.to_lowercase().as_bytes());
        mac.finalize().into_bytes()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::NameTags;

    #[test]
    fn name_tags_are_short_stable_and_keyed() {
        let tags = NameTags::new(b"one secret").unwrap();
        let tag = tags.tag("Ana");
        assert_eq!(tag.len(), 12);
        assert_eq!(tag, tags.tag("ana"), "names compare without case");
        assert_ne!(tag, tags.tag("bob"));
        assert_ne!(tag, NameTags::new(b"another secret").unwrap().tag("ana"));
        assert!(!tag.contains("ana"));
    }
}
