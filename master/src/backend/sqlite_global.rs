//! SQLite's process-wide settings, made once before SQLite is first used ([`configure`]).
//!
//! 1. **No memory statistics.** SQLite counts every allocation under a global mutex unless told
//!    not to. Nothing here reads the counts (`sqlite3_memory_used`, a soft heap limit); without
//!    them the 1,000,000-task claim benchmark's closed loop went from 17,800 to 19,200 claims/s.
//! 2. **SQLite's own page cache, with one key moved.** When a B-tree page splits, SQLite puts
//!    the new pages in ascending order by swapping their numbers, parking a page under the
//!    number of the lock page (the page at 1 GiB, never part of a database) while it does. The
//!    page cache then keeps that number as the highest key it ever held, and at the end of the
//!    transaction, asked to drop every page beyond the database (any database under 1 GiB
//!    ends far below that key), it walks every page it holds: the writer's 64 MiB cache,
//!    16,384 pages, after nearly every claim batch's commit. That walk was 19% of the writer's
//!    time in the claim benchmark (15,900 claims/s, 17,800 without it). The wrapper below
//!    hands every call to the default cache unchanged, except that the lock page's number is
//!    kept under key 0, which no page ever has: the parked page is found, moved and moved back
//!    as before, and the highest key stays within the database.
//!
//! SQLite takes these settings only before it is initialized. If something initialized it
//! first, the defaults stay: everything works as before, only slower.

use libsqlite3_sys as ffi;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

/// SQLite's lock byte offset (`PENDING_BYTE`): the page holding it is never a database page.
const PENDING_BYTE: u64 = 0x4000_0000;

type Handle = *mut ffi::sqlite3_pcache;
type Page = *mut ffi::sqlite3_pcache_page;

/// SQLite's default page cache methods (those the wrapper passes calls on to), taken before
/// ours replace them.
struct DefaultMethods {
    create: unsafe extern "C" fn(c_int, c_int, c_int) -> Handle,
    cachesize: unsafe extern "C" fn(Handle, c_int),
    pagecount: unsafe extern "C" fn(Handle) -> c_int,
    fetch: unsafe extern "C" fn(Handle, c_uint, c_int) -> Page,
    unpin: unsafe extern "C" fn(Handle, Page, c_int),
    rekey: unsafe extern "C" fn(Handle, Page, c_uint, c_uint),
    truncate: unsafe extern "C" fn(Handle, c_uint),
    destroy: unsafe extern "C" fn(Handle),
    shrink: unsafe extern "C" fn(Handle),
}

impl DefaultMethods {
    /// `None` if SQLite's methods lack one (a cache SQLite does not ship).
    fn of(m: &ffi::sqlite3_pcache_methods2) -> Option<DefaultMethods> {
        Some(DefaultMethods {
            create: m.xCreate?,
            cachesize: m.xCachesize?,
            pagecount: m.xPagecount?,
            fetch: m.xFetch?,
            unpin: m.xUnpin?,
            rekey: m.xRekey?,
            truncate: m.xTruncate?,
            destroy: m.xDestroy?,
            shrink: m.xShrink?,
        })
    }
}

static DEFAULT: OnceLock<DefaultMethods> = OnceLock::new();

/// Pages parked under the lock page's number (the tests check the swap went through here).
#[cfg(test)]
static PARKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Applies the settings if SQLite is not initialized yet in this process (once; later calls
/// return the first answer). Returns whether they are in place.
pub(crate) fn configure() -> bool {
    static CONFIGURED: OnceLock<bool> = OnceLock::new();
    *CONFIGURED.get_or_init(|| {
        // SAFETY: MEMSTATUS takes one int; it fails (SQLITE_MISUSE) once SQLite is initialized.
        let memstatus = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
        memstatus == ffi::SQLITE_OK && wrap_page_cache()
    })
}

/// Installs the wrapper ([`Cache`] and the methods below) over SQLite's default page cache.
fn wrap_page_cache() -> bool {
    let mut default = std::mem::MaybeUninit::<ffi::sqlite3_pcache_methods2>::zeroed();
    // SAFETY: GETPCACHE2 writes the methods in force (the default ones) into the struct.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, default.as_mut_ptr()) };
    if rc != ffi::SQLITE_OK {
        return false;
    }
    // SAFETY: filled in by SQLite above.
    let default = unsafe { default.assume_init() };
    let Some(methods) = DefaultMethods::of(&default) else {
        return false;
    };
    if DEFAULT.set(methods).is_err() {
        return false;
    }
    let ours = ffi::sqlite3_pcache_methods2 {
        iVersion: 1,
        pArg: default.pArg,
        xInit: default.xInit,
        xShutdown: default.xShutdown,
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: PCACHE2 copies the struct; it fails once SQLite is initialized, changing nothing.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours) };
    rc == ffi::SQLITE_OK
}

/// One page cache: the default cache's handle, and the lock page's number for its page size.
struct Cache {
    inner: Handle,
    lock_page: c_uint,
}

