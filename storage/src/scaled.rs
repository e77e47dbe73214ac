//! Floating-point columns of short decimals, stored as scaled integers.
//!
//! Training scripts log metrics rounded to a few decimals (`0.082834`).
//! As doubles those fill every mantissa byte, so even split into byte
//! streams and compressed they cost six or seven bytes a value; as
//! integers times a power of ten (`82834 / 10^6`) they cost two or three.
//! When every value of a `Float64` column round-trips exactly through
//! `(v * 10^k).round() / 10^k` for one `k` (bit for bit: `-0.0`, NaN and
//! the infinities never do), a segment stores the column as `Int64` with
//! the scale `k` in the field's metadata ([`SCALE_KEY`]), and readers
//! divide it back. The idea is that of DuckDB's ALP, without its
//! exceptions: one value that does not fit keeps the whole column a
//! float.
//!
//! Decoding is `i as f64 / 10^k`, the very computation the round trip was
//! checked with, so the doubles read back are the doubles written. A query
//! engine reading the file itself must do the same (provdb's SQL layer
//! rewrites the column as `CAST(c AS DOUBLE) / 10^k`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};

use crate::error::{Result, StorageError};

/// Field metadata key holding a scaled column's decimal scale.
pub const SCALE_KEY: &str = "provdb.decimal_scale";

/// Largest scale tried: twelve decimals.
pub const MAX_SCALE: u8 = 12;

/// Largest integer stored: doubles hold integers exactly up to 2^53.
const MAX_INT: f64 = (1u64 << 53) as f64;

/// `10^k` as a double (exact for every scale used).
pub fn power(k: u8) -> f64 {
    10f64.powi(i32::from(k))
}

/// Whether `v` round-trips through the integer `(v * 10^k).round()`, as
/// [`FileColumns::encode`] and [`Decoder::decode`] compute it (through an
/// `i64`, which has no negative zero).
fn fits(v: f64, p: f64) -> bool {
    scaled_int(v, p).is_some()
}

/// `v` as the integer `(v * 10^k).round()`, when it round-trips ([`fits`]).
fn scaled_int(v: f64, p: f64) -> Option<i64> {
    let i = (v * p).round();
    (i.abs() <= MAX_INT && ((i as i64) as f64 / p).to_bits() == v.to_bits()).then_some(i as i64)
}

/// The smallest scale at which every non-null value of `arrays` round-trips,
/// or `None` (no value at all, or one that fits no scale up to
/// [`MAX_SCALE`]). A pass that has to raise the scale is followed by
/// another, since the values before the raise were checked at a smaller one.
pub fn common_scale(arrays: &[&Float64Array]) -> Option<u8> {
    let mut k = 0u8;
    let mut any = false;
    loop {
        let mut raised = false;
        let mut p = power(k);
        for array in arrays {
            for v in array.iter().flatten() {
                any = true;
                while !fits(v, p) {
                    k += 1;
                    if k > MAX_SCALE {
                        return None;
                    }
                    p = power(k);
                    raised = true;
                }
            }
        }
        if !any {
            return None;
        }
        if !raised {
            return Some(k);
        }
    }
}

/// How a table's columns are stored in one segment file: which `Float64`
/// columns are scaled, and the file's schema that follows.
#[derive(Debug, Clone)]
pub struct FileColumns {
    scales: Vec<Option<u8>>,
    file_schema: SchemaRef,
}

impl FileColumns {
    /// Every column as it is.
    pub fn plain(schema: &SchemaRef) -> Self {
        FileColumns {
            scales: vec![None; schema.fields().len()],
            file_schema: Arc::clone(schema),
        }
    }

