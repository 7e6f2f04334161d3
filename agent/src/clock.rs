//! Stepping the wall clock: a guest reverted to a memory snapshot wakes up with the snapshot's
//! time, so before a task the agent moves the clock forward to the RTC's time or the host's
//! time from `task.json`, whichever is later.

/// The RTC's idea of now (Unix seconds), which QEMU keeps at host time across reverts.
const RTC_SINCE_EPOCH: &str = "/sys/class/rtc/rtc0/since_epoch";

/// Steps `CLOCK_REALTIME` forward to `max(RTC, host_time_unix)`; never backwards.
/// Returns the new time when it stepped.
pub fn step_clock(host_time_unix: i64) -> Option<i64> {
    let rtc = std::fs::read_to_string(RTC_SINCE_EPOCH)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let target = rtc.max(host_time_unix);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if target <= now {
        return None;
    }
    let ts = libc::timespec {
        tv_sec: target as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; fails harmlessly (EPERM) when not root.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    (rc == 0).then_some(target)
}
