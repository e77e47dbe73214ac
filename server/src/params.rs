//! Bind parameter decoding: turns the raw bytes of a Bind message (text or
//! binary format, one per `$n`) into [`ScalarValue`]s of the Arrow types the
//! prepared statement expects.
//!
//! Text values are parsed as strings and cast with Arrow's cast kernels (which
//! accept Postgres' text forms: `t`/`f`, ISO dates and timestamps, decimals).
//! Binary values are decoded according to their Postgres type (the client's
//! declared OID, else the type the server advertised), then cast.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use postgres_types::FromSql;
use provdb_sql::SqlError;

use crate::types::pg_type_for_arrow;

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One bound parameter as it arrived on the wire.
#[derive(Debug, Clone, Copy)]
pub struct RawParam<'a> {
    /// The bytes, `None` for SQL NULL.
    pub value: Option<&'a [u8]>,
    /// Binary (`true`) or text format.
    pub binary: bool,
    /// The type the client declared at Parse, if any.
    pub client_type: Option<&'a Type>,
}

/// Check a Bind format-code list against the number of values it describes:
/// PostgreSQL allows zero codes, one code for all, or one code per value.
pub fn check_format_count(format: &Format, count: usize, what: &str) -> Result<(), SqlError> {
    match format {
        Format::Individual(codes) if codes.len() != count => Err(SqlError::new(
            "08P01",
            format!(
                "bind message has {} {what} formats but {count} {what}s",
                codes.len()
            ),
        )),
        _ => Ok(()),
    }
}

/// Decode every parameter to the statement's expected types.
pub fn decode_params(
    raw: &[RawParam<'_>],
    expected: &[DataType],
) -> Result<Vec<ScalarValue>, SqlError> {
    if raw.len() != expected.len() {
        return Err(SqlError::new(
            "08P01",
            format!(
                "bind message supplies {} parameters, but prepared statement requires {}",
                raw.len(),
                expected.len()
            ),
        ));
    }
    raw.iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (p, dt))| decode_param(p, dt).map_err(|e| with_param_context(e, i + 1)))
        .collect()
}

fn with_param_context(mut err: SqlError, n: usize) -> SqlError {
    err.message = format!("parameter ${n}: {}", err.message);
    err
}

/// Decode one parameter to `target` (`DataType::Null` keeps its natural type).
pub fn decode_param(p: &RawParam<'_>, target: &DataType) -> Result<ScalarValue, SqlError> {
    let Some(bytes) = p.value else {
        return null_of(target);
    };
    let wire_type = match p.client_type {
        Some(t) if *t != Type::UNKNOWN => t.clone(),
        _ => pg_type_for_arrow(target),
    };
    let natural = if p.binary {
        decode_binary(&wire_type, bytes)?
    } else {
        decode_text(&wire_type, bytes)?
    };
    let natural = match natural {
        // A numeric assigned to an integer rounds, ties away from zero.
        ScalarValue::Utf8(Some(text)) if wire_type == Type::NUMERIC && target.is_integer() => {
            ScalarValue::Utf8(Some(rounded_numeric(&text).unwrap_or(text)))
        }
        other => other,
    };
    coerce(natural, target)
}

/// A numeric's decimal text (`-7.5`) rounded to a whole number's text as
/// PostgreSQL rounds a numeric it assigns to an integer: ties away from
/// zero (`-8`). `None` for text that is not plain decimal notation.
fn rounded_numeric(text: &str) -> Option<String> {
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let decimal = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !decimal(whole) || !decimal(fraction) {
        return None;
    }
    let mut n: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    if fraction.as_bytes().first().is_some_and(|&d| d >= b'5') {
        n = n.checked_add(1)?;
    }
    let sign = if negative && n != 0 { "-" } else { "" };
    Some(format!("{sign}{n}"))
}

fn null_of(target: &DataType) -> Result<ScalarValue, SqlError> {
    ScalarValue::try_from(target)
        .map_err(|e| SqlError::new("0A000", format!("unsupported parameter type {target}: {e}")))
}

fn coerce(value: ScalarValue, target: &DataType) -> Result<ScalarValue, SqlError> {
    if *target == DataType::Null || value.data_type() == *target {
        return Ok(value);
    }
    let value = provdb_sql::rounding_casts::rounded_for(value, target);
    value.cast_to(target).map_err(|_| {
        SqlError::new(
            "22P02",
            format!(
                "invalid input syntax for type {}: \"{}\"",
                pg_type_for_arrow(target),
                value
            ),
        )
    })
}

