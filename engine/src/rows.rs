//! Rows as dynamic values, and their conversion to and from Arrow batches of
//! a table's schema. The ingest paths build rows one at a time and hand
//! storage one batch per table.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int32Array,
    Int32Builder, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use crate::error::{EngineError, Result};

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

impl Value {
    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into())
    }

    pub fn opt_text(s: Option<&str>) -> Value {
        s.map_or(Value::Null, |s| Value::Text(s.to_string()))
    }

    pub fn opt_int(v: Option<i64>) -> Value {
        v.map_or(Value::Null, Value::Int)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// A row: one value per column of the table, in column order.
pub type Row = Vec<Value>;

/// Build a batch of `schema` from rows.
pub fn rows_to_batch(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let cell = |r: &Row| r.get(i).cloned().unwrap_or(Value::Null);
        let array: ArrayRef = match field.data_type() {
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Value::Int(v) => b.append_value(i32::try_from(v).map_err(|_| {
                            EngineError::Invalid(format!(
                                "value {v} is out of range for integer column \"{}\"",
                                field.name()
                            ))
                        })?),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Value::Int(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Value::Float(v) => b.append_value(v),
                        Value::Int(v) => b.append_value(v as f64),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
                for r in rows {
                    match cell(r) {
                        Value::Text(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(rows.len());
                for r in rows {
                    match cell(r) {
                        Value::Bool(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Timestamp(TimeUnit::Microsecond, tz) => {
                // Values are microseconds since the epoch.
                let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len())
                    .with_timezone_opt(tz.clone());
                for r in rows {
                    match cell(r) {
                        Value::Int(v) => b.append_value(v),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                return Err(EngineError::internal(format!(
                    "column \"{}\" has type {other}, which row building does not support",
                    field.name()
                )));
            }
        };
        columns.push(array);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// Read row `i` of `batch` back as values.
pub fn batch_row(batch: &RecordBatch, i: usize) -> Result<Row> {
    batch
        .columns()
        .iter()
        .map(|c| cell_value(c.as_ref(), i))
        .collect()
}

fn cell_value(array: &dyn Array, i: usize) -> Result<Value> {
    if array.is_null(i) {
        return Ok(Value::Null);
    }
    let any = array.as_any();
    if let Some(a) = any.downcast_ref::<Int32Array>() {
        return Ok(Value::Int(i64::from(a.value(i))));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok(Value::Int(a.value(i)));
    }
    if let Some(a) = any.downcast_ref::<Float64Array>() {
        return Ok(Value::Float(a.value(i)));
    }
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Ok(Value::Text(a.value(i).to_string()));
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return Ok(Value::Bool(a.value(i)));
    }
    Err(EngineError::internal(format!(
        "reading a {} cell is not supported",
        array.data_type()
    )))
}
