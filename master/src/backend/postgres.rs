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
pub(crate) async fn begin_write(
    p: Pools<'_>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    p.write.begin().await
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