    /// Scale every `Float64` column of `batches` (all with `schema`) whose
    /// values allow it.
    pub fn choose(schema: &SchemaRef, batches: &[RecordBatch]) -> Self {
        let scales: Vec<Option<u8>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, field)| {
                if field.data_type() != &DataType::Float64 {
                    return None;
                }
                let arrays: Vec<&Float64Array> = batches
                    .iter()
                    .filter_map(|b| b.column(i).as_primitive_opt::<Float64Type>())
                    .collect();
                if arrays.len() != batches.len() {
                    return None;
                }
                common_scale(&arrays)
            })
            .collect();
        if scales.iter().all(Option::is_none) {
            return Self::plain(schema);
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(&scales)
            .map(|(field, scale)| match scale {
                Some(k) => {
                    let mut metadata = field.metadata().clone();
                    metadata.insert(SCALE_KEY.to_string(), k.to_string());
                    Field::new(field.name(), DataType::Int64, field.is_nullable())
                        .with_metadata(metadata)
                }
                None => field.as_ref().clone(),
            })
            .collect();
        let file_schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        FileColumns {
            scales,
            file_schema,
        }
    }

    /// `batch` (with the table's schema) as the file stores it, or `None`
    /// when a value of a scaled column does not fit its scale (checked as
    /// it is scaled, in the same pass). For columns chosen from other rows.
    pub fn encode_fitting(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        convert_scaled(batch, &self.scales, &self.file_schema, |column, p| {
            let floats = column.as_primitive_opt::<Float64Type>()?;
            let ints = floats
                .try_unary::<_, Int64Type, ()>(|v| scaled_int(v, p).ok_or(()))
                .ok()?;
            Some(Arc::new(ints))
        })
    }

    /// The schema the file is written with.
    pub fn file_schema(&self) -> &SchemaRef {
        &self.file_schema
    }

    /// `batch` (with the table's schema) as the file stores it: columns
    /// chosen from its own rows, which therefore fit.
    pub fn encode(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        self.encode_fitting(batch)?.ok_or_else(|| {
            StorageError::Invalid("a float does not fit the scale chosen for its column".into())
        })
    }
}

