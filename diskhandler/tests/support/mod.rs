//! Helpers shared by the real-guestfs tests and the benchmark.
pub mod guest_writer;
