//! PostgreSQL's text output for types whose Arrow rendering differs:
//! `float8` prints `3` not `3.0` and switches to exponent form like
//! PostgreSQL (`1e+20`, `1e-07`); timestamps print `2026-01-02 03:04:05`
//! with trailing fractional zeros dropped and `+00` for time zones. Only
//! text-format columns are rewritten; binary results keep their types.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, RecordBatch, StringArray, StringBuilder,
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

pub(crate) fn render(col: &ArrayRef) -> Option<StringArray> {
    match col.data_type() {
        DataType::Float64 => {
            let a = col.as_any().downcast_ref::<Float64Array>()?;
            Some(floats_text(a.iter()))
        }
        DataType::Float32 => {
            let a = col.as_any().downcast_ref::<Float32Array>()?;
            Some(floats_text(a.iter().map(|v| v.map(f64::from))))
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

/// A column of floats as text, written into one buffer.
fn floats_text(values: impl ExactSizeIterator<Item = Option<f64>>) -> StringArray {
    let mut b = StringBuilder::with_capacity(values.len(), values.len() * 12);
    let mut text = String::with_capacity(32);
    for v in values {
        match v {
            Some(v) => {
                text.clear();
                push_float(v, &mut text);
                b.append_value(&text);
            }
            None => b.append_null(),
        }
    }
    b.finish()
}

/// Append `v` as PostgreSQL prints a `float8`: the shortest digits that
/// read back as `v`, in positional form for decimal exponents -4 to 14
/// and as `1.5e-07` / `1e+20` outside them. One shortest-digits conversion
/// (Rust's `{:e}`, into a stack buffer); the positional form is laid out
/// from its digits, with no allocation.
pub(crate) fn push_float(v: f64, out: &mut String) {
    if v.is_nan() {
        return out.push_str("NaN");
    }
    if v.is_infinite() {
        return out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if v == 0.0 {
        return out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
    }
    let mut sci = StackText::default();
    // `{:e}` of a finite f64 is at most 24 bytes ("-2.2250738585072014e-308").
    let _ = write!(sci, "{v:e}");
    let sci = sci.as_str();
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..15).contains(&exp) {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push('0');
        }
        let _ = write!(out, "{e}");
        return;
    }
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    if negative {
        out.push('-');
    }
    let (lead, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if exp < 0 {
        out.push_str("0.");
        push_zeros(out, (-exp - 1) as usize);
        out.push_str(lead);
        out.push_str(rest);
        return;
    }
    // `exp` digits of `rest` go before the point (padded with zeros).
    let whole = exp as usize;
    out.push_str(lead);
    if rest.len() <= whole {
        out.push_str(rest);
        push_zeros(out, whole - rest.len());
    } else {
        out.push_str(&rest[..whole]);
        out.push('.');
        out.push_str(&rest[whole..]);
    }
}

fn push_zeros(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n('0', n));
}

/// A small text buffer on the stack for one formatted number.
#[derive(Default)]
struct StackText {
    buf: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
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

    fn float_text(v: f64) -> String {
        let mut out = String::new();
        push_float(v, &mut out);
        out
    }

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
        assert_eq!(float_text(-0.0), "-0");
        assert_eq!(float_text(-0.00012), "-0.00012");
        assert_eq!(float_text(0.000012), "1.2e-05");
        assert_eq!(float_text(-1e15), "-1e+15");
        assert_eq!(float_text(100.0), "100");
        assert_eq!(float_text(f64::MIN_POSITIVE), "2.2250738585072014e-308");
    }

    /// The earlier implementation (two conversions, three allocations):
    /// the faster one must print every value the same way.
    fn reference(v: f64) -> String {
        let sci = format!("{v:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if !(-4..15).contains(&exp) {
            let sign = if exp < 0 { '-' } else { '+' };
            return format!("{mantissa}e{sign}{:02}", exp.abs());
        }
        format!("{v}")
    }

    #[test]
    fn positional_floats_are_laid_out_like_the_display_form() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200_000 {
            let v = match i % 3 {
                0 => f64::from_bits(next()),
                1 => (next() % 10_000_000) as f64 / 1e6,
                _ => (next() % 1_000_000_000) as f64 * 10f64.powi((next() % 40) as i32 - 20),
            };
            if v.is_finite() && v != 0.0 {
                assert_eq!(float_text(v), reference(v), "{v:e}");
            }
        }
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
