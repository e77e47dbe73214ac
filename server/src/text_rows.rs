//! Text-format DataRows written straight from Arrow arrays.
//!
//! Most result sets are all-text (psql, psycopg and JDBC's simple queries
//! ask for text) and made of strings, integers, booleans, floats and
//! timestamps. For those, this module writes every row of a batch into one
//! buffer — a 4-byte length (-1 for NULL) then the value's text, column by
//! column — and splits it into DataRows, instead of going value by value
//! through `arrow-pg`'s generic encoder. The text is the same byte for byte
//! (the tests compare the two); any other batch — a binary column, a type
//! not listed here, a field carrying PostgreSQL type metadata such as
//! `"char"` or `oid` — returns `None` and takes the generic path.

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::messages::data::DataRow;

use crate::pg_text;

/// All of `batch` as text DataRows, or `None` when some column needs the
/// generic encoder.
pub fn encode(batch: &RecordBatch, fields: &[FieldInfo]) -> Option<Vec<DataRow>> {
    let field_count = i16::try_from(fields.len()).ok()?;
    let columns = prepare(batch, fields)?;
    let rows = batch.num_rows();
    let mut buf = BytesMut::with_capacity(rows * columns.iter().map(Column::width).sum::<usize>());
    let mut ends = Vec::with_capacity(rows);
    let mut scratch = Scratch::default();
    for row in 0..rows {
        for column in &columns {
            column.write(row, &mut buf, &mut scratch);
        }
        ends.push(buf.len());
    }
    let mut start = 0;
    Some(
        ends.into_iter()
            .map(|end| {
                let data = buf.split_to(end - start);
                start = end;
                DataRow::new(data, field_count)
            })
            .collect(),
    )
}

/// The batch's columns in writable form, if every one of them has one.
fn prepare(batch: &RecordBatch, fields: &[FieldInfo]) -> Option<Vec<Column>> {
    if batch.num_columns() != fields.len() {
        return None;
    }
    let schema = batch.schema();
    batch
        .columns()
        .iter()
        .zip(schema.fields())
        .zip(fields)
        .map(|((array, arrow_field), pg_field)| {
            let plain = pg_field.format() == FieldFormat::Text && arrow_field.metadata().is_empty();
            if plain { Column::new(array) } else { None }
        })
        .collect()
}

/// One column's values, in the array type its text is written from.
enum Column {
    Null,
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Bool(BooleanArray),
    /// Every integer type that PostgreSQL prints as a decimal integer
    /// (`UInt64` is not one: it goes out as `numeric`).
    Int(Int64Array),
    /// `float4` is widened first, as the generic path prints it.
    Float(Float64Array),
}

impl Column {
    fn new(array: &ArrayRef) -> Option<Column> {
        let widened = |to: &DataType| cast(array, to).ok();
        Some(match array.data_type() {
            DataType::Null => Column::Null,
            DataType::Utf8 => Column::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => Column::LargeUtf8(array.as_string::<i64>().clone()),
            DataType::Utf8View => Column::Utf8View(array.as_string_view().clone()),
            DataType::Boolean => Column::Bool(array.as_boolean().clone()),
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Column::Int(
                widened(&DataType::Int64)?
                    .as_primitive::<Int64Type>()
                    .clone(),
            ),
            DataType::Float32 | DataType::Float64 => Column::Float(
                widened(&DataType::Float64)?
                    .as_primitive::<Float64Type>()
                    .clone(),
            ),
            DataType::Timestamp(_, _) => Column::Utf8(pg_text::render(array)?),
            _ => return None,
        })
    }

    /// A guess at the bytes one value takes on the wire, length included.
    fn width(&self) -> usize {
        match self {
            Column::Null => 4,
            Column::Bool(_) => 5,
            Column::Int(_) => 10,
            Column::Float(_) => 16,
            Column::Utf8(a) => 4 + a.value_data().len() / a.len().max(1),
            Column::LargeUtf8(a) => 4 + a.value_data().len() / a.len().max(1),
            Column::Utf8View(_) => 20,
        }
    }

    /// Append value `row`: its length then its text, or -1 for NULL.
    fn write(&self, row: usize, buf: &mut BytesMut, scratch: &mut Scratch) {
        match self.text(row, scratch) {
            Some(text) => {
                // A value never nears 2 GiB: batches are far smaller.
                buf.put_i32(text.len() as i32);
                buf.put_slice(text);
            }
            None => buf.put_i32(-1),
        }
    }

