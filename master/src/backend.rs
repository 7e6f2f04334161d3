//! The SQL, written once and compiled twice: [`sqlite`] and [`postgres`] each include the same
//! files (`jobs.rs`, `dispatch.rs`, `results.rs`, `reads.rs`, `tokens.rs`, `transition.rs`) with
//! their own `Db` type, `POSTGRES` flag and `begin_write`. The SQL sticks to what
//! both dialects accept (`$N` parameters, `RETURNING`, `ON CONFLICT`, partial indexes); the
//! differences are chosen with the `POSTGRES` constant: `FOR UPDATE SKIP LOCKED`, and on the
//! claim path statements only PostgreSQL has (rows passed as one JSON parameter, the lease writes
//! as one data-modifying `WITH`), since there every statement is a round trip to the server.
//! A difference inside one statement's text is a macro that each backend defines its own way
//! before including the files (`json_text_elements!`: a JSON array parameter's elements).

/// Columns of a [`rows::TaskRow`], for `concat!`.
macro_rules! task_columns {
    () => {
        "id, job_id, recipe, snapshot_id, submitter, priority, state, verdict, attempt, lease_id, \
         lease_slave, lease_expires_ms, cancel_requested, created_ms, updated_ms"
    };
}

/// Runs `$body` (an expression of type `Result<T, MasterError>` using `$tx`) in a write
/// transaction: commit on `Ok`, explicit rollback on `Err`. The rollback is awaited so row locks
/// are gone before the error reaches the caller (a dropped transaction rolls back only later).
macro_rules! write_tx {
    ($pools:expr, |$tx:ident| $body:block) => {{
        let mut $tx = super::begin_write($pools).await?;
        let result: Result<_, MasterError> = async { $body }.await;
        match result {
            Ok(value) => {
                $tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                let _ = $tx.rollback().await;
                Err(e)
            }
        }
    }};
}

/// Fair share between lanes for claim batches (no SQL: shared by both backends).
pub(crate) mod lanes;
pub(crate) mod postgres;
/// Row types, shared by both backends (`sqlx::FromRow` is generic over the database).
pub(crate) mod rows;
pub(crate) mod sqlite;
pub(crate) mod sqlite_global;
