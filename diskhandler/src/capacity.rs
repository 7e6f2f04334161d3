//! Whether a payload fits an I/O disk, decided before the VM starts.

use pyti_wire::result_region::RESULT_REGION_BYTES;

/// ext4 allocates whole 4 KiB blocks; each file also costs an inode and a directory entry, which
/// one more block per file over-approximates safely.
const BLOCK_BYTES: u64 = 4096;

/// Bytes of free filesystem space a payload needs: its files rounded up to blocks, one block of
/// metadata per file, plus `output_reserve` for what the guest writes back.
pub fn required_free_bytes(content_bytes: u64, file_count: u64, output_reserve: u64) -> u64 {
    // Rounding each file up is bounded by one block per file: add it instead of summing per file.
    content_bytes
        .saturating_add(file_count.saturating_mul(2 * BLOCK_BYTES))
        .saturating_add(output_reserve)
}

/// Smallest I/O disk size (bytes) for a payload, with ext4's own overhead (inode tables: ~5 %
/// plus a fixed 8 MiB) and the result region after the filesystem on top; callers size
/// `io_disk_bytes` from it, capped by their maximum.
pub fn disk_bytes_for(required_free: u64) -> u64 {
    let with_overhead = required_free
        .saturating_add(required_free / 20)
        .saturating_add(8 * 1024 * 1024);
    (with_overhead.div_ceil(1024 * 1024) * 1024 * 1024).saturating_add(RESULT_REGION_BYTES)
}

/// Why a payload does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapacityError {
    #[error("the payload needs {needed} bytes of I/O disk ({reserve} of them kept free for the result), more than the largest allowed disk ({max_disk} bytes, max_io_disk_bytes); trim the wheelhouse or raise the maximum")]
    PayloadTooLarge {
        needed: u64,
        reserve: u64,
        max_disk: u64,
    },
    #[error("the payload needs {needed} bytes free but the I/O disk of slot {slot} has {available} of {disk} bytes free; raise io_disk_bytes (at most max_io_disk_bytes = {max_disk}) to at least {suggested}")]
    DiskTooSmall {
        slot: usize,
        needed: u64,
        available: u64,
        disk: u64,
        max_disk: u64,
        suggested: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_covers_content_metadata_and_reserve() {
        let needed = required_free_bytes(10_000_000, 10, 1_000_000);
        assert!(needed >= 11_000_000 + 10 * 4096);
        assert!(disk_bytes_for(needed) > needed);
        assert_eq!(disk_bytes_for(needed) % (1024 * 1024), 0);
        assert_eq!(required_free_bytes(u64::MAX, 5, 5), u64::MAX);
    }
}