fn utf8(bytes: &[u8]) -> Result<&str, SqlError> {
    std::str::from_utf8(bytes)
        .map_err(|_| SqlError::new("22021", "invalid byte sequence for encoding \"UTF8\""))
}

fn decode_text(pg: &Type, bytes: &[u8]) -> Result<ScalarValue, SqlError> {
    let s = utf8(bytes)?;
    if *pg == Type::BYTEA {
        return decode_bytea_text(s).map(|b| ScalarValue::Binary(Some(b)));
    }
    Ok(ScalarValue::Utf8(Some(s.to_string())))
}

/// Postgres bytea text input: `\x` hex form, or the escape form (`\\`, `\nnn`).
pub fn decode_bytea_text(s: &str) -> Result<Vec<u8>, SqlError> {
    let bad = || SqlError::new("22P02", "invalid input syntax for type bytea");
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if !digits.len().is_multiple_of(2) {
            return Err(bad());
        }
        return digits
            .chunks(2)
            .map(|pair| {
                let s = std::str::from_utf8(pair).map_err(|_| bad())?;
                u8::from_str_radix(s, 16).map_err(|_| bad())
            })
            .collect();
    }
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4).ok_or_else(bad)?;
            let oct = std::str::from_utf8(oct).map_err(|_| bad())?;
            out.push(u8::from_str_radix(oct, 8).map_err(|_| bad())?);
            i += 4;
        }
    }
    Ok(out)
}

fn from_sql<'a, T: FromSql<'a>>(pg: &Type, bytes: &'a [u8]) -> Result<T, SqlError> {
    T::from_sql(pg, bytes).map_err(|e| {
        SqlError::new(
            "22P03",
            format!("incorrect binary data format for type {pg}: {e}"),
        )
    })
}

fn decode_binary(pg: &Type, bytes: &[u8]) -> Result<ScalarValue, SqlError> {
    use ScalarValue as S;
    let v = match *pg {
        Type::BOOL => S::Boolean(Some(from_sql(pg, bytes)?)),
        Type::CHAR => S::Int8(Some(from_sql(pg, bytes)?)),
        Type::INT2 => S::Int16(Some(from_sql(pg, bytes)?)),
        Type::INT4 => S::Int32(Some(from_sql(pg, bytes)?)),
        Type::INT8 => S::Int64(Some(from_sql(pg, bytes)?)),
        Type::OID => S::Int64(Some(i64::from(from_sql::<u32>(pg, bytes)?))),
        Type::FLOAT4 => S::Float32(Some(from_sql(pg, bytes)?)),
        Type::FLOAT8 => S::Float64(Some(from_sql(pg, bytes)?)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
            S::Utf8(Some(utf8(bytes)?.to_string()))
        }
        Type::JSONB => S::Utf8(Some(decode_jsonb(bytes)?)),
        Type::BYTEA => S::Binary(Some(bytes.to_vec())),
        Type::DATE => S::Date32(Some(from_sql::<i32>(&Type::INT4, bytes)? + PG_EPOCH_DAYS)),
        Type::TIME => S::Time64Microsecond(Some(from_sql::<i64>(&Type::INT8, bytes)?)),
        Type::TIMESTAMP => S::TimestampMicrosecond(Some(pg_timestamp(bytes)?), None),
        Type::TIMESTAMPTZ => {
            S::TimestampMicrosecond(Some(pg_timestamp(bytes)?), Some("UTC".into()))
        }
        Type::UUID => S::Utf8(Some(decode_uuid(bytes)?)),
        Type::NUMERIC => S::Utf8(Some(decode_numeric(bytes)?)),
        _ => {
            return Err(SqlError::new(
                "0A000",
                format!(
                    "binary format for parameters of type {pg} is not supported; use text format"
                ),
            ));
        }
    };
    Ok(v)
}

fn pg_timestamp(bytes: &[u8]) -> Result<i64, SqlError> {
    let micros: i64 = from_sql(&Type::INT8, bytes)?;
    micros
        .checked_add(PG_EPOCH_MICROS)
        .ok_or_else(|| SqlError::new("22008", "timestamp out of range"))
}

fn decode_jsonb(bytes: &[u8]) -> Result<String, SqlError> {
    match bytes.split_first() {
        Some((1, rest)) => Ok(utf8(rest)?.to_string()),
        _ => Err(SqlError::new("22P03", "unsupported jsonb binary version")),
    }
}

