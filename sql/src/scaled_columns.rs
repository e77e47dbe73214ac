//! Reading scaled float columns of Parquet segments through DataFusion.
//!
//! A segment may store a `DOUBLE PRECISION` column of short decimals as
//! integers with a decimal scale in the field's metadata
//! ([`provdb_storage::scaled`]). The storage crate decodes such columns
//! when it reads a segment itself; DataFusion's Parquet scan (segments the
//! segment cache does not hold, one-row key lookups) reads the file and
//! would otherwise cast the integers to doubles without dividing.
//!
//! [`ScaledColumns`] is the scan's expression adapter: every reference to a
//! scaled column, in the projection and in the pushed-down predicate,
//! becomes `CAST(c AS DOUBLE) / 10^k` (the storage decoder's own
//! computation, so the same doubles), and the rest is left to DataFusion's
//! default adapter. Row-group and page pruning do not see through the
//! division, so predicates on scaled columns prune nothing (they stay
//! correct: an expression the pruner does not understand keeps the row
//! group).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapter, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use provdb_storage::scaled;

/// The expression adapter factory the table provider gives its Parquet scans.
#[derive(Debug, Default)]
pub struct ScaledColumns;

impl PhysicalExprAdapterFactory for ScaledColumns {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let Some(decoder) = scaled::Decoder::for_schema(&physical_file_schema) else {
            return Ok(Arc::new(DefaultPhysicalExprAdapter::new(
                logical_file_schema,
                physical_file_schema,
            )));
        };
        // The default adapter sees the scaled columns as the doubles they
        // are rewritten to, so it adds no cast of its own.
        let decoded = Arc::clone(decoder.schema());
        Ok(Arc::new(ScaledAdapter {
            scales: decoder.scales().to_vec(),
            physical: physical_file_schema,
            rest: DefaultPhysicalExprAdapter::new(logical_file_schema, decoded),
        }))
    }
}

/// Rewrites scaled columns for one file, then adapts like DataFusion does.
#[derive(Debug)]
struct ScaledAdapter {
    /// Scale of each physical column, if scaled.
    scales: Vec<Option<u8>>,
    physical: SchemaRef,
    rest: DefaultPhysicalExprAdapter,
}

impl ScaledAdapter {
    /// `CAST(c AS DOUBLE) / 10^k` for a scaled column `c`.
    fn decode(&self, column: &Column) -> Option<Arc<dyn PhysicalExpr>> {
        let index = self.physical.index_of(column.name()).ok()?;
        let k = (*self.scales.get(index)?)?;
        let ints: Arc<dyn PhysicalExpr> = Arc::new(Column::new(column.name(), index));
        let floats = Arc::new(CastExpr::new(ints, DataType::Float64, None));
        let divisor = Arc::new(Literal::new(ScalarValue::Float64(Some(scaled::power(k)))));
        Some(Arc::new(BinaryExpr::new(floats, Operator::Divide, divisor)))
    }
}

impl PhysicalExprAdapter for ScaledAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let decoded = expr
            .transform_down(|e| {
                let Some(column) = e.downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                Ok(match self.decode(column) {
                    Some(d) => Transformed::new(d, true, TreeNodeRecursion::Jump),
                    None => Transformed::no(e),
                })
            })?
            .data;
        self.rest.rewrite(decoded)
    }
}
