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
use datafusion::logical_expr::LogicalPlan;
use provdb_storage::Storage;

use crate::table::ProvTable;

/// Statements whose tables hold fewer rows than this run in one partition.
pub const SERIAL_ROWS: u64 = 100_000;

/// Whether `plan` reads few enough stored rows to run in one partition.
/// Sources that are not provdb tables (catalog views, table functions)
/// count as small.
pub fn is_small(plan: &LogicalPlan, storage: &Storage) -> bool {
    let mut rows = 0u64;
    let walked = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<ProvTable>()
        {
            rows += storage.live_rows(table.def.id).unwrap_or(u64::MAX);
            if rows >= SERIAL_ROWS {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    walked.is_ok() && rows < SERIAL_ROWS
}
