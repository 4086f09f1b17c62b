//! Keyset pagination over (time, id): each page starts where the previous one ended, so a
//! page costs the same at row 50 and at row 5 million, given an index that starts with time.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, Order as SqlOrder, QueryFilter, QueryOrder, QuerySelect,
    Select,
};

use crate::filter::Cursor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// Which page: after a cursor (forward), before one (back), or the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<Cursor>,
    pub before: Option<Cursor>,
    pub limit: u64,
    pub order: Order,
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub rows: Vec<T>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
    /// Where the previous page ends, if there is one.
    pub prev: Option<Cursor>,
}

impl<T> Page<T> {
    pub fn empty() -> Self {
        Self {
            rows: Vec::new(),
            next: None,
            prev: None,
        }
    }
}

/// One page of `select` ordered by (`time`, `id`).
pub async fn page<E: EntityTrait>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    (time, id): (E::Column, E::Column),
    request: &PageRequest,
    key: impl Fn(&E::Model) -> Cursor,
) -> Result<Page<E::Model>, DbErr> {
    let backward = request.after.is_none() && request.before.is_some();
    let descending = (request.order == Order::NewestFirst) != backward;
    let mut select = select;
    if let Some(cursor) = request.after.or(request.before) {
        let row = Expr::tuple([Expr::col(time), Expr::col(id)]);
        let at = Expr::tuple([Expr::val(cursor.time), Expr::val(cursor.id)]);
        select = select.filter(if descending { row.lt(at) } else { row.gt(at) });
    }
    let direction = if descending {
        SqlOrder::Desc
    } else {
        SqlOrder::Asc
    };
    let mut rows = select
        .order_by(time, direction.clone())
        .order_by(id, direction)
        .limit(request.limit + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > request.limit;
    rows.truncate(usize::try_from(request.limit).unwrap_or(usize::MAX));
    if backward {
        rows.reverse();
    }
    let first = rows.first().map(&key);
    let last = rows.last().map(&key);
    let (has_next, has_prev) = if backward {
        (true, more)
    } else {
        (more, request.after.is_some())
    };
    Ok(Page {
        next: last.filter(|_| has_next),
        prev: first.filter(|_| has_prev),
        rows,
    })
}
