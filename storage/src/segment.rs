//! Parquet segments: immutable files holding the rows of one flushed buffer (or
//! of a compaction), in position order, through `object_store`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::datatypes::SchemaRef;
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::table::{SourceId, TableId};

/// Rows per Parquet row group: small enough that statistics prune well.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// What the manifest records about a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentMeta {
    pub id: SourceId,
    /// Object-store path, relative to the store root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// Row count of each row group, in order.
    pub row_groups: Vec<u64>,
    /// Object-store path of the persisted deletion vector, if any rows are deleted.
    #[serde(default)]
    pub dv_path: Option<String>,
}

/// A segment file as held by snapshots. When the last holder drops it and the
/// manifest no longer names it, the garbage collector may delete the file.
#[derive(Debug)]
pub struct SegmentFile {
    pub meta: SegmentMeta,
}

/// Path of a table's segment.
pub fn segment_path(prefix: &ObjPath, table: TableId, id: SourceId) -> ObjPath {
    prefix
        .clone()
        .join("tables")
        .join(table.0.to_string())
        .join(format!("{:020}.parquet", id.0))
}

/// Path of a deletion vector version.
pub fn dv_path(prefix: &ObjPath, table: TableId, id: SourceId, version: u64) -> ObjPath {
    prefix
        .clone()
        .join("tables")
        .join(table.0.to_string())
        .join(format!("{:020}.{version}.dv", id.0))
}

/// Zstd-compressed pages with page statistics. Text and booleans use
/// dictionaries; numbers do not (a metric series has as many distinct
/// values as rows, and a dictionary then costs more than it saves): floats
/// are BYTE_STREAM_SPLIT (their bytes regrouped so the exponents and high
/// mantissa bytes of smooth series compress), integers and timestamps
/// DELTA_BINARY_PACKED (steps, epochs, clock readings).
fn writer_props(schema: &SchemaRef) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page);
    for field in schema.fields() {
        let encoding = match field.data_type() {
            DataType::Float32 | DataType::Float64 => Encoding::BYTE_STREAM_SPLIT,
            DataType::Int32 | DataType::Int64 | DataType::Timestamp(_, _) | DataType::Date32 => {
                Encoding::DELTA_BINARY_PACKED
            }
            _ => continue,
        };
        let column = ColumnPath::from(field.name().as_str());
        b = b
            .set_column_dictionary_enabled(column.clone(), false)
            .set_column_encoding(column, encoding);
    }
    b.build()
}

/// Writes one Parquet segment batch by batch: a row group at a time is
/// held (encoded) in memory, the rest is in the object store.
pub struct SegmentWriter {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    inner: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

impl SegmentWriter {
    pub fn new(store: &Arc<dyn ObjectStore>, path: &ObjPath, schema: &SchemaRef) -> Result<Self> {
        let writer = BufWriter::new(Arc::clone(store), path.clone());
        let inner =
            AsyncArrowWriter::try_new(writer, Arc::clone(schema), Some(writer_props(schema)))?;
        Ok(SegmentWriter {
            store: Arc::clone(store),
            path: path.clone(),
            inner,
            rows: 0,
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.inner.write(batch).await?;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish the file; `id` is the source id the segment will have.
    pub async fn finish(self, id: SourceId) -> Result<SegmentMeta> {
        let meta = self.inner.close().await?;
        let row_groups: Vec<u64> = meta
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows() as u64)
            .collect();
        let bytes = self.store.head(&self.path).await?.size;
        Ok(SegmentMeta {
            id,
            path: self.path.to_string(),
            rows: self.rows,
            bytes,
            row_groups,
            dv_path: None,
        })
    }
}

/// Write `batches` (all with `schema`) as one Parquet segment.
pub async fn write_segment(
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    id: SourceId,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<SegmentMeta> {
    let mut w = SegmentWriter::new(store, path, schema)?;
    for b in batches {
        w.write(b).await?;
    }
    w.finish(id).await
}

/// Read a segment's rows (optionally only some columns, returned in file
/// column order), in position order.
pub async fn read_segment(
    store: &Arc<dyn ObjectStore>,
    meta: &SegmentMeta,
    columns: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let bytes = store
        .get(&ObjPath::from(meta.path.as_str()))
        .await?
        .bytes()
        .await?;
    let columns = columns.map(<[usize]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
        if let Some(cols) = columns {
            let mask = ProjectionMask::roots(builder.parquet_schema(), cols);
            builder = builder.with_projection(mask);
        }
        let reader = builder.with_batch_size(8192).build()?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(crate::StorageError::from)
    })
    .await
    .map_err(|e| crate::StorageError::Invalid(format!("segment reader panicked: {e}")))?
}
