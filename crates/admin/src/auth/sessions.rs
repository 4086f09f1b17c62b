//! Login sessions. The cookie holds 256 random bits; the table holds only their SHA-256.

use chrono::{Duration, Utc};
use eye_entity::{admin_sessions, admin_users};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Set,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// 256 bits from the operating system's generator, as hex.
pub fn random_secret() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares without stopping at the first difference.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A new session for `user`; returns the cookie value.
pub async fn create(
    db: &impl ConnectionTrait,
    user: &admin_users::Model,
    lifetime: Duration,
) -> Result<String, DbErr> {
    let secret = random_secret();
    let now = Utc::now();
    admin_sessions::ActiveModel {
        id: Set(digest(&secret)),
        user_id: Set(user.id),
        csrf_token: Set(random_secret()),
        created_at: Set(now),
        expires_at: Set(now + lifetime),
    }
    .insert(db)
    .await?;
    // Expired sessions of anyone go at each login, so the table stays small.
    admin_sessions::Entity::delete_many()
        .filter(admin_sessions::Column::ExpiresAt.lt(now))
        .exec(db)
        .await?;
    Ok(secret)
}

/// The unexpired session this cookie value names, with its user.
pub async fn find(
    db: &impl ConnectionTrait,
    secret: &str,
) -> Result<Option<(admin_sessions::Model, admin_users::Model)>, DbErr> {
    let Some(session) = admin_sessions::Entity::find_by_id(digest(secret))
        .filter(admin_sessions::Column::ExpiresAt.gt(Utc::now()))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let user = admin_users::Entity::find_by_id(session.user_id)
        .one(db)
        .await?;
    Ok(user.map(|user| (session, user)))
}

pub async fn delete(db: &impl ConnectionTrait, id: &str) -> Result<(), DbErr> {
    admin_sessions::Entity::delete_by_id(id.to_owned())
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_compared_whole() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret(&a, &a[..63]));
        assert_eq!(digest("abc").len(), 64);
    }
}
