//! Bearer tokens for `pyti master token add|list|revoke`: random 32 bytes shown once, stored only
//! as their SHA-256, each with a name and a role.

use crate::error::MasterError;
use crate::job_spec::check_name;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Prefix of every token, so a leaked one is recognisable in logs and secret scanners.
pub const TOKEN_PREFIX: &str = "pyti_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Register, heartbeat, claim, report.
    Slave,
    /// Submit and cancel its own jobs, and read.
    Submitter,
    /// Read only.
    Reader,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Slave, Role::Submitter, Role::Reader, Role::Admin];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Slave => "slave",
            Role::Submitter => "submitter",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = MasterError;
    fn from_str(s: &str) -> Result<Role, MasterError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                MasterError::field(
                    "role",
                    format!("`{s}` is not one of slave, submitter, reader, admin"),
                )
            })
    }
}

/// A token as `token list` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// The hash a token is stored and looked up by.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Creates a token called `name` with `role`; returns the secret (shown once, stored hashed).
pub async fn add(store: &Store, name: &str, role: Role) -> Result<String, MasterError> {
    check_name("name", name)?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
    store.token_add(name, role.as_str(), &hash(&token)).await?;
    Ok(token)
}

/// Every token, active and revoked.
pub async fn list(store: &Store) -> Result<Vec<TokenInfo>, MasterError> {
    store
        .token_list()
        .await?
        .into_iter()
        .map(|(name, role, created, revoked)| {
            Ok(TokenInfo {
                role: role
                    .parse()
                    .map_err(|_| MasterError::Corrupt(format!("token {name} role `{role}`")))?,
                name,
                created_at_ms: created,
                revoked_at_ms: revoked,
            })
        })
        .collect()
}

/// Revokes the active token called `name`; false if there is none. Masters notice within
/// [`crate::auth::CACHE_SECS`].
pub async fn revoke(store: &Store, name: &str) -> Result<bool, MasterError> {
    check_name("name", name)?;
    store.token_revoke(name).await
}

/// The name and role of an active token.
pub async fn authenticate(
    store: &Store,
    token: &str,
) -> Result<Option<(String, Role)>, MasterError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let Some((name, role)) = store.token_lookup(&hash(token)).await? else {
        return Ok(None);
    };
    let role = role
        .parse()
        .map_err(|_| MasterError::Corrupt(format!("token {name} role `{role}`")))?;
    Ok(Some((name, role)))
}
