//! Dead letters for operators: what `eye dead …` and the admin's Dead letters page do. A dead
//! letter's body is a message as it was on the queue, so replaying it is publishing it again;
//! the events' ids make storing them a second time harmless.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::dead_letters::{self, Column as C};

/// A dead letter without its body (which may be large), for lists.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct Summary {
    pub id: Uuid,
    pub reason: String,
    pub first_dead_at: DateTime<Utc>,
    pub last_dead_at: DateTime<Utc>,
    pub count: i64,
    /// The body's length in bytes.
    pub size: i64,
}

/// Where a list continues: the (last time, id) of the last row shown, excluded.
pub type Position = (DateTime<Utc>, Uuid);

/// At most `limit` dead letters, most recently dead first, after `after` when given; and
/// where the next page starts, if there is one.
pub async fn list(
    db: &impl ConnectionTrait,
    limit: u64,
    after: Option<Position>,
) -> Result<(Vec<Summary>, Option<Position>), DbErr> {
    let mut select = dead_letters::Entity::find()
        .select_only()
        .columns([C::Id, C::Reason, C::FirstDeadAt, C::LastDeadAt, C::Count])
        // BIGINT on both backends (PostgreSQL's `length` is an int4).
        .column_as(Expr::cust("CAST(length(body) AS BIGINT)"), "size");
    if let Some((time, id)) = after {
        let row = Expr::tuple([Expr::col(C::LastDeadAt), Expr::col(C::Id)]);
        let at = Expr::tuple([Expr::val(time), Expr::val(id)]);
        select = select.filter(row.lt(at));
    }
    let mut rows = select
        .order_by_desc(C::LastDeadAt)
        .order_by_desc(C::Id)
        .limit(limit.saturating_add(1))
        .into_model::<Summary>()
        .all(db)
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more
        .then(|| rows.last().map(|r| (r.last_dead_at, r.id)))
        .flatten();
    Ok((rows, next))
}

/// How many dead letters there are.
pub async fn count(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    dead_letters::Entity::find().count(db).await
}

/// One dead letter with its body and headers.
pub async fn find(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<dead_letters::Model>, DbErr> {
    dead_letters::Entity::find_by_id(id).one(db).await
}

/// Which of `ids` name no dead letter (in the order given).
pub async fn unknown(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<Vec<Uuid>, DbErr> {
    let mut unknown = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let known: Vec<Uuid> = dead_letters::Entity::find()
            .select_only()
            .column(C::Id)
            .filter(C::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        unknown.extend(chunk.iter().filter(|id| !known.contains(id)));
    }
    Ok(unknown)
}

/// Deletes the dead letters named; returns how many there were.
pub async fn discard(db: &impl ConnectionTrait, ids: &[Uuid]) -> Result<u64, DbErr> {
    let mut discarded = 0;
    for chunk in ids.chunks(CHUNK) {
        discarded += dead_letters::Entity::delete_many()
            .filter(C::Id.is_in(chunk.iter().copied()))
            .exec(db)
            .await?
            .rows_affected;
    }
    Ok(discarded)
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<Uuid>),
    /// Every dead letter there was when the replay started.
    All,
    /// The oldest so many of those (one click in the admin stays a short request).
    Oldest(u64),
}

/// What a replay did.
#[derive(Debug)]
pub struct Replayed<E> {
    /// Published and removed from the table.
    pub replayed: Vec<Uuid>,
    /// Published, but dead-lettered again while being replayed, so kept (counted up).
    pub dead_again: Vec<Uuid>,
    /// Named but not found (never there, or discarded or replayed meanwhile).
    pub unknown: Vec<Uuid>,
    /// The publish that failed, after which the replay stopped; that row and the rest stay.
    pub failed: Option<(Uuid, E)>,
}

/// Publishes each selected dead letter's body with `publish` (which must return only once the
/// queue has it), in the order named or, for all, oldest first, and deletes its row only after
/// that. A row is kept when the message came back dead meanwhile (its count moved), so a message
/// that still cannot be read is never lost between the publish and the delete. Stops at the
/// first failed publish.
pub async fn replay<E>(
    db: &impl ConnectionTrait,
    selection: &Selection,
    mut publish: impl AsyncFnMut(&[u8]) -> Result<(), E>,
) -> Result<Replayed<E>, DbErr> {
    let mut done = Replayed {
        replayed: Vec::new(),
        dead_again: Vec::new(),
        unknown: Vec::new(),
        failed: None,
    };
    let started = Utc::now();
    // Rows dead again during the replay are new (later ids and times) and are not taken up;
    // should clocks disagree, this bound still ends the replay.
    let mut left = match selection {
        Selection::Ids(_) => u64::MAX,
        Selection::All => count(db).await?,
        Selection::Oldest(n) => *n,
    };
    let mut after: Option<Uuid> = None;
    let named: &[Uuid] = match selection {
        Selection::Ids(ids) => ids,
        Selection::All | Selection::Oldest(_) => &[],
    };
    let mut ids = named.iter();
    loop {
        // One row at a time: bodies can be large, and a replay may be long.
        let row = match selection {
            Selection::Ids(_) => {
                let Some(id) = ids.next() else { break };
                match find(db, *id).await? {
                    Some(row) => row,
                    None => {
                        done.unknown.push(*id);
                        continue;
                    }
                }
            }
            Selection::All | Selection::Oldest(_) => {
                if left == 0 {
                    break;
                }
                left -= 1;
                let mut select = dead_letters::Entity::find().filter(C::FirstDeadAt.lte(started));
                if let Some(after) = after {
                    select = select.filter(C::Id.gt(after));
                }
                let Some(row) = select.order_by_asc(C::Id).one(db).await? else {
                    break;
                };
                after = Some(row.id);
                row
            }
        };
        if let Err(e) = publish(&row.body).await {
            done.failed = Some((row.id, e));
            break;
        }
        let deleted = dead_letters::Entity::delete_many()
            .filter(C::Id.eq(row.id))
            .filter(C::Count.eq(row.count))
            .exec(db)
            .await?
            .rows_affected;
        if deleted == 1 {
            done.replayed.push(row.id);
        } else if find(db, row.id).await?.is_some() {
            done.dead_again.push(row.id);
        } else {
            // Discarded by someone else meanwhile; what was published stands.
            done.replayed.push(row.id);
        }
    }
    Ok(done)
}

/// Ids per `IN (…)`: well under every backend's limit on bound values.
const CHUNK: usize = 500;