fn decode_uuid(bytes: &[u8]) -> Result<String, SqlError> {
    if bytes.len() != 16 {
        return Err(SqlError::new("22P03", "invalid uuid binary length"));
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Postgres binary NUMERIC (base-10000 digits) to its decimal text form.
pub fn decode_numeric(bytes: &[u8]) -> Result<String, SqlError> {
    let bad = || SqlError::new("22P03", "invalid numeric binary data");
    let word = |i: usize| -> Result<i16, SqlError> {
        let b = bytes.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::try_from(word(0)?).map_err(|_| bad())?;
    let weight = i32::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::try_from(word(3)?).map_err(|_| bad())?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err(bad()),
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<_>, _>>()?;
    let digit_at = |pos: i32| -> i16 {
        usize::try_from(pos)
            .ok()
            .and_then(|p| digits.get(p).copied())
            .unwrap_or(0)
    };
    let mut int_part = String::new();
    for pos in 0..=weight.max(0) {
        if pos > weight {
            break;
        }
        let d = digit_at(pos);
        if int_part.is_empty() {
            if d != 0 {
                int_part = d.to_string();
            }
        } else {
            int_part.push_str(&format!("{d:04}"));
        }
    }
    if int_part.is_empty() {
        int_part.push('0');
    }
    let mut frac = String::new();
    let mut pos = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit_at(pos)));
        pos += 1;
    }
    frac.truncate(dscale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    if frac.is_empty() {
        Ok(format!("{sign}{int_part}"))
    } else {
        Ok(format!("{sign}{int_part}.{frac}"))
    }
}

/// The natural Arrow type of a timestamp parameter, for tests and callers that
/// need to compare.
pub fn timestamp_type(tz: bool) -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, tz.then(|| "UTC".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> RawParam<'_> {
        RawParam {
            value: Some(s.as_bytes()),
            binary: false,
            client_type: None,
        }
    }

    fn bin<'a>(b: &'a [u8], t: &'a Type) -> RawParam<'a> {
        RawParam {
            value: Some(b),
            binary: true,
            client_type: Some(t),
        }
    }

    #[test]
    fn numeric_params_bound_to_integers_round_away_from_zero() {
        let numeric = Type::NUMERIC;
        for (text, want) in [
            ("7.5", 8),
            ("-7.5", -8),
            ("6.5", 7),
            ("2.49", 2),
            ("-0.4", 0),
        ] {
            let raw = RawParam {
                value: Some(text.as_bytes()),
                binary: false,
                client_type: Some(&numeric),
            };
            assert_eq!(
                decode_param(&raw, &DataType::Int64).unwrap(),
                ScalarValue::Int64(Some(want)),
                "{text}"
            );
        }
        assert_eq!(rounded_numeric("1e3"), None, "not plain decimal notation");
        assert_eq!(rounded_numeric(".5").as_deref(), Some("1"));
    }

    #[test]
    fn float_params_bound_to_integers_round_to_even() {
        let f = Type::FLOAT8;
        for (x, want) in [(7.5, 8), (6.5, 6), (-2.5, -2), (2.49, 2)] {
            let bytes = f64::to_be_bytes(x);
            assert_eq!(
                decode_param(&bin(&bytes, &f), &DataType::Int32).unwrap(),
                ScalarValue::Int32(Some(want)),
                "{x}"
            );
        }
    }

    #[test]
    fn text_params_cast_to_expected_types() {
        assert_eq!(
            decode_param(&text("42"), &DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(42))
        );
        assert_eq!(
            decode_param(&text("t"), &DataType::Boolean).unwrap(),
            ScalarValue::Boolean(Some(true))
        );
        assert_eq!(
            decode_param(&text("2.5"), &DataType::Float64).unwrap(),
            ScalarValue::Float64(Some(2.5))
        );
        assert_eq!(
            decode_param(&text("hello"), &DataType::Null).unwrap(),
            ScalarValue::Utf8(Some("hello".into()))
        );
        assert_eq!(
            decode_param(&text("2024-02-29"), &DataType::Date32).unwrap(),
            ScalarValue::Date32(Some(19782))
        );
        let ts = decode_param(&text("2000-01-01 00:00:01"), &timestamp_type(false)).unwrap();
        assert_eq!(
            ts,
            ScalarValue::TimestampMicrosecond(Some(PG_EPOCH_MICROS + 1_000_000), None)
        );
    }

    #[test]
    fn bad_text_is_22p02() {
        let err = decode_params(&[text("abc")], &[DataType::Int32]).unwrap_err();
        assert_eq!(err.code, "22P02");
        assert!(err.message.starts_with("parameter $1:"), "{}", err.message);
    }

    #[test]
    fn null_params_are_typed_nulls() {
        let p = RawParam {
            value: None,
            binary: false,
            client_type: None,
        };
        assert_eq!(
            decode_param(&p, &DataType::Int32).unwrap(),
            ScalarValue::Int32(None)
        );
        assert_eq!(
            decode_param(&p, &DataType::Null).unwrap(),
            ScalarValue::Null
        );
    }

    #[test]
    fn binary_params() {
        let b = 7i32.to_be_bytes();
        assert_eq!(
            decode_param(&bin(&b, &Type::INT4), &DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(7))
        );
        let f = 1.5f64.to_be_bytes();
        assert_eq!(
            decode_param(&bin(&f, &Type::FLOAT8), &DataType::Float64).unwrap(),
            ScalarValue::Float64(Some(1.5))
        );
        assert_eq!(
            decode_param(&bin(&[1], &Type::BOOL), &DataType::Boolean).unwrap(),
            ScalarValue::Boolean(Some(true))
        );
        let d = 1i32.to_be_bytes();
        assert_eq!(
            decode_param(&bin(&d, &Type::DATE), &DataType::Date32).unwrap(),
            ScalarValue::Date32(Some(10958))
        );
        let ts = 0i64.to_be_bytes();
        assert_eq!(
            decode_param(&bin(&ts, &Type::TIMESTAMP), &timestamp_type(false)).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(PG_EPOCH_MICROS), None)
        );
        let u = [0x12u8; 16];
        assert_eq!(
            decode_param(&bin(&u, &Type::UUID), &DataType::Utf8).unwrap(),
            ScalarValue::Utf8(Some("12121212-1212-1212-1212-121212121212".into()))
        );
    }

    #[test]
    fn binary_without_client_type_uses_expected_type() {
        let b = 9i64.to_be_bytes();
        let p = RawParam {
            value: Some(&b),
            binary: true,
            client_type: None,
        };
        assert_eq!(
            decode_param(&p, &DataType::Int64).unwrap(),
            ScalarValue::Int64(Some(9))
        );
    }

    #[test]
    fn short_binary_is_an_error_not_a_panic() {
        let err = decode_param(&bin(&[0, 1], &Type::INT8), &DataType::Int64).unwrap_err();
        assert_eq!(err.code, "22P03");
        assert!(decode_numeric(&[0, 1]).is_err());
    }

    #[test]
    fn param_count_mismatch() {
        let err = decode_params(&[], &[DataType::Int32]).unwrap_err();
        assert_eq!(err.code, "08P01");
    }

    #[test]
    fn format_count_checked() {
        assert!(check_format_count(&Format::Individual(vec![0, 1]), 3, "parameter").is_err());
        assert!(check_format_count(&Format::Individual(vec![0, 1, 0]), 3, "parameter").is_ok());
        assert!(check_format_count(&Format::UnifiedBinary, 3, "parameter").is_ok());
    }

    #[test]
    fn bytea_text_forms() {
        assert_eq!(decode_bytea_text("\\x0aff").unwrap(), vec![10, 255]);
        assert_eq!(
            decode_bytea_text("a\\\\b\\001").unwrap(),
            b"a\\b\x01".to_vec()
        );
        assert!(decode_bytea_text("\\x0").is_err());
    }

    fn numeric(ndigits: i16, weight: i16, sign: u16, dscale: i16, digits: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight, sign as i16, dscale].iter().chain(digits) {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_binary_to_text() {
        // 12345.678 = [1, 2345, 6780], weight 1, dscale 3
        assert_eq!(
            decode_numeric(&numeric(3, 1, 0, 3, &[1, 2345, 6780])).unwrap(),
            "12345.678"
        );
        // -0.05 = [500], weight -1, dscale 2
        assert_eq!(
            decode_numeric(&numeric(1, -1, 0x4000, 2, &[500])).unwrap(),
            "-0.05"
        );
        assert_eq!(decode_numeric(&numeric(0, 0, 0, 0, &[])).unwrap(), "0");
        // 10000 = [1], weight 1
        assert_eq!(decode_numeric(&numeric(1, 1, 0, 0, &[1])).unwrap(), "10000");
        let p = numeric(2, 0, 0, 1, &[3, 5000]);
        let v = decode_param(&bin(&p, &Type::NUMERIC), &DataType::Decimal128(10, 2)).unwrap();
        assert_eq!(v, ScalarValue::Decimal128(Some(350), 10, 2));
    }
}
