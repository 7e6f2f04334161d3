//! Who is calling: the bearer token of each HTTP request (or WebSocket upgrade) is resolved to a
//! [`Caller`] before jsonrpsee sees the request, and every method checks the caller's role.

use crate::error::MasterError;
use crate::store::Store;
use crate::tokens::{self, Role};
use jsonrpsee::Extensions;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds a token lookup is cached; a revoked token stops working within this time.
pub const CACHE_SECS: u64 = 5;
/// Cached lookups kept at most (the cache is cleared when full: unknown tokens cannot grow it
/// without bound).
const CACHE_ENTRIES: usize = 10_000;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What the auth step put into the request: the caller, or `None` for a missing/unknown token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Option<Caller>);

/// Who may call what.
pub mod roles {
    use super::Role;
    pub const SUBMIT: &[Role] = &[Role::Submitter, Role::Admin];
    pub const SLAVE: &[Role] = &[Role::Slave, Role::Admin];
    pub const READ: &[Role] = &[Role::Reader, Role::Submitter, Role::Admin];
}

/// Resolves tokens, with a short cache.
#[derive(Default)]
pub struct Authenticator {
    cache: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
}

impl Authenticator {
    /// The caller for an `Authorization` header value (`Bearer <token>`), if valid.
    pub async fn resolve(
        &self,
        store: &Store,
        header: Option<&str>,
    ) -> Result<Option<Caller>, MasterError> {
        let Some(token) = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Ok(None);
        };
        let key = tokens::hash(token);
        let ttl = Duration::from_secs(CACHE_SECS);
        if let Some((caller, at)) = self.lock().get(&key) {
            if at.elapsed() < ttl {
                return Ok(caller.clone());
            }
        }
        let caller = tokens::authenticate(store, token)
            .await?
            .map(|(name, role)| Caller { name, role });
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (caller.clone(), Instant::now()));
        Ok(caller)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<Caller>, Instant)>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The caller of this request if its role is in `allowed`.
pub fn require(ext: &Extensions, allowed: &[Role], method: &str) -> Result<Caller, MasterError> {
    let caller = ext
        .get::<Authenticated>()
        .and_then(|a| a.0.clone())
        .ok_or(MasterError::Unauthenticated)?;
    if !allowed.contains(&caller.role) {
        return Err(MasterError::Forbidden {
            role: caller.role.to_string(),
            method: method.to_string(),
        });
    }
    Ok(caller)
}
