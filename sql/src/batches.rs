//! Record batches of a known row count.
//!
//! A batch without columns (`SELECT count(*)` reads none, a projection may
//! keep none) still has rows; Arrow needs the count given in that case.
//! Every place that assembles a batch from columns it picked or computed
//! goes through [`batch_of`], so none forgets it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;

/// A batch of `schema` from `columns`, of `rows` rows.
pub(crate) fn batch_of(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    rows: usize,
) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}
