//! The result region: the last [`RESULT_REGION_BYTES`] of the I/O disk, outside its filesystem.
//!
//! Besides `result.json` on the filesystem, the agent writes the same bytes here, behind a header
//! that names the task and checksums the payload. The host reads them back with two raw reads and
//! never has to mount a guest-written filesystem for a task without artifacts: under TCG a mount
//! and unmount in the libguestfs appliance cost ~0.75 s (each runs a program there), the raw
//! reads ~20 ms. A guest-written region is as untrusted as the filesystem: [`decode_header`]
//! bounds every field, and a payload must match the header's checksum.
//!
//! Layout: a [`HEADER_BYTES`] header at the region's start, the payload right after it.
//! The agent writes the payload first and the header last, each synced, so a torn write leaves
//! no valid header. The host wipes the header before each task.

use crate::limits::MAX_RESULT_FILE_BYTES;
use sha2::{Digest, Sha256};

/// Size of the header block.
pub const HEADER_BYTES: u64 = 4096;
/// Size of the region at the end of every I/O disk (header + the largest result, rounded up to
/// a MiB so the filesystem before it ends on a block boundary).
pub const RESULT_REGION_BYTES: u64 = (MAX_RESULT_FILE_BYTES + HEADER_BYTES).div_ceil(MIB) * MIB;
/// First bytes of a written header (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"PYTIRES\x01";
/// Longest task id a header holds.
pub const MAX_TASK_ID_BYTES: usize = 128;

const MIB: u64 = 1024 * 1024;
// The filesystem before the region ends on a block boundary; the largest result fits.
const _: () = assert!(RESULT_REGION_BYTES.is_multiple_of(MIB));
const _: () = assert!(RESULT_REGION_BYTES >= MAX_RESULT_FILE_BYTES + HEADER_BYTES);
const LENGTH_AT: usize = 8;
const SHA256_AT: usize = 16;
const FLAGS_AT: usize = 48;
const TASK_ID_LEN_AT: usize = 52;
const TASK_ID_AT: usize = 54;
/// Flag: the guest left files under `artifacts/` (read them from the filesystem).
const HAS_ARTIFACTS: u32 = 1;

/// Where the region starts on a disk of `disk_bytes` (the filesystem must end there).
pub fn region_offset(disk_bytes: u64) -> Option<u64> {
    disk_bytes
        .checked_sub(RESULT_REGION_BYTES)
        .filter(|offset| *offset > 0)
}

/// What a valid header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub task_id: String,
    /// Payload bytes right after the header.
    pub length: u64,
    pub sha256: [u8; 32],
    /// The guest left artifacts on the filesystem.
    pub has_artifacts: bool,
}

/// Why a region could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// No header (the agent did not write one, or the host wiped it).
    #[error("no result header in the result region")]
    Empty,
    #[error("the result region's header is malformed: {0}")]
    Malformed(String),
    #[error("the result in the result region is {length} bytes, over the {limit}-byte limit")]
    TooLarge { length: u64, limit: u64 },
    #[error("the result region's payload does not match its header's checksum")]
    Checksum,
}

/// The header block for `payload` of task `task_id`.
pub fn encode_header(
    task_id: &str,
    payload: &[u8],
    has_artifacts: bool,
) -> Result<Vec<u8>, RegionError> {
    if task_id.len() > MAX_TASK_ID_BYTES {
        return Err(RegionError::Malformed(format!(
            "task id of {} bytes (at most {MAX_TASK_ID_BYTES})",
            task_id.len()
        )));
    }
    if payload.len() as u64 > MAX_RESULT_FILE_BYTES {
        return Err(RegionError::TooLarge {
            length: payload.len() as u64,
            limit: MAX_RESULT_FILE_BYTES,
        });
    }
    let mut header = vec![0u8; HEADER_BYTES as usize];
    header[..LENGTH_AT].copy_from_slice(&MAGIC);
    header[LENGTH_AT..SHA256_AT].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    header[SHA256_AT..FLAGS_AT].copy_from_slice(&Sha256::digest(payload));
    let flags = if has_artifacts { HAS_ARTIFACTS } else { 0 };
    header[FLAGS_AT..TASK_ID_LEN_AT].copy_from_slice(&flags.to_le_bytes());
    header[TASK_ID_LEN_AT..TASK_ID_AT].copy_from_slice(&(task_id.len() as u16).to_le_bytes());
    header[TASK_ID_AT..TASK_ID_AT + task_id.len()].copy_from_slice(task_id.as_bytes());
    Ok(header)
}

