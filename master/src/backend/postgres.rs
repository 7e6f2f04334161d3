//! The PostgreSQL instance of the shared SQL code: several masters may share one database.
//!
//! Claims lock the chosen task row with `FOR UPDATE SKIP LOCKED`, so two masters (or two
//! claimers in one master) never take the same task and never wait on each other's candidate.

/// The database these modules are compiled for.
pub(crate) type Db = sqlx::Postgres;
/// Use `FOR UPDATE SKIP LOCKED` when picking rows to change.
pub(crate) const POSTGRES: bool = true;

/// Read and write pools (the same pool: PostgreSQL has row locks).
#[derive(Clone, Copy)]
pub(crate) struct Pools<'a> {
    pub read: &'a sqlx::Pool<Db>,
    pub write: &'a sqlx::Pool<Db>,
}

/// Starts a read-committed write transaction; row locks do the rest.
///
/// A pooled connection the server ended since its last use (a server restart or failover, an
/// administrator's `pg_terminate_backend`) fails at its `BEGIN`, before anything of the
/// transaction was sent: the pool drops it and the next connection is tried, at most once per
/// connection the pool holds, so such a loss never reaches the caller.
pub(crate) async fn begin_write(
    p: Pools<'_>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    let mut lost = 0;
    loop {
        match p.write.begin().await {
            Err(e) if connection_lost(&e) && lost < p.write.options().get_max_connections() => {
                lost += 1;
                tracing::debug!(error = %e, "a pooled connection was lost; trying another");
            }
            other => return other,
        }
    }
}

/// Whether `e` says the connection itself is gone (so nothing sent on it took effect, unless
/// it was a `COMMIT`): the socket failed, or the server ended the session (SQLSTATE class 08,
/// connection exception, or 57P01-57P03, shut down by an administrator, a crash or a start).
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

/// The text elements of the JSON array parameter `$param` (a `"$N"` literal), as the rows of a
/// subquery, for `concat!`: how the shared SQL passes a list in one parameter.
macro_rules! json_text_elements {
    ($param:literal) => {
        concat!("SELECT jsonb_array_elements_text(", $param, "::jsonb)")
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
