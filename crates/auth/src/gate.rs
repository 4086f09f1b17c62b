//! Bearer-token checks. Signatures are verified locally; what a token may do comes from a
//! cache of its `api_tokens` row (scopes, expiry, revocation, the application's state) that
//! every instance reloads every `token_refresh_ms`, so a revocation, a disabled application or
//! a narrowed token takes effect everywhere within that time. The same reload writes when each
//! token was last used. It also carries each application's name and rate limit, so a limit
//! set by `eye app limit` applies everywhere within the same time.
//!
//! A publishable key (a row with origins) is accepted only with an `Origin` header naming one
//! of them, on every route that asks the gate, and never grants more than `events:write`.

use eye_core::supervise::{Checkpoint, OnPanic};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::{AUTHORIZATION, ORIGIN};
use chrono::{DateTime, Utc};
use eye_core::origin::WebOrigin;
use eye_core::rate_limit::RateLimit;
use eye_core::token::{Claims, Scope, TokenError, TokenKeys};
use eye_entity::{api_tokens, applications, rate_limits, tokens};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::AuthError;

/// The name the refresh task is supervised (and its panics logged) under.
pub const REFRESH_TASK: &str = "token refresh";

/// Most tokens whose signature is remembered as checked; past it the memory starts again
/// empty. A token is remembered by its exact text, so only the same bytes skip the HMAC and
/// the claims' parse; its expiry and its row are still checked on every request.
const MAX_VERIFIED: usize = 10_000;

/// What a request's token may do, as its row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub token_id: Uuid,
    pub application_id: Uuid,
    /// Shared by every token of the application (a pointer, not a copy, per request).
    pub application_name: Arc<str>,
    /// The application's own rate limit; `None` means the default of the settings.
    pub rate_limit: Option<RateLimit>,
    /// Shared with the cached row: a request clones a pointer, not the set.
    pub scopes: Arc<HashSet<Scope>>,
    /// A publishable key's origins; `None` for a secret token.
    pub origins: Option<Arc<[WebOrigin]>>,
}

impl Grant {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// A key meant to be embedded in web pages, rather than a secret token.
    pub fn is_publishable(&self) -> bool {
        self.origins.is_some()
    }

    /// A secret token passes; a publishable key only with the `Origin` of one of its pages.
    fn check_origin(&self, origin: Option<&str>) -> Result<(), AuthError> {
        let Some(origins) = &self.origins else {
            return Ok(());
        };
        let origin = origin.ok_or(AuthError::OriginRequired)?;
        match WebOrigin::parse(origin) {
            Ok(origin) if origins.contains(&origin) => Ok(()),
            _ => Err(AuthError::OriginNotAllowed(
                origin
                    .chars()
                    .take(eye_core::origin::MAX_ORIGIN_CHARS)
                    .collect(),
            )),
        }
    }
}

/// A token's row as last loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenRow {
    application_id: Uuid,
    application_name: Arc<str>,
    rate_limit: Option<RateLimit>,
    scopes: Arc<HashSet<Scope>>,
    origins: Option<Arc<[WebOrigin]>>,
    expires_at: DateTime<Utc>,
    revoked: bool,
    application_disabled: bool,
}

impl TokenRow {
    /// `name` is the application's name, shared by its tokens.
    fn new(token: &api_tokens::Model, app: &applications::Model, name: Arc<str>) -> Self {
        let origins = tokens::origins(token).map(Arc::from);
        let mut scopes = tokens::scopes(token);
        // Whatever its row says, a key shown to every visitor of a page only sends.
        if origins.is_some() {
            scopes.retain(|scope| *scope == Scope::EventsWrite);
        }
        Self {
            application_id: token.application_id,
            application_name: name,
            rate_limit: rate_limits::override_of(app),
            scopes: Arc::new(scopes),
            origins,
            expires_at: token.expires_at,
            revoked: token.revoked_at.is_some(),
            application_disabled: app.disabled,
        }
    }

