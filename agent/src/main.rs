//! The in-guest agent (see its crate description).
fn main() {}
