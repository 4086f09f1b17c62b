//! `eye dev`: everything in one process on a SQLite file and the in-process queue.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use eye_core::Settings;
use eye_core::settings::LogFormat;
use eye_core::token::{Scope, TokenKeys};
use eye_entity::{api_tokens, tokens};
use sea_orm::{DatabaseConnection, EntityTrait, PaginatorTrait};
use secrecy::SecretString;

use crate::stack::{self, Queue};

pub const APPLICATION: &str = "dev";
/// The admin user `eye dev` creates on first start, with a random password kept beside the data.
pub const ADMIN_USER: &str = "admin";
const SECRET_FILE: &str = "jwt-secret";
const TOKEN_FILE: &str = "dev-token";
const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// A prepared data directory: migrated database, settings pointing at it, a ready token.
pub struct Dev {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub token: String,
    pub database_file: PathBuf,
    /// The first-start admin user's password, while its file is there.
    pub admin_password: Option<String>,
}

/// Creates or reuses the data directory: the database, the signing key and the token all
/// survive restarts.
pub async fn prepare(mut settings: Settings, data_dir: &Path) -> anyhow::Result<Dev> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create the data directory {}", data_dir.display()))?;
    let database_file = data_dir.join("eye.db");
    settings.database_url = Some(SecretString::from(format!(
        "sqlite://{}?mode=rwc",
        database_file.display()
    )));
    // One SQLite file: a replica URL left in the environment would read another database.
    settings.admin_database_url = None;
    if settings.jwt_secret.is_none() {
        settings.jwt_secret = Some(SecretString::from(read_or_create_secret(
            &data_dir.join(SECRET_FILE),
        )?));
    }
    let db = stack::connect(settings.database_url()?).await?;
    stack::migrate(&db).await?;
    let keys = TokenKeys::new(settings.jwt_secret()?);
    let token_file = data_dir.join(TOKEN_FILE);
    let token = match reusable_token(&db, &keys, &token_file).await {
        Some(token) => token,
        None => {
            let scopes = HashSet::from([Scope::EventsWrite, Scope::EventsRead]);
            let issued =
                tokens::issue(&db, &keys, APPLICATION, scopes, chrono::Duration::days(365)).await?;
            write_private(&token_file, &issued.jwt)?;
            issued.jwt
        }
    };
    let admin_password = ensure_admin(&db, &data_dir.join(ADMIN_PASSWORD_FILE)).await?;
    Ok(Dev {
        settings,
        db,
        token,
        database_file,
        admin_password,
    })
}

/// On a fresh data directory, an `admin` user with a random password saved to a file, so the
/// panel opens with a login printed on screen. Later starts print it again from the file.
async fn ensure_admin(db: &DatabaseConnection, file: &Path) -> anyhow::Result<Option<String>> {
    let users = eye_entity::admin_users::Entity::find().count(db).await?;
    if users > 0 {
        return Ok(std::fs::read_to_string(file)
            .ok()
            .map(|p| p.trim().to_owned()));
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    eye_admin::create_user(db, ADMIN_USER, &password).await?;
    write_private(file, &password)?;
    Ok(Some(password))
}

/// Runs until Ctrl-C, then drains: every event answered 202 is stored before this returns.
pub async fn run(settings: Settings, data_dir: &Path) -> anyhow::Result<()> {
    let settings = Settings {
        log_format: LogFormat::Pretty,
        ..settings
    };
    settings.validate()?;
    eye_core::telemetry::init(settings.log_format);
    let dev = prepare(settings, data_dir).await?;
    let queue = Queue::memory(&dev.settings);
    // One registry: the api's `/metrics` shows the worker's and the admin's too.
    let metrics = crate::metrics::Registries::shared(&dev.settings);
    let running = stack::start(&dev.settings, &dev.db, &queue, 1, &metrics).await?;
    println!("{}", banner(&dev, running.api_port, running.admin_port));
    crate::stack::shutdown_signal().await;
    println!("Stopping: storing what is still queued…");
    let shutdown = running.shutdown().await;
    if shutdown.unstored > 0 {
        anyhow::bail!(
            "stopped, but {} queued messages could not be stored in {} and are lost \
             ({} were stored while stopping); see the errors above",
            shutdown.unstored,
            dev.database_file.display(),
            shutdown.drained
        );
    }
    println!(
        "Stopped. Every accepted event is in {} ({} queued messages stored while stopping).",
        dev.database_file.display(),
        shutdown.drained
    );
    Ok(())
}

fn banner(dev: &Dev, port: u16, admin_port: u16) -> String {
    let api = format!("http://127.0.0.1:{port}");
    let login = match &dev.admin_password {
        Some(password) => format!("user {ADMIN_USER}  password {password}"),
        None => "log in with a user of yours (cargo eye user create --username NAME)".into(),
    };
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S%.6f");
    let session = uuid::Uuid::new_v4();
    format!(
        "\nThe Eye is running (data in {db}).\n\n\
         api      {api}/v1/events    health {api}/healthz    metrics {api}/metrics\n\
         admin    http://127.0.0.1:{admin_port}/    {login}\n\
         token    {token}\n\n\
         Send an event:\n\
         curl -sS -X POST {api}/v1/events -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
         -d '{{\"session_id\": \"{session}\", \"category\": \"page interaction\", \"name\": \"pageview\", \
         \"data\": {{\"host\": \"www.example.com\", \"path\": \"/\"}}, \"timestamp\": \"{now}\"}}'\n\n\
         See it stored: open the admin's Events page, or\n\
         sqlite3 {db} 'SELECT category, name, timestamp, data FROM events ORDER BY stored_at DESC LIMIT 5'\n\n\
         Ctrl-C stops after storing everything accepted.\n",
        db = dev.database_file.display(),
        token = dev.token,
    )
}

/// The token from an earlier run, if it is still valid and not revoked.
async fn reusable_token(db: &DatabaseConnection, keys: &TokenKeys, file: &Path) -> Option<String> {
    let token = std::fs::read_to_string(file).ok()?.trim().to_owned();
    let claims = keys.verify(&token).ok()?;
    let row = api_tokens::Entity::find_by_id(claims.jti)
        .one(db)
        .await
        .ok()??;
    (row.revoked_at.is_none() && row.expires_at > Utc::now()).then_some(token)
}

fn read_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        return Ok(secret.trim().to_owned());
    }
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(path, &secret)?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents)
        .with_context(|| format!("failed to write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