    /// The text of value `row`, `None` for NULL.
    fn text<'a>(&'a self, row: usize, scratch: &'a mut Scratch) -> Option<&'a [u8]> {
        Some(match self {
            Column::Null => return None,
            Column::Utf8(a) => present(a, row)?.value(row).as_bytes(),
            Column::LargeUtf8(a) => present(a, row)?.value(row).as_bytes(),
            Column::Utf8View(a) => present(a, row)?.value(row).as_bytes(),
            Column::Bool(a) if present(a, row)?.value(row) => b"t",
            Column::Bool(_) => b"f",
            Column::Int(a) => scratch.int.format(present(a, row)?.value(row)).as_bytes(),
            Column::Float(a) => {
                let v = present(a, row)?.value(row);
                scratch.float.clear();
                pg_text::push_float(v, &mut scratch.float);
                scratch.float.as_bytes()
            }
        })
    }
}

/// `array` if its value `row` is not NULL.
fn present<A: Array>(array: &A, row: usize) -> Option<&A> {
    array.is_valid(row).then_some(array)
}

/// Reused buffers for formatting numbers.
#[derive(Default)]
struct Scratch {
    int: itoa::Buffer,
    float: String,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{
        Float32Array, Int8Array, Int16Array, Int32Array, NullArray, TimestampMicrosecondArray,
        UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use pgwire::api::portal::Format;

    use crate::results::pg_fields;

    /// The generic encoder's rows for the same batch.
    fn generic(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> Vec<DataRow> {
        let batch = pg_text::textify(batch.clone(), fields);
        arrow_pg::encode_recordbatch(fields.clone(), batch)
            .collect::<Result<_, _>>()
            .expect("generic encoding")
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
    }

    fn assert_same_as_generic(batch: &RecordBatch) {
        let fields = pg_fields(&batch.schema(), &Format::UnifiedText).expect("fields");
        let fast = encode(batch, &fields).expect("fast path taken");
        assert_eq!(fast, generic(batch, &fields));
    }

    #[test]
    fn every_supported_type_matches_the_generic_encoder() {
        let ts = TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_000), None, Some(0)]);
        let b = batch(vec![
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("")])),
            ),
            (
                "ls",
                Arc::new(LargeStringArray::from(vec![Some("wide"), Some("é"), None])),
            ),
            (
                "v",
                Arc::new(StringViewArray::from(vec![
                    None,
                    Some("a string longer than twelve bytes"),
                    Some("x"),
                ])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "i8",
                Arc::new(Int8Array::from(vec![Some(-128), None, Some(7)])),
            ),
            ("i16", Arc::new(Int16Array::from(vec![1, -2, i16::MAX]))),
            (
                "i32",
                Arc::new(Int32Array::from(vec![None, Some(i32::MIN), Some(0)])),
            ),
            ("i64", Arc::new(Int64Array::from(vec![i64::MAX, -1, 42]))),
            ("u8", Arc::new(UInt8Array::from(vec![255, 0, 1]))),
            ("u16", Arc::new(UInt16Array::from(vec![65535, 0, 1]))),
            ("u32", Arc::new(UInt32Array::from(vec![u32::MAX, 0, 1]))),
            (
                "f32",
                Arc::new(Float32Array::from(vec![Some(0.1), None, Some(-3.0)])),
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![1e20, f64::NAN, -0.000_012_5])),
            ),
            ("ts", Arc::new(ts)),
            (
                "tstz",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(5_000_000), None, Some(1)])
                        .with_timezone("UTC"),
                ),
            ),
            ("n", Arc::new(NullArray::new(3))),
        ]);
        assert_same_as_generic(&b);
    }

    #[test]
    fn sliced_and_empty_batches_match() {
        let b = batch(vec![
            (
                "id",
                Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())),
            ),
            (
                "name",
                Arc::new(StringArray::from(
                    (0..100).map(|i| format!("row {i}")).collect::<Vec<_>>(),
                )),
            ),
        ]);
        assert_same_as_generic(&b.slice(37, 20));
        assert_same_as_generic(&b.slice(0, 0));
    }

    #[test]
    fn other_batches_take_the_generic_path() {
        let b = batch(vec![("id", Arc::new(Int32Array::from(vec![1])))]);
        let binary = pg_fields(&b.schema(), &Format::UnifiedBinary).expect("fields");
        assert!(encode(&b, &binary).is_none(), "binary results");

        let wide = batch(vec![("u", Arc::new(UInt64Array::from(vec![1u64])))]);
        let fields = pg_fields(&wide.schema(), &Format::UnifiedText).expect("fields");
        assert!(encode(&wide, &fields).is_none(), "uint64 is numeric");

        let tagged = Field::new("c", DataType::Int32, false)
            .with_metadata([("pg.oid_alias".to_string(), "oid".to_string())].into());
        let schema = Arc::new(Schema::new(vec![tagged]));
        let oid =
            RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![7]))]).expect("batch");
        let fields = pg_fields(&oid.schema(), &Format::UnifiedText).expect("fields");
        assert!(encode(&oid, &fields).is_none(), "typed by metadata");
    }
}
