//! diskhandler