impl Cache {
    /// The key the default cache keeps page `key` under.
    fn key(&self, key: c_uint) -> c_uint {
        if key == self.lock_page {
            0
        } else {
            key
        }
    }
}

/// The lock page's number for pages of `page_size` bytes (0, no page, for a size SQLite never
/// uses).
fn lock_page(page_size: c_int) -> c_uint {
    match u64::try_from(page_size) {
        Ok(size) if size > 0 => c_uint::try_from(PENDING_BYTE / size + 1).unwrap_or(0),
        _ => 0,
    }
}

fn default_methods() -> &'static DefaultMethods {
    DEFAULT
        .get()
        .expect("set before SQLite can call the wrapper")
}

/// # Safety
/// `p` is a handle [`create`] returned and [`destroy`] has not freed.
unsafe fn cache<'a>(p: Handle) -> &'a Cache {
    &*(p as *const Cache)
}

// The methods below are SQLite's page cache interface (`sqlite3_pcache_methods2`). SQLite calls
// them with handles `create` returned, and each passes the call on to the default cache.

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> Handle {
    let inner = (default_methods().create)(page_size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let lock_page = lock_page(page_size);
    Box::into_raw(Box::new(Cache { inner, lock_page })) as Handle
}

unsafe extern "C" fn cachesize(p: Handle, pages: c_int) {
    (default_methods().cachesize)(cache(p).inner, pages)
}

unsafe extern "C" fn pagecount(p: Handle) -> c_int {
    (default_methods().pagecount)(cache(p).inner)
}

unsafe extern "C" fn fetch(p: Handle, key: c_uint, create: c_int) -> Page {
    let c = cache(p);
    (default_methods().fetch)(c.inner, c.key(key), create)
}

unsafe extern "C" fn unpin(p: Handle, page: Page, discard: c_int) {
    (default_methods().unpin)(cache(p).inner, page, discard)
}

unsafe extern "C" fn rekey(p: Handle, page: Page, old: c_uint, new: c_uint) {
    let c = cache(p);
    #[cfg(test)]
    if new == c.lock_page {
        PARKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    (default_methods().rekey)(c.inner, page, c.key(old), c.key(new))
}

unsafe extern "C" fn truncate(p: Handle, limit: c_uint) {
    (default_methods().truncate)(cache(p).inner, limit)
}

unsafe extern "C" fn destroy(p: Handle) {
    let c = Box::from_raw(p as *mut Cache);
    (default_methods().destroy)(c.inner)
}

unsafe extern "C" fn shrink(p: Handle) {
    (default_methods().shrink)(cache(p).inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lock_page_moves_to_key_0() {
        // 4 KiB pages: the lock page is the first page past 1 GiB.
        assert_eq!(lock_page(4096), 262_145);
        assert_eq!(lock_page(65_536), 16_385);
        assert_eq!(lock_page(0), 0);
        let cache = Cache {
            inner: std::ptr::null_mut(),
            lock_page: lock_page(4096),
        };
        assert_eq!(cache.key(262_145), 0);
        for key in [1, 2, 262_144, 262_146, c_uint::MAX] {
            assert_eq!(cache.key(key), key);
        }
    }

    /// Random keys in an index split pages all over it, deletions put pages on the free list,
    /// and splits that reuse them get page numbers out of order: SQLite swaps them through the
    /// lock page. Through all that, with a cache small enough that pages are evicted and read
    /// again, the database stays whole and holds exactly what was written.
    #[tokio::test]
    async fn a_database_stays_whole_through_page_swaps_in_the_wrapped_cache() {
        use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
        use std::collections::BTreeMap;

        assert!(
            configure(),
            "SQLite was initialized before the test configured it"
        );
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("swaps.sqlite"))
            .create_if_missing(true)
            .pragma("cache_size", "50");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE INDEX t_v ON t (v)")
            .execute(&pool)
            .await
            .unwrap();
        let parked_before = PARKED.load(std::sync::atomic::Ordering::Relaxed);
        let mut expected = BTreeMap::new();
        let mut next = 0_i64;
        for round in 0..6 {
            let mut tx = pool.begin().await.unwrap();
            for _ in 0..3_000 {
                let v = format!("{:032x}", rand::random::<u128>());
                sqlx::query("INSERT INTO t (k, v) VALUES ($1, $2)")
                    .bind(next)
                    .bind(&v)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                expected.insert(next, v);
                next += 1;
            }
            // Every other round empties half the rows: their pages go on the free list.
            if round % 2 == 1 {
                sqlx::query("DELETE FROM t WHERE k % 2 = 0")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                expected.retain(|k, _| k % 2 != 0);
            }
            tx.commit().await.unwrap();
        }
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(check, "ok");
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT k, v FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows, expected.into_iter().collect::<Vec<_>>());
        assert!(
            PARKED.load(std::sync::atomic::Ordering::Relaxed) > parked_before,
            "no page was swapped through the lock page: the test did not reach the wrapper's case"
        );
        pool.close().await;
    }
}
