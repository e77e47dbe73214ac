//! provdb storage engine: tables of Arrow record batches made durable by a
//! write-ahead log and persisted as Parquet segments.
//!
//! The write path, each step its own module:
//! 1. [`writer`] — group commit: validate, append to the [`wal`], fsync, apply.
//! 2. [`state`] / [`memtable`] — the queryable in-memory buffer per table,
//!    visible the moment a commit is acknowledged.
//! 3. [`maintenance`] — background checkpoint: freeze buffers, write
//!    [`segment`]s (Parquet via `object_store`), persist deletion vectors
//!    ([`dv`]), save the [`manifest`] atomically, truncate the WAL; compaction
//!    of small segments; garbage collection.
//! 4. [`storage`] — the [`Storage`] handle: open/recover, commit, snapshots.
//!
//! A large atomic write can bypass steps 1-3 for its rows: a [`staged`]
//! segment is written to Parquet first and attached by a commit that logs
//! only its description.
//!
//! Rows are addressed by (source id, position). A buffer keeps its id and
//! positions when flushed to a segment, so deletion vectors and the
//! primary-key index ([`pk`]) stay valid across flushes; compaction remaps
//! them. This crate knows nothing of SQL or PROV.

pub mod cache;
pub mod dv;
pub mod error;
pub mod maintenance;
pub mod manifest;
pub mod memtable;
pub mod observer;
pub mod pk;
pub mod read;
pub mod record;
pub mod scaled;
pub mod segment;
pub mod staged;
pub mod state;
pub mod storage;
pub mod table;
pub mod wal;
pub mod writer;

pub use error::{Result, StorageError};
pub use observer::CommitObserver;
pub use pk::RowAddr;
pub use read::{RowMask, SourceRows};
pub use record::WalOp;
pub use staged::{StagedRows, StagedSegment};
pub use storage::{
    KeyedRow, MemSnapshot, SegmentSnapshot, Storage, StorageOptions, StorageStats, TableSnapshot,
    slice_row,
};
pub use table::{SourceId, TableDef, TableId};
pub use writer::CommitInfo;

#[cfg(test)]
mod tests;
