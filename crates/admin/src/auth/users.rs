//! Admin users: argon2id hashes in `admin_users`.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::Utc;
use eye_entity::admin_users;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
};
use uuid::Uuid;

pub const MIN_PASSWORD_CHARS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("usernames have 1 to 64 letters, digits, `.`, `_`, `-` or `@`")]
    BadUsername,
    #[error("passwords have at least {MIN_PASSWORD_CHARS} characters")]
    WeakPassword,
    #[error("the user `{0}` already exists")]
    Exists(String),
    #[error("the password could not be hashed: {0}")]
    Hash(String),
    #[error(transparent)]
    Db(#[from] DbErr),
}

fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Creates an admin user, refusing a taken name.
pub async fn create_user(
    db: &impl ConnectionTrait,
    username: &str,
    password: &str,
) -> Result<admin_users::Model, UserError> {
    let username = username.trim();
    if !valid_username(username) {
        return Err(UserError::BadUsername);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(UserError::WeakPassword);
    }
    if find(db, username).await?.is_some() {
        return Err(UserError::Exists(username.to_owned()));
    }
    let password_hash = hash(password)?;
    let user = admin_users::ActiveModel {
        id: Set(Uuid::now_v7()),
        username: Set(username.to_owned()),
        password_hash: Set(password_hash),
        created_at: Set(Utc::now()),
    };
    Ok(user.insert(db).await?)
}

pub async fn find(
    db: &impl ConnectionTrait,
    username: &str,
) -> Result<Option<admin_users::Model>, DbErr> {
    admin_users::Entity::find()
        .filter(admin_users::Column::Username.eq(username))
        .one(db)
        .await
}

fn hash(password: &str) -> Result<String, UserError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserError::Hash(e.to_string()))
}

/// A hash of nothing anyone knows, checked when the username does not exist so that a wrong
/// name takes as long as a wrong password.
fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&Uuid::new_v4().to_string()).unwrap_or_default())
}

/// The user whose name and password these are. Hashing is slow on purpose: call it off the
/// async executor.
pub fn verify(user: Option<&admin_users::Model>, password: &str) -> bool {
    let stored = match user {
        Some(u) => u.password_hash.as_str(),
        None => decoy(),
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && user.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_plain_words() {
        assert!(valid_username("ana.lopez@ops"));
        assert!(!valid_username(""));
        assert!(!valid_username("a b"));
        assert!(!valid_username("<script>"));
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let user = admin_users::Model {
            id: Uuid::now_v7(),
            username: "ana".into(),
            password_hash: hash("correct horse").unwrap(),
            created_at: Utc::now(),
        };
        assert!(user.password_hash.starts_with("$argon2id$"));
        assert!(verify(Some(&user), "correct horse"));
        assert!(!verify(Some(&user), "correct hors"));
        assert!(!verify(None, "correct horse"));
    }
}
