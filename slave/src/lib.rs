//! slave
