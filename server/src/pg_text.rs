//! PostgreSQL's text output for types whose Arrow rendering differs:
//! `float8` prints `3` not `3.0` and switches to exponent form like
//! PostgreSQL (`1e+20`, `1e-07`); timestamps print `2026-01-02 03:04:05`
//! with trailing fractional zeros dropped and `+00` for time zones. Only
//! text-format columns are rewritten; binary results keep their types.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// Rewrite the text-format float and timestamp columns of `batch`.
pub fn textify(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let needs = |i: usize, dt: &DataType| {
        fields
            .get(i)
            .is_some_and(|f| f.format() == FieldFormat::Text)
            && matches!(
                dt,
                DataType::Float32 | DataType::Float64 | DataType::Timestamp(_, _)
            )
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .any(|(i, f)| needs(i, f.data_type()))
    {
        return batch;
    }
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut out_fields: Vec<Field> = Vec::with_capacity(batch.num_columns());
    for (i, (field, col)) in batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .enumerate()
    {
        let rendered = if needs(i, field.data_type()) {
            render(col)
        } else {
            None
        };
        match rendered {
            Some(text) => {
                out_fields.push(Field::new(field.name(), DataType::Utf8, true));
                cols.push(Arc::new(text));
            }
            None => {
                out_fields.push(field.as_ref().clone());
                cols.push(Arc::clone(col));
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(out_fields)), cols).unwrap_or(batch)
}

fn render(col: &ArrayRef) -> Option<StringArray> {
    match col.data_type() {
        DataType::Float64 => {
            let a = col.as_any().downcast_ref::<Float64Array>()?;
            Some(a.iter().map(|v| v.map(float_text)).collect())
        }
        DataType::Float32 => {
            let a = col.as_any().downcast_ref::<Float32Array>()?;
            Some(a.iter().map(|v| v.map(|f| float_text(f as f64))).collect())
        }
        DataType::Timestamp(_, tz) => {
            let fmt = if tz.is_some() {
                "%Y-%m-%d %H:%M:%S%.f%:::z"
            } else {
                "%Y-%m-%d %H:%M:%S%.f"
            };
            let opts = FormatOptions::default()
                .with_timestamp_format(Some(fmt))
                .with_timestamp_tz_format(Some(fmt));
            let f = ArrayFormatter::try_new(col.as_ref(), &opts).ok()?;
            Some(
                (0..col.len())
                    .map(|i| (!col.is_null(i)).then(|| trim_fraction(&f.value(i).to_string())))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// `float8` text as PostgreSQL (extra_float_digits = 1) prints it.
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

/// Drop trailing zeros of the fractional seconds (`05.120000` → `05.12`).
fn trim_fraction(s: &str) -> String {
    let Some(dot) = s.find('.') else {
        return s.to_string();
    };
    let end = s[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| dot + 1 + i)
        .unwrap_or(s.len());
    let frac = s[dot + 1..end].trim_end_matches('0');
    let head = &s[..dot];
    let tail = &s[end..];
    if frac.is_empty() {
        format!("{head}{tail}")
    } else {
        format!("{head}.{frac}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(float_text(3.0), "3");
        assert_eq!(float_text(2.5), "2.5");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(1e20), "1e+20");
        assert_eq!(float_text(1.5e-7), "1.5e-07");
        assert_eq!(float_text(123456789012345.0), "123456789012345");
        assert_eq!(float_text(f64::NAN), "NaN");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn fractions_are_trimmed() {
        assert_eq!(
            trim_fraction("2026-01-02 03:04:05.120000"),
            "2026-01-02 03:04:05.12"
        );
        assert_eq!(
            trim_fraction("2026-01-02 03:04:05.000000+00"),
            "2026-01-02 03:04:05+00"
        );
        assert_eq!(trim_fraction("2026-01-02 03:04:05"), "2026-01-02 03:04:05");
    }
}
