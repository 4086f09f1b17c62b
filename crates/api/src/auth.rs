//! Bearer-token checks. Signatures are verified locally; whether a token is still active
//! comes from a cache of `api_tokens` that every instance reloads every `token_refresh_ms`,
//! so a revocation or a disabled application takes effect everywhere within that time.
//! The same reload writes when each token was last used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use chrono::Utc;
use eye_core::supervise::{Checkpoint, OnPanic};
use eye_core::token::{Claims, Scope, TokenError, TokenKeys};
use eye_entity::{api_tokens, applications};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::problem::ApiError;

/// The name the refresh task is supervised (and its panics logged) under.
pub const REFRESH_TASK: &str = "token refresh";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Active { application_id: Uuid },
    Revoked,
    ApplicationDisabled,
    Unknown,
}

/// A token as this instance knows it.
struct Known {
    state: TokenState,
    /// Unix seconds of the last use not yet written to the database; 0 when none.
    used_at: AtomicI64,
}

impl Known {
    fn new(state: TokenState) -> Arc<Self> {
        Arc::new(Self {
            state,
            used_at: AtomicI64::new(0),
        })
    }
}

pub struct TokenGate {
    keys: TokenKeys,
    db: DatabaseConnection,
    known: RwLock<Arc<HashMap<Uuid, Arc<Known>>>>,
}

impl TokenGate {
    pub fn new(keys: TokenKeys, db: DatabaseConnection) -> Self {
        Self {
            keys,
            db,
            known: RwLock::new(Arc::new(HashMap::new())),
        }
    }

    /// The claims of a request's valid, active token that carries `scope`.
    pub async fn authorize(&self, request: &HttpRequest, scope: Scope) -> Result<Claims, ApiError> {
        let token = bearer(request).ok_or(ApiError::MissingToken)?;
        let claims = self.keys.verify(token).map_err(|e| match e {
            TokenError::Expired => ApiError::TokenExpired,
            TokenError::Invalid => ApiError::InvalidToken,
        })?;
        let cached = self.snapshot().get(&claims.jti).cloned();
        let known = match cached {
            Some(known) => known,
            // A token created after the last refresh: look it up once and remember it.
            None => {
                let state = self
                    .lookup(claims.jti)
                    .await
                    .map_err(ApiError::AuthUnavailable)?;
                self.remember(claims.jti, state)
            }
        };
        match known.state {
            TokenState::Active { application_id } if application_id == claims.sub => {}
            TokenState::Active { .. } => return Err(ApiError::InvalidToken),
            TokenState::Revoked => return Err(ApiError::TokenRevoked),
            TokenState::ApplicationDisabled => return Err(ApiError::ApplicationDisabled),
            TokenState::Unknown => return Err(ApiError::UnknownToken),
        }
        if !claims.scopes.contains(&scope) {
            return Err(ApiError::MissingScope(scope.as_str()));
        }
        known
            .used_at
            .store(Utc::now().timestamp(), Ordering::Relaxed);
        Ok(claims)
    }

    /// Writes when tokens were last used (best effort), then reloads every unexpired token and
    /// its application's state.
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
        let known = rows
            .into_iter()
            .map(|(token, app)| (token.id, Known::new(state_of(&token, app.as_ref()))))
            .collect();
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(known);
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

    fn snapshot(&self) -> Arc<HashMap<Uuid, Arc<Known>>> {
        self.known.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(&self, id: Uuid, state: TokenState) -> Arc<Known> {
        let entry = Known::new(state);
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        Arc::make_mut(&mut known).insert(id, entry.clone());
        entry
    }

    async fn lookup(&self, id: Uuid) -> Result<TokenState, DbErr> {
        let row = api_tokens::Entity::find_by_id(id)
            .find_also_related(applications::Entity)
            .one(&self.db)
            .await?;
        Ok(row.map_or(TokenState::Unknown, |(token, app)| {
            state_of(&token, app.as_ref())
        }))
    }
}

fn state_of(token: &api_tokens::Model, app: Option<&applications::Model>) -> TokenState {
    match app {
        _ if token.revoked_at.is_some() => TokenState::Revoked,
        Some(app) if app.disabled => TokenState::ApplicationDisabled,
        Some(_) => TokenState::Active {
            application_id: token.application_id,
        },
        None => TokenState::Unknown,
    }
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
