//! `eye dead …`: the dead letters, as the admin's Dead letters page shows them.

use anyhow::Context;
use eye_core::Settings;
use eye_entity::dead::{self, Selection};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::stack::Queue;

/// Prints the newest `limit` dead letters, one a line; says on stderr how many there are.
pub async fn list(db: &DatabaseConnection, limit: u64) -> anyhow::Result<()> {
    let (rows, _) = dead::list(db, limit, None).await?;
    let total = dead::count(db).await?;
    println!(
        "{:<36}  {:<23}  {:>5}  {:>9}  REASON",
        "ID", "LAST DEAD", "COUNT", "BYTES"
    );
    for row in &rows {
        println!(
            "{:<36}  {:<23}  {:>5}  {:>9}  {}",
            row.id,
            row.last_dead_at.format("%Y-%m-%d %H:%M:%S UTC"),
            row.count,
            row.size,
            row.reason
        );
    }
    if total > rows.len() as u64 {
        eprintln!(
            "showing the newest {} of {total} dead letters (--limit shows more)",
            rows.len()
        );
    } else {
        eprintln!("{total} dead letters");
    }
    Ok(())
}

/// Publishes the dead letters again through RabbitMQ and removes each once confirmed.
pub async fn replay(
    settings: &Settings,
    db: &DatabaseConnection,
    selection: Selection,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.amqp_url.is_some(),
        "replay publishes to RabbitMQ, and amqp_url (EYE_AMQP_URL) is not set. With `eye dev` \
         the queue lives inside that process: replay from its admin panel (Dead letters page)."
    );
    if let Selection::Ids(ids) = &selection {
        refuse_unknown(db, ids).await?;
    }
    let publisher = Queue::from_settings(settings)?.publisher(settings)?;
    let done = dead::replay(db, &selection, async |body: &[u8]| {
        publisher.publish(body).await
    })
    .await
    .context("failed to read or remove dead letters")?;
    for id in &done.replayed {
        println!("{id}");
    }
    eprintln!(
        "replayed {} dead letters: they are back on the queue",
        done.replayed.len()
    );
    if !done.dead_again.is_empty() {
        eprintln!(
            "{} came back dead at once and are kept: {}",
            done.dead_again.len(),
            join(&done.dead_again)
        );
    }
    if !done.unknown.is_empty() {
        eprintln!(
            "{} were gone before their turn (replayed or discarded meanwhile): {}",
            done.unknown.len(),
            join(&done.unknown)
        );
    }
    if let Some((id, e)) = done.failed {
        anyhow::bail!("could not publish dead letter {id}: {e}; it and the rest are kept");
    }
    Ok(())
}

/// Deletes the dead letters named, all or none.
pub async fn discard(db: &DatabaseConnection, ids: &[Uuid]) -> anyhow::Result<()> {
    refuse_unknown(db, ids).await?;
    let discarded = dead::discard(db, ids).await?;
    eprintln!("discarded {discarded} dead letters");
    Ok(())
}

/// Fails, naming them, when some ids are not dead letters, before anything is done.
async fn refuse_unknown(db: &DatabaseConnection, ids: &[Uuid]) -> anyhow::Result<()> {
    let unknown = dead::unknown(db, ids).await?;
    match unknown.as_slice() {
        [] => Ok(()),
        [one] => {
            anyhow::bail!("no dead letter has the id {one} (see `eye dead list`); nothing was done")
        }
        many => anyhow::bail!(
            "no dead letters have the ids {} (see `eye dead list`); nothing was done",
            join(many)
        ),
    }
}

fn join(ids: &[Uuid]) -> String {
    ids.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
