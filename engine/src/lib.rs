//! provdb engine: the provenance database over storage, as a Rust API (no
//! SQL text in, none out).
//!
//! - [`catalog`]: durable formats of schemas, views, sequences and column
//!   defaults, shared by the SQL layer and the ingest paths;
//! - [`sequence`]: durable sequences;
//! - [`rows`]: dynamic rows to and from Arrow batches;
//! - [`dlprov`]: DfAnalyzer/DLProv ingestion (dataflow specs, task
//!   messages) into the DLProv schema.

pub mod catalog;
pub mod dlprov;
pub mod error;
pub mod lineage;
pub mod prov;
pub mod rows;
pub mod sequence;

pub use error::{EngineError, Result};