    /// The grant for `claims`, or why they are refused. A row can only have been narrowed
    /// since its token was signed (scopes removed, expiry brought forward), so the claims
    /// must name the row's application and hold at least its scopes and expiry; anything
    /// they hold beyond the row is ignored.
    fn grant(&self, claims: &Claims, now: DateTime<Utc>) -> Result<Grant, AuthError> {
        let agrees = claims.sub == self.application_id
            && claims.scopes.is_superset(&self.scopes)
            && claims.exp >= self.expires_at.timestamp();
        if !agrees {
            return Err(AuthError::InvalidToken);
        }
        if self.revoked {
            return Err(AuthError::TokenRevoked);
        }
        if self.application_disabled {
            return Err(AuthError::ApplicationDisabled);
        }
        if self.expires_at <= now {
            return Err(AuthError::TokenExpired);
        }
        Ok(Grant {
            token_id: claims.jti,
            application_id: self.application_id,
            application_name: self.application_name.clone(),
            rate_limit: self.rate_limit,
            scopes: self.scopes.clone(),
            origins: self.origins.clone(),
        })
    }

    /// A publishable key that requests may use now.
    fn is_active_publishable(&self, now: DateTime<Utc>) -> bool {
        self.origins.is_some()
            && !self.revoked
            && !self.application_disabled
            && self.expires_at > now
    }
}

/// A token as this instance knows it; `row` is `None` when the database has no such token.
struct Known {
    row: Option<TokenRow>,
    /// Unix seconds of the last use not yet written to the database; 0 when none. Shared with
    /// the entry this one replaces, so a use recorded on the old entry while the cache was
    /// reloaded is still written.
    used_at: Arc<AtomicI64>,
}

impl Known {
    fn new(row: Option<TokenRow>, replaced: Option<&Arc<Known>>) -> Arc<Self> {
        Arc::new(Self {
            row,
            used_at: replaced.map_or_else(|| Arc::new(AtomicI64::new(0)), |k| k.used_at.clone()),
        })
    }
}

pub struct TokenGate {
    keys: TokenKeys,
    db: DatabaseConnection,
    known: RwLock<Arc<HashMap<Uuid, Arc<Known>>>>,
    /// Tokens whose signature was checked, with their claims.
    verified: RwLock<HashMap<Box<str>, Arc<Claims>>>,
    /// When the cache was last reloaded in full.
    loaded_at: RwLock<Option<Instant>>,
    /// Every origin of an active publishable key: the pages CORS answers are given to.
    listed_origins: RwLock<Arc<HashSet<WebOrigin>>>,
}

impl TokenGate {
    pub fn new(keys: TokenKeys, db: DatabaseConnection) -> Self {
        Self {
            keys,
            db,
            known: RwLock::new(Arc::new(HashMap::new())),
            verified: RwLock::new(HashMap::new()),
            loaded_at: RwLock::new(None),
            listed_origins: RwLock::new(Arc::new(HashSet::new())),
        }
    }

    /// What the request's valid, active bearer token may do, provided its row grants `scope`
    /// (and, for a publishable key, the request comes from one of its origins).
    pub async fn authorize(&self, request: &HttpRequest, scope: Scope) -> Result<Grant, AuthError> {
        let token = bearer(request).ok_or(AuthError::MissingToken)?;
        self.authorize_key(token, origin(request), scope).await
    }

    /// [`TokenGate::authorize`] for a token that came some other way than a header (a
    /// publishable key in a body, a Segment write key), with the request's `Origin` header.
    pub async fn authorize_key(
        &self,
        token: &str,
        origin: Option<&str>,
        scope: Scope,
    ) -> Result<Grant, AuthError> {
        let now = Utc::now();
        let claims = self.verify(token, now)?;
        let cached = self.snapshot().get(&claims.jti).cloned();
        let known = match cached {
            Some(known) => known,
            // A token created after the last refresh: look it up once and remember it.
            None => {
                let row = self
                    .lookup(claims.jti)
                    .await
                    .map_err(AuthError::Unavailable)?;
                self.remember(claims.jti, row)
            }
        };
        let row = known.row.as_ref().ok_or(AuthError::UnknownToken)?;
        let grant = row.grant(&claims, now)?;
        grant.check_origin(origin)?;
        if !grant.allows(scope) {
            return Err(AuthError::MissingScope(scope.as_str()));
        }
        known.used_at.store(now.timestamp(), Ordering::Relaxed);
        Ok(grant)
    }

