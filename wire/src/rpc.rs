//! The JSON-RPC API trait shared by the master and its clients.
