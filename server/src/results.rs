//! Result sets on the wire: Arrow schemas become RowDescription fields and
//! record batches become DataRows (text or binary per column), batch by batch,
//! via `text_rows` or `arrow-pg`. Nothing here collects a whole result.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::{Stream, StreamExt, stream};
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use provdb_sql::SqlError;

use crate::params::check_format_count;
use crate::types::{datafusion_error, pg_error};

/// Row description for `schema`, with each column in the format the client
/// asked for (Bind's result format codes; text for the simple protocol).
pub fn pg_fields(schema: &Schema, format: &Format) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    check_format_count(format, schema.fields().len(), "result column").map_err(|e| pg_error(&e))?;
    arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)
        .map(Arc::new)
        .map_err(|e| pg_error(&SqlError::feature_not_supported(e.to_string())))
}

/// Encode one batch into DataRows: all-text batches of common types by
/// `text_rows`, anything else through `arrow-pg`.
fn encode_batch(fields: &Arc<Vec<FieldInfo>>, batch: RecordBatch) -> Vec<PgWireResult<DataRow>> {
    if batch.num_columns() != fields.len() {
        let msg = format!(
            "result batch has {} columns, expected {}",
            batch.num_columns(),
            fields.len()
        );
        return vec![Err(pg_error(&SqlError::internal(msg)))];
    }
    if let Some(rows) = crate::text_rows::encode(&batch, fields) {
        return rows.into_iter().map(Ok).collect();
    }
    let batch = crate::pg_text::textify(batch, fields);
    arrow_pg::encode_recordbatch(fields.clone(), batch).collect()
}

/// DataRows for a stream of record batches; one batch is encoded at a time.
pub fn row_stream(
    fields: Arc<Vec<FieldInfo>>,
    batches: SendableRecordBatchStream,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| match batch {
            Ok(batch) => stream::iter(encode_batch(&fields, batch)),
            Err(e) => stream::iter(vec![Err(pg_error(&datafusion_error(e)))]),
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn fields_follow_arrow_types() {
        let f = pg_fields(&schema(), &Format::UnifiedText).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].datatype(), &pgwire::api::Type::INT4);
        assert_eq!(f[1].datatype(), &pgwire::api::Type::TEXT);
    }

    #[test]
    fn bad_result_format_count_is_an_error() {
        assert!(pg_fields(&schema(), &Format::Individual(vec![1])).is_err());
    }

    #[tokio::test]
    async fn rows_are_streamed() {
        let s = schema();
        let batch = RecordBatch::try_new(
            s.clone(),
            vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let batches = futures::stream::iter(vec![Ok(batch.clone()), Ok(batch)]);
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(s.clone(), batches));
        let fields = pg_fields(&s, &Format::UnifiedText).unwrap();
        let rows: Vec<_> = row_stream(fields, stream).collect().await;
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.is_ok()));
    }
}
