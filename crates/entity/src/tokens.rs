//! Applications and their api tokens: what `eye token …` and the admin panel do.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use eye_core::origin::WebOrigin;
use eye_core::token::{Claims, Scope, SignError, TokenKeys};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    Set,
};
use uuid::Uuid;

use crate::{api_tokens, applications};

#[derive(Debug, thiserror::Error)]
pub enum TokenOpError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error("could not sign the token: {0}")]
    Sign(#[from] SignError),
    #[error("no application is named `{0}`")]
    NoSuchApplication(String),
    #[error("application names have 1 to 128 characters")]
    BadName,
    #[error(
        "a publishable key needs at least one origin it is used from, e.g. https://shop.example"
    )]
    NoOrigins,
    #[error("a publishable key lists at most {MAX_ORIGINS} origins")]
    TooManyOrigins,
}

/// The most origins one publishable key lists: each request compares against them all.
pub const MAX_ORIGINS: usize = 32;

/// A freshly issued token: the JWT is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub id: Uuid,
    pub application: applications::Model,
    pub scopes: HashSet<Scope>,
    pub expires_at: DateTime<Utc>,
    /// A publishable key's origins; empty for a secret token.
    pub origins: Vec<WebOrigin>,
    pub jwt: String,
}

/// The application with this name, created if it does not exist yet.
pub async fn ensure_application(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<applications::Model, TokenOpError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(TokenOpError::BadName);
    }
    if let Some(app) = find_application(db, name).await? {
        return Ok(app);
    }
    let app = applications::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.to_owned()),
        disabled: Set(false),
        created_at: Set(Utc::now()),
        ..Default::default()
    };
    match app.insert(db).await {
        Ok(app) => Ok(app),
        // Created meanwhile by someone else: use theirs.
        Err(e) => find_application(db, name).await?.ok_or(TokenOpError::Db(e)),
    }
}

pub async fn find_application(
    db: &impl ConnectionTrait,
    name: &str,
) -> Result<Option<applications::Model>, DbErr> {
    applications::Entity::find()
        .filter(applications::Column::Name.eq(name))
        .one(db)
        .await
}

/// Every application, by name. The table is small: one row per sending application.
pub async fn applications(db: &impl ConnectionTrait) -> Result<Vec<applications::Model>, DbErr> {
    applications::Entity::find()
        .order_by_asc(applications::Column::Name)
        .all(db)
        .await
}

/// Creates the token row first, then signs it, so a printed token is always known.
pub async fn issue(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    application: &str,
    scopes: HashSet<Scope>,
    lifetime: Duration,
) -> Result<IssuedToken, TokenOpError> {
    let mut scopes = scopes;
    // Reading every application is a widening of reading, never a scope of its own.
    if scopes.contains(&Scope::EventsReadAll) {
        scopes.insert(Scope::EventsRead);
    }
    insert(db, keys, application, scopes, lifetime, Vec::new()).await
}

/// A publishable key: `events:write` only, accepted only from pages of `origins`, so it may be
/// embedded in a web page.
pub async fn issue_publishable(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    application: &str,
    origins: Vec<WebOrigin>,
    lifetime: Duration,
) -> Result<IssuedToken, TokenOpError> {
    let mut origins = origins;
    origins.sort_unstable();
    origins.dedup();
    if origins.is_empty() {
        return Err(TokenOpError::NoOrigins);
    }
    if origins.len() > MAX_ORIGINS {
        return Err(TokenOpError::TooManyOrigins);
    }
    let scopes = HashSet::from([Scope::EventsWrite]);
    insert(db, keys, application, scopes, lifetime, origins).await
}

async fn insert(
    db: &impl ConnectionTrait,
    keys: &TokenKeys,
    application: &str,
    scopes: HashSet<Scope>,
    lifetime: Duration,
    origins: Vec<WebOrigin>,
) -> Result<IssuedToken, TokenOpError> {
    let application = ensure_application(db, application).await?;
    let now = Utc::now();
    let expires_at = now + lifetime;
    let mut names: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
    names.sort_unstable();
    let row = api_tokens::ActiveModel {
        id: Set(Uuid::new_v4()),
        application_id: Set(application.id),
        scopes: Set(names.join(",")),
        created_at: Set(now),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
        origins: Set((!origins.is_empty()).then(|| {
            let names: Vec<_> = origins.iter().map(WebOrigin::as_str).collect();
            names.join(" ")
        })),
    }
    .insert(db)
    .await?;
    let jwt = keys.sign(&Claims::new(
        application.id,
        row.id,
        scopes.clone(),
        now,
        expires_at,
    ))?;
    Ok(IssuedToken {
        id: row.id,
        application,
        scopes,
        expires_at,
        origins,
        jwt,
    })
}

/// The scopes a token row grants. A name this version does not know grants nothing.
pub fn scopes(token: &api_tokens::Model) -> HashSet<Scope> {
    token
        .scopes
        .split(',')
        .filter_map(|name| name.parse().ok())
        .collect()
}

/// A publishable key's origins as stored; `None` for a secret token. An entry this version
/// cannot read is left out, so it matches no request.
pub fn origins(token: &api_tokens::Model) -> Option<Vec<WebOrigin>> {
    let origins = token.origins.as_deref()?;
    Some(
        origins
            .split_whitespace()
            .filter_map(|origin| WebOrigin::parse(origin).ok())
            .collect(),
    )
}

/// Every token with its application, newest first.
pub async fn list(
    db: &impl ConnectionTrait,
) -> Result<Vec<(api_tokens::Model, applications::Model)>, DbErr> {
    let rows = api_tokens::Entity::find()
        .find_also_related(applications::Entity)
        .order_by_desc(api_tokens::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(token, app)| Some((token, app?)))
        .collect())
}

/// What a listed token can do now: `revoked`, `app disabled`, `expired` or `active`.
pub fn state(
    token: &api_tokens::Model,
    app: &applications::Model,
    now: DateTime<Utc>,
) -> &'static str {
    if token.revoked_at.is_some() {
        "revoked"
    } else if app.disabled {
        "app disabled"
    } else if token.expires_at <= now {
        "expired"
    } else {
        "active"
    }
}

/// Marks a token revoked; false when no such token exists. Revoking twice keeps the first time.
pub async fn revoke(db: &impl ConnectionTrait, id: Uuid) -> Result<bool, DbErr> {
    let Some(token) = api_tokens::Entity::find_by_id(id).one(db).await? else {
        return Ok(false);
    };
    if token.revoked_at.is_none() {
        let mut token: api_tokens::ActiveModel = token.into();
        token.revoked_at = Set(Some(Utc::now()));
        token.update(db).await?;
    }
    Ok(true)
}

/// Disables or re-enables an application; its tokens stop or start working with it.
pub async fn set_application_disabled(
    db: &impl ConnectionTrait,
    name: &str,
    disabled: bool,
) -> Result<(), TokenOpError> {
    let app = find_application(db, name)
        .await?
        .ok_or_else(|| TokenOpError::NoSuchApplication(name.to_owned()))?;
    let mut app: applications::ActiveModel = app.into();
    app.disabled = Set(disabled);
    app.update(db).await?;
    Ok(())
}
