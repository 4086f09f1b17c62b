//! Queries as plain functions over a connection. Every value is bound, never spliced.

pub mod dashboard;
pub mod events;
pub mod keyset;
pub mod rejected;

use std::collections::HashMap;

use eye_entity::applications;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryOrder};
use uuid::Uuid;

/// Every application, by name. The table is small: one row per sending application.
pub async fn applications(db: &impl ConnectionTrait) -> Result<Vec<applications::Model>, DbErr> {
    applications::Entity::find()
        .order_by_asc(applications::Column::Name)
        .all(db)
        .await
}

/// Application names by id, for showing rows.
pub async fn application_names(db: &impl ConnectionTrait) -> Result<HashMap<Uuid, String>, DbErr> {
    Ok(applications(db)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

/// The id of the application with this name; `Uuid::nil()` (which matches nothing) if none has it.
pub async fn application_id(db: &impl ConnectionTrait, name: &str) -> Result<Uuid, DbErr> {
    Ok(eye_entity::tokens::find_application(db, name)
        .await?
        .map_or(Uuid::nil(), |a| a.id))
}

/// `%text%` for LIKE with `!` as the escape character, lower-cased for a case-insensitive match.
pub fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_in_user_text_match_themselves() {
        assert_eq!(super::like_pattern("50%_Off!"), "%50!%!_off!!%");
    }
}
