//! Bounded capture of one output stream: the first and last bytes, and how many were dropped.
//!
//! A step may write gigabytes; the agent keeps `limit / 2` bytes from the start and the rest of
//! `limit` from the end, counts what it dropped, and never stops reading (a writer whose pipe
//! is full would block forever).

use pyti_wire::raw_data::CapturedOutput;
use std::collections::VecDeque;

/// Head and tail of a stream being read.
#[derive(Debug)]
pub struct Capture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl Capture {
    /// A capture keeping at most `limit` bytes in all.
    pub fn new(limit: u64) -> Capture {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let head_limit = limit / 2;
        Capture {
            head_limit,
            tail_limit: limit - head_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    /// Takes the next chunk of the stream.
    pub fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.head.len() < self.head_limit {
            let take = data.len().min(self.head_limit - self.head.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        if data.len() >= self.tail_limit {
            self.tail.clear();
            self.tail.extend(&data[data.len() - self.tail_limit..]);
            return;
        }
        self.tail.extend(data);
        let excess = self.tail.len().saturating_sub(self.tail_limit);
        self.tail.drain(..excess);
    }

    /// The captured output: everything in `head` when nothing was dropped.
    pub fn finish(&self) -> CapturedOutput {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let dropped = self.total - kept;
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if dropped == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            CapturedOutput {
                head: String::from_utf8_lossy(&all).into_owned(),
                tail: String::new(),
                total_bytes: self.total,
                dropped_bytes: 0,
            }
        } else {
            CapturedOutput {
                head: String::from_utf8_lossy(&self.head).into_owned(),
                tail: String::from_utf8_lossy(&tail).into_owned(),
                total_bytes: self.total,
                dropped_bytes: dropped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Capture::new(10);
        c.push(b"hello");
        c.push(b" you");
        let out = c.finish();
        assert_eq!(
            (
                out.head.as_str(),
                out.tail.as_str(),
                out.total_bytes,
                out.dropped_bytes
            ),
            ("hello you", "", 9, 0)
        );
    }

    #[test]
    fn long_output_keeps_head_and_tail() {
        let mut c = Capture::new(8);
        for chunk in [&b"0123"[..], b"456789", b"abcdefghij", b"XYZ"] {
            c.push(chunk);
        }
        let out = c.finish();
        assert_eq!(out.head, "0123");
        assert_eq!(out.tail, "jXYZ");
        assert_eq!(out.total_bytes, 23);
        assert_eq!(out.dropped_bytes, 23 - 8);
    }

    #[test]
    fn huge_chunk_keeps_its_end() {
        let mut c = Capture::new(4);
        c.push(&[b'a'; 1000]);
        c.push(b"end");
        let out = c.finish();
        assert_eq!(out.head, "aa");
        assert_eq!(out.tail, "nd");
        assert_eq!(out.dropped_bytes, 999);
    }
}