    /// The token's claims once its signature is good and it has not expired: the signature is
    /// checked once per token text, then remembered.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Arc<Claims>, AuthError> {
        let remembered = self
            .verified
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.keys.verify(token).map_err(|e| match e {
                    TokenError::Expired => AuthError::TokenExpired,
                    TokenError::Invalid => AuthError::InvalidToken,
                })?);
                let mut verified = self.verified.write().unwrap_or_else(|p| p.into_inner());
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(token.into(), claims.clone());
                claims
            }
        };
        // Refused here, as the signature check would: an expired token's row is no longer in
        // the cache, so going on would cost a database lookup per request.
        if claims.exp < now.timestamp() {
            return Err(AuthError::TokenExpired);
        }
        Ok(claims)
    }

    /// Writes when tokens were last used (best effort), then reloads every unexpired token and
    /// its application's state, name and rate limit.
    pub async fn refresh(&self) -> Result<(), DbErr> {
        // Best effort: a database user that may only read must still see revocations.
        if let Err(e) = self.flush_usage().await {
            tracing::warn!(error = %e, "could not record when tokens were last used");
        }
        let rows = api_tokens::Entity::find()
            .find_also_related(applications::Entity)
            .filter(api_tokens::Column::ExpiresAt.gt(Utc::now()))
            .all(&self.db)
            .await?;
        let mut names: HashMap<Uuid, Arc<str>> = HashMap::new();
        let now = Utc::now();
        let mut listed = HashSet::new();
        // Built under the lock, so that no entry added or used meanwhile is replaced unseen.
        let mut cache = self.known.write().unwrap_or_else(|p| p.into_inner());
        let known: HashMap<_, _> = rows
            .into_iter()
            .map(|(token, app)| {
                let row = app.map(|app| {
                    let name = names
                        .entry(app.id)
                        .or_insert_with(|| Arc::from(app.name.as_str()))
                        .clone();
                    TokenRow::new(&token, &app, name)
                });
                if let Some(row) = row.as_ref().filter(|r| r.is_active_publishable(now)) {
                    listed.extend(row.origins.iter().flat_map(|o| o.iter().cloned()));
                }
                (token.id, Known::new(row, cache.get(&token.id)))
            })
            .collect();
        *cache = Arc::new(known);
        drop(cache);
        *self
            .listed_origins
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(listed);
        *self.loaded_at.write().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// One `UPDATE` for every token used since the last flush; a use is at most one refresh
    /// period old when it is written.
    async fn flush_usage(&self) -> Result<(), DbErr> {
        let snapshot = self.snapshot();
        let mut used: Vec<(Uuid, i64)> = snapshot
            .iter()
            .filter_map(|(id, known)| {
                let at = known.used_at.swap(0, Ordering::Relaxed);
                (at > 0).then_some((*id, at))
            })
            .collect();
        let Some(latest) = used.iter().map(|(_, at)| *at).max() else {
            return Ok(());
        };
        let at = chrono::DateTime::from_timestamp(latest, 0).unwrap_or_else(Utc::now);
        api_tokens::Entity::update_many()
            .col_expr(api_tokens::Column::LastUsedAt, Expr::value(at))
            .filter(api_tokens::Column::Id.is_in(used.drain(..).map(|(id, _)| id)))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Refreshes every `period` for as long as the gate lives. A panic restarts the task
    /// (logged and counted), so revocations are never silently ignored from then on.
    pub fn spawn_refresh(self: &Arc<Self>, period: Duration) {
        let gate: Weak<Self> = Arc::downgrade(self);
        eye_core::supervise::spawn_supervised(REFRESH_TASK, OnPanic::Restart, move || {
            let gate = gate.clone();
            async move {
                let mut ticks = tokio::time::interval(period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut checkpoint = Checkpoint::new(REFRESH_TASK);
                loop {
                    ticks.tick().await;
                    checkpoint.pass();
                    let Some(gate) = gate.upgrade() else { break };
                    if let Err(e) = gate.refresh().await {
                        tracing::warn!(error = %e, "could not refresh api tokens; keeping the last known state");
                    }
                }
            }
        });
    }

    /// Tokens in the cache, and how long ago it was last reloaded (`None`: never yet).
    pub fn cache_state(&self) -> (usize, Option<Duration>) {
        let loaded_at = *self.loaded_at.read().unwrap_or_else(|p| p.into_inner());
        (self.snapshot().len(), loaded_at.map(|at| at.elapsed()))
    }

    /// Whether an active publishable key lists `origin` (an `Origin` header's value). A key
    /// is listed from the reload after its creation, or from its first use, if sooner.
    pub fn origin_listed(&self, origin: &str) -> bool {
        let Ok(origin) = WebOrigin::parse(origin) else {
            return false;
        };
        self.listed_origins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&origin)
    }

    fn snapshot(&self) -> Arc<HashMap<Uuid, Arc<Known>>> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, id: Uuid, row: Option<TokenRow>) -> Arc<Known> {
        if let Some(origins) = row
            .as_ref()
            .filter(|r| r.is_active_publishable(Utc::now()))
            .and_then(|r| r.origins.clone())
        {
            let mut listed = self
                .listed_origins
                .write()
                .unwrap_or_else(|p| p.into_inner());
            Arc::make_mut(&mut listed).extend(origins.iter().cloned());
        }
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        let entry = Known::new(row, known.get(&id));
        Arc::make_mut(&mut known).insert(id, entry.clone());
        entry
    }

    async fn lookup(&self, id: Uuid) -> Result<Option<TokenRow>, DbErr> {
        let row = api_tokens::Entity::find_by_id(id)
            .find_also_related(applications::Entity)
            .one(&self.db)
            .await?;
        Ok(row.and_then(|(token, app)| {
            let app = app?;
            let name = Arc::from(app.name.as_str());
            Some(TokenRow::new(&token, &app, name))
        }))
    }
}

