//! Parquet segments: immutable files holding the rows of one flushed buffer (or
//! of a compaction), in position order, through `object_store`.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchReader};
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
use crate::scaled::{self, FileColumns};
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
/// DELTA_BINARY_PACKED (steps, epochs, clock readings). Text of many
/// distinct values in its first rows (`sample`), such as the timestamps
/// DLProv keeps as TEXT, is DELTA_BYTE_ARRAY (each value stored as the
/// suffix it does not share with the previous one) instead of a dictionary
/// that would hold most of the values (measured on DLProv's `otrain`: its
/// two text columns 8.95 -> 5.35 MB per million rows). Floats stored as
/// scaled integers ([`crate::scaled`]) are BYTE_STREAM_SPLIT too: their
/// high bytes are zeros.
fn writer_props(schema: &SchemaRef, sample: Option<&RecordBatch>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page);
    for (i, field) in schema.fields().iter().enumerate() {
        let encoding = match field.data_type() {
            DataType::Float32 | DataType::Float64 => Encoding::BYTE_STREAM_SPLIT,
            DataType::Int64 if scaled::field_scale(field).is_some() => Encoding::BYTE_STREAM_SPLIT,
            DataType::Int32 | DataType::Int64 | DataType::Timestamp(_, _) | DataType::Date32 => {
                Encoding::DELTA_BINARY_PACKED
            }
            DataType::Utf8 if sample.is_some_and(|b| many_distinct(b.column(i))) => {
                Encoding::DELTA_BYTE_ARRAY
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

/// Rows of a text column looked at to judge its cardinality.
const SAMPLE_ROWS: usize = 4096;

/// Whether more than one in eight of the first [`SAMPLE_ROWS`] non-null
/// values of a text column is distinct (with at least 256 to judge by): a
/// row group's dictionary would then hold thousands of values.
fn many_distinct(array: &ArrayRef) -> bool {
    let Some(text) = array.as_string_opt::<i32>() else {
        return false;
    };
    let mut seen = 0;
    let mut distinct = HashSet::new();
    for value in text.iter().flatten().take(SAMPLE_ROWS) {
        seen += 1;
        distinct.insert(value);
    }
    seen >= 256 && distinct.len() * 8 > seen
}

/// Writes one Parquet segment batch by batch: a row group at a time is
/// held (encoded) in memory, the rest is in the object store. The file's
/// encodings are chosen at the first batch (`writer_props`); which float
/// columns are stored scaled, before it (`SegmentWriter::with_columns`).
pub struct SegmentWriter {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    columns: FileColumns,
    /// Opened by the first write (or by `finish`, for an empty segment).
    inner: Option<AsyncArrowWriter<BufWriter>>,
    rows: u64,
}

impl SegmentWriter {
    pub fn new(store: &Arc<dyn ObjectStore>, path: &ObjPath, schema: &SchemaRef) -> Self {
        SegmentWriter {
            store: Arc::clone(store),
            path: path.clone(),
            columns: FileColumns::plain(schema),
            inner: None,
            rows: 0,
        }
    }

    /// Store the columns as `columns` says (chosen from every row the file
    /// will hold: a batch written later must fit its scales).
    fn with_columns(mut self, columns: FileColumns) -> Self {
        self.columns = columns;
        self
    }

    /// Before the first write: store the columns as `batch`'s values allow
    /// (later batches go through [`SegmentWriter::write_fitting`]).
    pub fn choose_columns(&mut self, schema: &SchemaRef, batch: &RecordBatch) {
        if self.inner.is_none() {
            self.columns = FileColumns::choose(schema, std::slice::from_ref(batch));
        }
    }

    /// A Parquet writer with encodings chosen for `sample` (as stored).
    fn open(&self, sample: Option<&RecordBatch>) -> Result<AsyncArrowWriter<BufWriter>> {
        let out = BufWriter::new(Arc::clone(&self.store), self.path.clone());
        let schema = self.columns.file_schema();
        let props = writer_props(schema, sample);
        Ok(AsyncArrowWriter::try_new(
            out,
            Arc::clone(schema),
            Some(props),
        )?)
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let stored = self.columns.encode(batch)?;
        self.write_stored(batch.num_rows(), &stored).await
    }

    /// Write `batch` if its floats fit the scales chosen for the file;
    /// `false` (and nothing written) if they do not.
    pub async fn write_fitting(&mut self, batch: &RecordBatch) -> Result<bool> {
        let Some(stored) = self.columns.encode_fitting(batch)? else {
            return Ok(false);
        };
        self.write_stored(batch.num_rows(), &stored).await?;
        Ok(true)
    }

    async fn write_stored(&mut self, rows: usize, stored: &RecordBatch) -> Result<()> {
        self.rows += rows as u64;
        let inner = match &mut self.inner {
            Some(inner) => inner,
            None => self.inner.insert(self.open(Some(stored))?),
        };
        inner.write(stored).await?;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Finish the file; `id` is the source id the segment will have.
    pub async fn finish(mut self, id: SourceId) -> Result<SegmentMeta> {
        let inner = match self.inner.take() {
            Some(inner) => inner,
            None => self.open(None)?,
        };
        let meta = inner.close().await?;
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

/// Write `batches` (all with `schema`) as one Parquet segment, float
/// columns of short decimals stored scaled ([`crate::scaled`]).
pub async fn write_segment(
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    id: SourceId,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<SegmentMeta> {
    let mut w =
        SegmentWriter::new(store, path, schema).with_columns(FileColumns::choose(schema, batches));
    for b in batches {
        w.write(b).await?;
    }
    w.finish(id).await
}

/// Read a segment's rows (optionally only some columns, returned in file
/// column order), in position order, scaled columns back as doubles.
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
        let decoder = scaled::Decoder::for_schema(&reader.schema());
        reader
            .map(|batch| match (&decoder, batch) {
                (Some(d), Ok(b)) => d.decode(&b),
                (None, Ok(b)) => Ok(b),
                (_, Err(e)) => Err(e.into()),
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| crate::StorageError::Invalid(format!("segment reader panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use object_store::memory::InMemory;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// The whole file at `path`.
    async fn file_bytes(store: &Arc<dyn ObjectStore>, path: &ObjPath) -> bytes::Bytes {
        store
            .get(path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes")
    }

    /// The encodings of column `i` in the file's first row group.
    fn encodings(bytes: bytes::Bytes, i: usize) -> Vec<Encoding> {
        let reader = SerializedFileReader::new(bytes).expect("parquet");
        let meta = reader.metadata().row_group(0).column(i).clone();
        meta.encodings().collect()
    }

    #[tokio::test]
    async fn text_of_many_values_is_delta_encoded_and_repeated_text_has_a_dictionary() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("stamp", DataType::Utf8, true),
            Field::new("optimizer", DataType::Utf8, true),
        ]));
        let n = 10_000i64;
        let stamps: Vec<Option<String>> = (0..n)
            .map(|i| {
                (i % 97 != 0).then(|| format!("2025-07-01 00:{:02}:{:02}.{i}", i / 60 % 60, i % 60))
            })
            .collect();
        let optimizers: Vec<&str> = (0..n)
            .map(|i| ["adam", "sgd", "rmsprop"][i as usize % 3])
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from(stamps)),
                Arc::new(StringArray::from(optimizers)),
            ],
        )
        .expect("batch");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjPath::from("t/1.parquet");
        let meta = write_segment(
            &store,
            &path,
            SourceId(1),
            &schema,
            std::slice::from_ref(&batch),
        )
        .await
        .expect("write");
        assert_eq!(meta.rows, n as u64);
        let bytes = file_bytes(&store, &path).await;
        let stamp = encodings(bytes.clone(), 1);
        assert!(stamp.contains(&Encoding::DELTA_BYTE_ARRAY), "{stamp:?}");
        assert!(!stamp.contains(&Encoding::RLE_DICTIONARY), "{stamp:?}");
        let optimizer = encodings(bytes, 2);
        assert!(
            optimizer.contains(&Encoding::RLE_DICTIONARY),
            "{optimizer:?}"
        );

        let back = read_segment(&store, &meta, None).await.expect("read");
        let back = arrow::compute::concat_batches(&schema, &back).expect("concat");
        assert_eq!(back, batch);
    }

    #[tokio::test]
    async fn short_decimal_doubles_are_stored_scaled_and_read_back_as_written() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("loss", DataType::Float64, true),
            Field::new("root", DataType::Float64, true),
        ]));
        let batch = |from: i64| {
            let ids: Vec<i64> = (from..from + 5000).collect();
            let loss: Vec<Option<f64>> = ids
                .iter()
                .map(|i| (i % 9 != 0).then(|| (i * 7919 % 1_000_000) as f64 / 1e6))
                .collect();
            let root: Vec<f64> = ids.iter().map(|i| (*i as f64).sqrt()).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(Float64Array::from(loss)),
                    Arc::new(Float64Array::from(root)),
                ],
            )
            .expect("batch")
        };
        let batches = vec![batch(0), batch(5000)];
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjPath::from("t/3.parquet");
        let meta = write_segment(&store, &path, SourceId(3), &schema, &batches)
            .await
            .expect("write");
        let bytes = file_bytes(&store, &path).await;
        let reader = SerializedFileReader::new(bytes.clone()).expect("parquet");
        let columns = reader.metadata().row_group(0).columns();
        assert_eq!(columns[1].column_type(), parquet::basic::Type::INT64);
        assert_eq!(columns[2].column_type(), parquet::basic::Type::DOUBLE);
        assert!(encodings(bytes, 1).contains(&Encoding::BYTE_STREAM_SPLIT));

        let back = read_segment(&store, &meta, None).await.expect("read");
        let back = arrow::compute::concat_batches(&schema, &back).expect("concat");
        let written = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        assert_eq!(back, written);
        let loss = read_segment(&store, &meta, Some(&[1])).await.expect("read");
        assert_eq!(loss[0].schema().field(0).data_type(), &DataType::Float64);
        let rows = loss[0].num_rows();
        assert_eq!(loss[0].column(0), &written.column(1).slice(0, rows));
    }

    #[tokio::test]
    async fn an_empty_segment_is_a_valid_file() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjPath::from("t/2.parquet");
        let meta = write_segment(&store, &path, SourceId(2), &schema, &[])
            .await
            .expect("write");
        assert_eq!(meta.rows, 0);
        assert!(
            read_segment(&store, &meta, None)
                .await
                .expect("read")
                .is_empty()
        );
    }
}
