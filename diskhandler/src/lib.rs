//! diskhandler: one long-lived guestfs session on I/O disks. (Overview to be written with the crate.)
pub mod host_check;
