//! provdb engine: the provenance database over storage.
//!
//! This layer will own the DfAnalyzer/DLProv catalog and ingestion semantics,
//! the PROV graph and its lineage index, and PROV import/export (issues 3–5
//! in the tracker). It has no code yet: the SQL layer currently sits directly
//! on `provdb-storage`.
