//! The SQLite instance of the shared SQL code: one file, WAL, one writer.
//!
//! Writes go through a one-connection pool and start with `BEGIN IMMEDIATE`, so a write
//! transaction owns the database from its first statement: no read-then-upgrade deadlocks, and
//! waiting writers queue fairly on the pool instead of spinning in SQLite's busy handler.

/// The database these modules are compiled for.
pub(crate) type Db = sqlx::Sqlite;
/// `FOR UPDATE SKIP LOCKED` does not exist here (and is not needed: one writer at a time).
pub(crate) const POSTGRES: bool = false;

/// Read and write pools (the write pool has one connection).
#[derive(Clone, Copy)]
pub(crate) struct Pools<'a> {
    pub read: &'a sqlx::Pool<Db>,
    pub write: &'a sqlx::Pool<Db>,
}

/// Starts a write transaction that holds SQLite's write lock from the start.
pub(crate) async fn begin_write(
    p: Pools<'_>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    p.write.begin_with("BEGIN IMMEDIATE").await
}

/// The text elements of the JSON array parameter `$param` (a `"$N"` literal), as the rows of a
/// subquery, for `concat!`: how the shared SQL passes a list in one parameter.
macro_rules! json_text_elements {
    ($param:literal) => {
        concat!("SELECT value FROM json_each(", $param, ")")
    };
}

#[path = "dispatch.rs"]
pub(crate) mod dispatch;
#[path = "jobs.rs"]
pub(crate) mod jobs;
#[path = "reads.rs"]
pub(crate) mod reads;
#[path = "results.rs"]
pub(crate) mod results;
#[path = "tokens.rs"]
pub(crate) mod tokens;
#[path = "transition.rs"]
pub(crate) mod transition;