/// `batch` as `schema`, each scaled column (a scale in `scales`) replaced
/// by `convert(column, 10^k)`; `None` when that gives `None` for one.
fn convert_scaled(
    batch: &RecordBatch,
    scales: &[Option<u8>],
    schema: &SchemaRef,
    convert: impl Fn(&ArrayRef, f64) -> Option<ArrayRef>,
) -> Result<Option<RecordBatch>> {
    if scales.iter().all(Option::is_none) {
        return Ok(Some(batch.clone()));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(scales.len());
    for (column, scale) in batch.columns().iter().zip(scales) {
        match scale {
            None => columns.push(Arc::clone(column)),
            Some(k) => match convert(column, power(*k)) {
                Some(converted) => columns.push(converted),
                None => return Ok(None),
            },
        }
    }
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

/// The scale of a file field, when it is a scaled column.
pub fn field_scale(field: &Field) -> Option<u8> {
    if field.data_type() != &DataType::Int64 {
        return None;
    }
    field.metadata().get(SCALE_KEY)?.parse().ok()
}

/// Turns batches read from a file back into the table's types.
#[derive(Debug)]
pub struct Decoder {
    scales: Vec<Option<u8>>,
    schema: SchemaRef,
}

impl Decoder {
    /// A decoder for batches of `file_schema`, or `None` when no column is
    /// scaled (the batches are then used as read).
    pub fn for_schema(file_schema: &Schema) -> Option<Self> {
        let scales: Vec<Option<u8>> = file_schema
            .fields()
            .iter()
            .map(|f| field_scale(f))
            .collect();
        if scales.iter().all(Option::is_none) {
            return None;
        }
        let fields: Vec<Field> = file_schema
            .fields()
            .iter()
            .zip(&scales)
            .map(|(field, scale)| match scale {
                Some(_) => {
                    let metadata: HashMap<String, String> = field
                        .metadata()
                        .iter()
                        .filter(|(k, _)| k.as_str() != SCALE_KEY)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    Field::new(field.name(), DataType::Float64, field.is_nullable())
                        .with_metadata(metadata)
                }
                None => field.as_ref().clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            file_schema.metadata().clone(),
        ));
        Some(Decoder { scales, schema })
    }

    /// The schema of decoded batches: the file's, scaled columns as doubles.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The scale of each column of the file schema, if scaled.
    pub fn scales(&self) -> &[Option<u8>] {
        &self.scales
    }

    /// `batch` (with the file schema this decoder was made for) with its
    /// scaled columns as doubles; every output shares one schema object.
    pub fn decode(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let decoded = convert_scaled(batch, &self.scales, &self.schema, |column, p| {
            let ints = column.as_primitive_opt::<Int64Type>()?;
            Some(Arc::new(ints.unary::<_, Float64Type>(|i| i as f64 / p)))
        })?;
        decoded
            .ok_or_else(|| StorageError::Invalid("a scaled column is not stored as Int64".into()))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    fn floats(values: &[Option<f64>]) -> Float64Array {
        Float64Array::from(values.to_vec())
    }

    #[test]
    fn the_smallest_scale_that_holds_every_value() {
        let a = floats(&[Some(0.5), None, Some(0.082834), Some(12.0)]);
        let b = floats(&[Some(-3.25), Some(1e-6)]);
        assert_eq!(common_scale(&[&a, &b]), Some(6));
        assert_eq!(common_scale(&[&floats(&[Some(3.0), Some(-7.0)])]), Some(0));
        // A raise late in the values still checks the early ones again.
        let late = floats(&[Some(0.1), Some(0.25), Some(0.125)]);
        assert_eq!(common_scale(&[&late]), Some(3));
    }

    #[test]
    fn values_no_scale_holds_keep_the_column_a_float() {
        for bad in [
            -0.0,
            f64::NAN,
            f64::INFINITY,
            std::f64::consts::PI,
            0.1f32 as f64,
            1e300,
        ] {
            let a = floats(&[Some(0.5), Some(bad)]);
            assert_eq!(common_scale(&[&a]), None, "{bad}");
        }
        assert_eq!(common_scale(&[&floats(&[None, None])]), None);
        assert_eq!(common_scale(&[]), None);
    }

    #[test]
    fn encoding_columns_chosen_from_other_rows_checks_every_value() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, true)]));
        let batch = |values: &[Option<f64>]| {
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(floats(values))]).unwrap()
        };
        let chosen = FileColumns::choose(&schema, &[batch(&[Some(0.25), Some(1.5)])]);
        // Fits two decimals, NULLs included: the same as `encode`.
        let fits = batch(&[Some(0.75), None, Some(-3.0)]);
        let encoded = chosen.encode_fitting(&fits).unwrap().expect("fits");
        assert_eq!(encoded, chosen.encode(&fits).unwrap());
        assert_eq!(encoded.column(0).null_count(), 1);
        // Three decimals, or none at all, do not.
        for bad in [0.125, std::f64::consts::PI, -0.0] {
            let b = batch(&[Some(0.5), Some(bad)]);
            assert!(chosen.encode_fitting(&b).unwrap().is_none(), "{bad}");
        }
        // Plain columns take anything.
        let plain = FileColumns::plain(&schema);
        let any = batch(&[Some(std::f64::consts::PI)]);
        assert_eq!(plain.encode_fitting(&any).unwrap(), Some(any));
    }

    #[test]
    fn encode_then_decode_gives_back_the_same_bits() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("loss", DataType::Float64, true),
            Field::new("noise", DataType::Float64, true),
        ]));
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let n = 5000;
        let loss: Vec<Option<f64>> = (0..n)
            .map(|i| (i % 13 != 0).then(|| ((next() * 1e6).round() - 5e5) / 1e6))
            .collect();
        let noise: Vec<Option<f64>> = (0..n).map(|_| Some(next())).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(arrow::array::Int64Array::from_iter_values(0..n as i64)),
                Arc::new(Float64Array::from(loss)),
                Arc::new(Float64Array::from(noise)),
            ],
        )
        .expect("batch");
        let columns = FileColumns::choose(&schema, std::slice::from_ref(&batch));
        let file = columns.file_schema();
        assert_eq!(file.field(1).data_type(), &DataType::Int64);
        assert_eq!(field_scale(file.field(1)), Some(6));
        assert_eq!(file.field(2).data_type(), &DataType::Float64);
        let stored = columns.encode(&batch).expect("encode");
        let decoder = Decoder::for_schema(file).expect("a scaled column");
        let back = decoder.decode(&stored).expect("decode");
        assert_eq!(back.schema(), schema);
        let (a, b) = (
            batch.column(1).as_primitive::<Float64Type>(),
            back.column(1).as_primitive::<Float64Type>(),
        );
        assert_eq!(a.nulls(), b.nulls());
        for (x, y) in a.iter().zip(b.iter()) {
            assert_eq!(x.map(f64::to_bits), y.map(f64::to_bits));
        }
        assert_eq!(back, batch);
        assert!(Decoder::for_schema(&schema).is_none());
    }
}
