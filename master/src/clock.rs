//! Time as the store sees it: the system clock, or a manual one tests move by hand (lease expiry
//! is tested by advancing time, not by sleeping).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A source of Unix milliseconds.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `chrono::Utc::now()`.
    #[default]
    System,
    /// A shared counter tests set and advance.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A manual clock starting at `start_ms`.
    pub fn manual(start_ms: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance_ms(&self, ms: i64) {
        if let Clock::Manual(now) = self {
            now.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
