//! W3C PROV interoperability: export the PROV graph as PROV-N, PROV-JSON,
//! DOT or SVG, and import PROV-JSON documents (yProv4ML runs included).
//!
//! - [`model`]: documents, elements, relations, typed values;
//! - [`namespace`]: provdb ids as qualified names with real IRIs, and the
//!   registry that maps imported prefixes;
//! - [`json`], [`provn`], [`dot`]: the writers (and the attribute encoding
//!   the `prov.*` tables store);
//! - [`read`]: the lenient streaming PROV-JSON reader;
//! - [`export`](mod@export): which records a scope covers and their attributes;
//! - [`import`](mod@import): documents into the `prov` tables in one commit;
//! - [`yprov`], [`series`], [`ml`]: yProv4ML runs into the `ml` tables;
//! - [`spill`]: parsed series waiting for their write, in memory or a file;
//! - [`cells`]: table reads and Arrow cells as PROV values.

pub mod cells;
pub mod dot;
pub mod export;
pub mod import;
pub mod json;
pub mod ml;
pub mod model;
pub mod namespace;
pub mod provn;
pub mod read;
pub mod series;
pub mod spill;
pub mod yprov;

#[cfg(test)]
mod tests;

pub use export::{Format, Scope, export, render};
pub use import::{ImportOptions, ImportReport, import, import_document};
pub use read::{RawDoc, read_document};
