//! Reading whole tables for export and import, and Arrow cells as PROV
//! values.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDateTime, Utc};
use provdb_storage::Storage;

use super::model::Value;
use crate::error::{EngineError, Result};

/// Every live row of `namespace.name` (no rows when the table is missing).
pub async fn live_batches(
    storage: &Storage,
    namespace: &str,
    name: &str,
) -> Result<Vec<RecordBatch>> {
    let Some(def) = storage.table_by_name(namespace, name) else {
        return Ok(Vec::new());
    };
    let snap = storage.snapshot(def.id).map_err(EngineError::from)?;
    let parts = storage.read_live(&snap).await.map_err(EngineError::from)?;
    Ok(parts.into_iter().map(|p| p.batch).collect())
}

/// A column by name.
pub fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a ArrayRef> {
    batch.schema().index_of(name).ok().map(|i| batch.column(i))
}

/// Several columns by name, all present or `None`.
pub fn columns<'a, const N: usize>(
    batch: &'a RecordBatch,
    names: [&str; N],
) -> Option<[&'a ArrayRef; N]> {
    let mut out = [batch.columns().first()?; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = column(batch, name)?;
    }
    Some(out)
}

/// An integer cell (any integer type).
pub fn int_at(a: &ArrayRef, row: usize) -> Option<i64> {
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Int64 => Some(a.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
        DataType::Int32 => Some(a.as_primitive::<arrow::datatypes::Int32Type>().value(row) as i64),
        DataType::Int16 => Some(a.as_primitive::<arrow::datatypes::Int16Type>().value(row) as i64),
        _ => None,
    }
}

/// A text cell.
pub fn str_at(a: &ArrayRef, row: usize) -> Option<&str> {
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(a.as_string_view().value(row)),
        _ => None,
    }
}

/// Microseconds since the epoch as an xsd:dateTime (UTC, `Z`).
pub fn micros_to_datetime(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string())
        .unwrap_or_else(|| us.to_string())
}

/// Parse an xsd:dateTime (with or without zone; no zone means UTC) or the
/// `YYYY-MM-DD HH:MM:SS[.f]` form DLProv stores, to microseconds.
pub fn datetime_to_micros(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

/// A DLProv time string (`YYYY-MM-DD HH:MM:SS`, stored without a zone) as
/// an xsd:dateTime, read as UTC (the zone the `prov` tables store), or
/// `None` when it is not a time.
pub fn dlprov_time(s: &str) -> Option<String> {
    datetime_to_micros(s).map(micros_to_datetime)
}

/// A cell as a typed PROV value; `None` for NULL.
pub fn cell_value(a: &ArrayRef, row: usize) -> Option<Value> {
    if a.is_null(row) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Value::Str(str_at(a, row)?.to_string())
        }
        DataType::Int32 | DataType::Int16 => Value::typed(int_at(a, row)?.to_string(), "xsd:int"),
        DataType::Int64 => Value::long(int_at(a, row)?),
        DataType::Float64 => {
            Value::double(a.as_primitive::<arrow::datatypes::Float64Type>().value(row))
        }
        DataType::Float32 => {
            Value::double(a.as_primitive::<arrow::datatypes::Float32Type>().value(row) as f64)
        }
        DataType::Boolean => Value::Bool(a.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Value::typed(
            micros_to_datetime(
                a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                    .value(row),
            ),
            "xsd:dateTime",
        ),
        _ => {
            let f = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default()).ok()?;
            Value::Str(f.value(row).to_string())
        }
    })
}

/// A timestamp cell in microseconds.
pub fn micros_at(a: &ArrayRef, row: usize) -> Option<i64> {
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(
            a.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(row),
        ),
        _ => None,
    }
}
