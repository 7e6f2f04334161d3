//! Bearer tokens, stored as SHA-256 hashes.

use super::Pools;
use crate::error::MasterError;

/// Stores a new token hash; fails if an active token already has `name`.
pub(crate) async fn add(
    p: Pools<'_>,
    name: &str,
    role: &str,
    sha256: &str,
    now: i64,
) -> Result<(), MasterError> {
    write_tx!(p, |tx| {
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT id FROM tokens WHERE name = $1 AND revoked_ms IS NULL")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(MasterError::field(
                "name",
                format!("an active token is already called `{name}`; revoke it first"),
            ));
        }
        sqlx::query(
            "INSERT INTO tokens (name, role, token_sha256, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(role)
        .bind(sha256)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Ok(())
    })
}

/// Every token: `(name, role, created_ms, revoked_ms)`.
pub(crate) async fn list(
    p: Pools<'_>,
) -> Result<Vec<(String, String, i64, Option<i64>)>, MasterError> {
    Ok(sqlx::query_as(
        "SELECT name, role, created_ms, revoked_ms FROM tokens ORDER BY name, created_ms",
    )
    .fetch_all(p.read)
    .await?)
}

/// Revokes the active token called `name`; false if there is none.
pub(crate) async fn revoke(p: Pools<'_>, name: &str, now: i64) -> Result<bool, MasterError> {
    write_tx!(p, |tx| {
        let done =
            sqlx::query("UPDATE tokens SET revoked_ms = $1 WHERE name = $2 AND revoked_ms IS NULL")
                .bind(now)
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        Ok(done > 0)
    })
}

/// The active token with this hash: `(name, role)`.
pub(crate) async fn lookup(
    p: Pools<'_>,
    sha256: &str,
) -> Result<Option<(String, String)>, MasterError> {
    Ok(sqlx::query_as(
        "SELECT name, role FROM tokens WHERE token_sha256 = $1 AND revoked_ms IS NULL",
    )
    .bind(sha256)
    .fetch_optional(p.read)
    .await?)
}
