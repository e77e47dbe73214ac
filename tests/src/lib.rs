//! provdb integration tests.
//!
//! Everything lives in the single test binary `tests/it` (one binary keeps
//! link time low: DataFusion is large):
//!
//! - `harness`: builds/finds the real `provdb` binary, starts it on a free
//!   loopback port with a temporary data directory, kills it on drop;
//! - `slt`: runs `tests/slt/*.slt` in-process over `provdb_sql::Session` and
//!   over the wire through tokio-postgres against the binary;
//! - wire, COPY, transaction, error, psql, crash, auth/TLS and Python tests.
//!
//! Run with `cargo test --workspace` (or `cargo test -p provdb-tests`).
//! `PROVDB_BIN=/path/to/provdb` skips building the binary.
