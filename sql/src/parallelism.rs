//! How many partitions a statement is planned with.
//!
//! DataFusion plans every query for `target_partitions` parallel streams
//! (the number of cores): repartitioning, coalescing, one task per stream.
//! For a statement that reads few rows — a point question about one model,
//! a dashboard over a small table — that machinery costs more than the
//! work: planning and running a two-table join over 20,000 rows takes
//! about 40% less time in one partition than in two. So a statement whose
//! base tables hold fewer than [`SERIAL_ROWS`] rows in all is planned with
//! one partition; larger ones keep the session's setting.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{LogicalPlan, TableSource};
use provdb_storage::TableId;

use crate::lineage::GraphTable;
use crate::planning_state::Mode;
use crate::table::ProvTable;

/// Statements whose tables hold fewer rows than this run in one partition.
pub const SERIAL_ROWS: u64 = 100_000;

/// Whether a statement reading `rows` stored rows runs in one partition.
pub fn is_small(rows: u64) -> bool {
    rows < SERIAL_ROWS
}

/// The planning mode for a statement reading `rows` stored rows.
pub(crate) fn mode_for(rows: u64) -> Mode {
    if is_small(rows) {
        Mode::Serial
    } else {
        Mode::Parallel
    }
}

/// The provdb tables `plan` reads or writes (subqueries included), each
/// once, in the order first met. Sources that are not provdb tables
/// (catalog views, table functions) are left out.
pub fn stored_tables(plan: &LogicalPlan) -> Vec<TableId> {
    let mut ids = Vec::new();
    let mut add = |source: &std::sync::Arc<dyn TableSource>| {
        if let Some(id) = stored_table(source)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    };
    // The walk itself cannot fail: the closure never returns an error.
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => add(&scan.source),
            LogicalPlan::Dml(dml) => add(&dml.target),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ids
}

/// The provdb table behind `source`: a stored table, or the stored part
/// of a `prov` graph table.
fn stored_table(source: &std::sync::Arc<dyn TableSource>) -> Option<TableId> {
    let provider = source_as_provider(source).ok()?;
    if let Some(table) = provider.downcast_ref::<ProvTable>() {
        return Some(table.def.id);
    }
    let graph = provider.downcast_ref::<GraphTable>()?;
    graph
        .stored
        .as_ref()
        .downcast_ref::<ProvTable>()
        .map(|t| t.def.id)
}
