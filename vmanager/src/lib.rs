//! vmanager