/// The request's `Origin` header, as sent.
pub fn origin(request: &HttpRequest) -> Option<&str> {
    request.headers().get(ORIGIN)?.to_str().ok()
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> TokenRow {
        TokenRow {
            application_id: Uuid::new_v4(),
            application_name: Arc::from("shop"),
            rate_limit: None,
            scopes: Arc::new(HashSet::from([Scope::EventsWrite])),
            origins: None,
            expires_at: DateTime::from_timestamp(2_000_000_000, 500_000).unwrap(),
            revoked: false,
            application_disabled: false,
        }
    }

    fn claims_of(row: &TokenRow) -> Claims {
        Claims {
            sub: row.application_id,
            jti: Uuid::new_v4(),
            iss: eye_core::token::ISSUER.into(),
            iat: 1_900_000_000,
            exp: row.expires_at.timestamp(),
            scopes: (*row.scopes).clone(),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_950_000_000, 0).unwrap()
    }

    #[test]
    fn a_use_recorded_on_an_entry_a_reload_replaced_is_still_written() {
        let old = Known::new(Some(row()), None);
        let reloaded = Known::new(Some(row()), Some(&old));
        // A request that read the cache before the reload records its use on the old entry.
        old.used_at.store(1_950_000_000, Ordering::Relaxed);
        assert_eq!(reloaded.used_at.swap(0, Ordering::Relaxed), 1_950_000_000);
        assert_eq!(Known::new(None, None).used_at.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn claims_as_issued_get_the_rows_scopes() {
        let row = row();
        let grant = row.grant(&claims_of(&row), now()).unwrap();
        assert_eq!(grant.scopes, row.scopes);
        assert_eq!(grant.application_id, row.application_id);
        assert_eq!(&*grant.application_name, "shop");
    }

    #[test]
    fn claims_that_grant_less_or_elsewhere_than_the_row_are_refused() {
        let row = row();
        let cases = [
            Claims {
                sub: Uuid::new_v4(),
                ..claims_of(&row)
            },
            Claims {
                scopes: HashSet::from([Scope::EventsRead]),
                ..claims_of(&row)
            },
            Claims {
                exp: row.expires_at.timestamp() - 1,
                ..claims_of(&row)
            },
        ];
        for claims in cases {
            assert!(
                matches!(row.grant(&claims, now()), Err(AuthError::InvalidToken)),
                "{claims:?}"
            );
        }
    }

    #[test]
    fn the_row_narrows_what_the_claims_say() {
        let row = row();
        let broader = Claims {
            scopes: HashSet::from([Scope::EventsWrite, Scope::EventsRead, Scope::EventsReadAll]),
            exp: row.expires_at.timestamp() + 86_400,
            ..claims_of(&row)
        };
        let grant = row.grant(&broader, now()).unwrap();
        assert!(grant.allows(Scope::EventsWrite));
        assert!(!grant.allows(Scope::EventsRead));
        assert!(!grant.allows(Scope::EventsReadAll));
        let later = row.expires_at + chrono::Duration::seconds(1);
        assert!(matches!(
            row.grant(&broader, later),
            Err(AuthError::TokenExpired)
        ));
    }

    #[test]
    fn revoked_tokens_and_disabled_applications_are_refused() {
        let revoked = TokenRow {
            revoked: true,
            ..row()
        };
        assert!(matches!(
            revoked.grant(&claims_of(&revoked), now()),
            Err(AuthError::TokenRevoked)
        ));
        let disabled = TokenRow {
            application_disabled: true,
            ..row()
        };
        assert!(matches!(
            disabled.grant(&claims_of(&disabled), now()),
            Err(AuthError::ApplicationDisabled)
        ));
    }

    #[test]
    fn a_publishable_key_passes_only_with_the_origin_of_one_of_its_pages() {
        let key = TokenRow {
            origins: Some(Arc::from(vec![
                WebOrigin::parse("https://shop.example").unwrap(),
                WebOrigin::parse("http://localhost:3000").unwrap(),
            ])),
            ..row()
        };
        let grant = key.grant(&claims_of(&key), now()).unwrap();
        assert!(grant.is_publishable());
        assert!(grant.check_origin(Some("https://shop.example")).is_ok());
        assert!(grant.check_origin(Some("HTTPS://SHOP.EXAMPLE:443")).is_ok());
        assert!(grant.check_origin(Some("http://localhost:3000")).is_ok());
        assert!(matches!(
            grant.check_origin(None),
            Err(AuthError::OriginRequired)
        ));
        for other in ["https://evil.example", "http://shop.example", "null", ""] {
            assert!(
                matches!(grant.check_origin(Some(other)), Err(AuthError::OriginNotAllowed(o)) if o == other),
                "{other}"
            );
        }
        let secret_row = row();
        let secret = secret_row.grant(&claims_of(&secret_row), now()).unwrap();
        assert!(!secret.is_publishable());
        assert!(secret.check_origin(None).is_ok());
        assert!(secret.check_origin(Some("https://evil.example")).is_ok());
    }

    #[test]
    fn a_publishable_row_never_grants_more_than_sending() {
        let app = applications::Model {
            id: Uuid::new_v4(),
            name: "shop".into(),
            disabled: false,
            created_at: now(),
            rate_limit_events: None,
            rate_limit_period_secs: None,
            rate_limit_burst: None,
        };
        let token = api_tokens::Model {
            id: Uuid::new_v4(),
            application_id: app.id,
            scopes: "events:read,events:read:all,events:write".into(),
            created_at: now(),
            expires_at: now() + chrono::Duration::days(1),
            revoked_at: None,
            last_used_at: None,
            origins: Some("https://shop.example".into()),
        };
        let row = TokenRow::new(&token, &app, Arc::from("shop"));
        assert_eq!(*row.scopes, HashSet::from([Scope::EventsWrite]));
    }
}