/// Reads a header block, refusing payloads over `max_length` bytes.
pub fn decode_header(block: &[u8], max_length: u64) -> Result<Header, RegionError> {
    if block.len() < TASK_ID_AT + MAX_TASK_ID_BYTES {
        return Err(RegionError::Malformed(format!(
            "{} bytes read",
            block.len()
        )));
    }
    if block[..LENGTH_AT] != MAGIC {
        return Err(RegionError::Empty);
    }
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&block[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let length = u64_at(LENGTH_AT);
    let limit = max_length.min(MAX_RESULT_FILE_BYTES);
    if length > limit {
        return Err(RegionError::TooLarge { length, limit });
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(&block[SHA256_AT..FLAGS_AT]);
    let flags = u32::from_le_bytes([
        block[FLAGS_AT],
        block[FLAGS_AT + 1],
        block[FLAGS_AT + 2],
        block[FLAGS_AT + 3],
    ]);
    if flags & !HAS_ARTIFACTS != 0 {
        return Err(RegionError::Malformed(format!("unknown flags {flags:#x}")));
    }
    let id_len = u16::from_le_bytes([block[TASK_ID_LEN_AT], block[TASK_ID_LEN_AT + 1]]) as usize;
    if id_len > MAX_TASK_ID_BYTES {
        return Err(RegionError::Malformed(format!(
            "task id of {id_len} bytes (at most {MAX_TASK_ID_BYTES})"
        )));
    }
    let task_id = std::str::from_utf8(&block[TASK_ID_AT..TASK_ID_AT + id_len])
        .map_err(|_| RegionError::Malformed("the task id is not UTF-8".into()))?
        .to_string();
    Ok(Header {
        task_id,
        length,
        sha256,
        has_artifacts: flags & HAS_ARTIFACTS != 0,
    })
}

/// Checks `payload` against the header's checksum.
pub fn verify_payload(header: &Header, payload: &[u8]) -> Result<(), RegionError> {
    if payload.len() as u64 != header.length || Sha256::digest(payload)[..] != header.sha256 {
        return Err(RegionError::Checksum);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_and_checks_its_payload() {
        let payload = br#"{"task_id":"t-1"}"#;
        let block = encode_header("t-1", payload, true).unwrap();
        assert_eq!(block.len() as u64, HEADER_BYTES);
        let header = decode_header(&block, 1024).unwrap();
        assert_eq!(header.task_id, "t-1");
        assert_eq!(header.length, payload.len() as u64);
        assert!(header.has_artifacts);
        verify_payload(&header, payload).unwrap();
        assert_eq!(
            verify_payload(&header, br#"{"task_id":"t-2"}"#),
            Err(RegionError::Checksum)
        );
        assert_eq!(verify_payload(&header, b""), Err(RegionError::Checksum));
    }

    #[test]
    fn hostile_headers_are_refused_with_their_reason() {
        assert_eq!(decode_header(&[0; 4096], 1024), Err(RegionError::Empty));
        assert!(matches!(
            decode_header(&[0; 10], 1024),
            Err(RegionError::Malformed(_))
        ));
        let mut block = encode_header("t", b"{}", false).unwrap();
        block[LENGTH_AT..SHA256_AT].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            decode_header(&block, 1024),
            Err(RegionError::TooLarge {
                length: u64::MAX,
                limit: 1024
            })
        );
        let mut block = encode_header("t", b"{}", false).unwrap();
        block[TASK_ID_LEN_AT..TASK_ID_AT].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            decode_header(&block, 1024),
            Err(RegionError::Malformed(_))
        ));
        let mut block = encode_header("t", b"{}", false).unwrap();
        block[FLAGS_AT] = 0x80;
        assert!(matches!(
            decode_header(&block, 1024),
            Err(RegionError::Malformed(_))
        ));
        let mut block = encode_header("t", b"{}", false).unwrap();
        block[TASK_ID_AT] = 0xff;
        assert!(matches!(
            decode_header(&block, 1024),
            Err(RegionError::Malformed(_))
        ));
        assert!(encode_header(&"x".repeat(MAX_TASK_ID_BYTES + 1), b"", false).is_err());
    }

    #[test]
    fn the_region_sits_at_the_end_of_a_disk_large_enough() {
        assert_eq!(region_offset(RESULT_REGION_BYTES), None);
        assert_eq!(
            region_offset(64 * MIB),
            Some(64 * MIB - RESULT_REGION_BYTES)
        );
    }
}
