//! Guest images built from distribution packages (see the crate overview).
