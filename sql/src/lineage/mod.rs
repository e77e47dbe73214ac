//! Lineage in SQL: the `lineage()` and `lineage_path()` table functions
//! ([`udtf`]), the operator that walks the engine's lineage index
//! ([`exec::LineageExec`]), and schema `prov`'s tables shown merged with the
//! graph derived from DLProv rows ([`graph_table`]).
//!
//! User guide: `docs/lineage.md`.

pub mod args;
pub mod calls;
pub mod exec;
pub mod graph_table;
pub mod subquery;
pub mod udtf;

pub use graph_table::{DerivedCache, GraphTable};
pub use udtf::{LineageFn, LineagePathFn};
