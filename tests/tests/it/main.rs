//! The one integration-test binary of provdb (see `tests/src/lib.rs`).
//!
//! `harness` starts the real `provdb` binary; the other modules are the tests.

mod auth;
mod copy;
mod crash;
mod dlprov;
mod errors;
mod harness;
mod inprocess;
mod lineage;
mod prov;
mod psql;
mod python;
mod raw;
mod slt;
mod transactions;
mod wire_extended;
mod wire_simple;
mod workload;
