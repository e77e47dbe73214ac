//! SQL type names (as parsed by sqlparser) to Arrow types, PostgreSQL-style.

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};

use crate::error::{SqlError, SqlResult};

/// Whether a column type is a serial type (an integer with an implicit sequence).
pub fn is_serial(t: &SqlType) -> bool {
    matches!(t, SqlType::Custom(name, _) if {
        let n = name.to_string().to_ascii_lowercase();
        matches!(n.as_str(), "serial" | "bigserial" | "smallserial" | "serial4" | "serial8" | "serial2")
    })
}

/// The Arrow type stored for a SQL column type.
pub fn arrow_type(t: &SqlType) -> SqlResult<DataType> {
    use SqlType as S;
    Ok(match t {
        S::Boolean | S::Bool => DataType::Boolean,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::MediumInt(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::TinyInt(_) => DataType::Int16,
        S::Real | S::Float4 | S::Float32 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 | S::Float64 | S::Float(_) => {
            DataType::Float64
        }
        S::Numeric(info) | S::Decimal(info) | S::Dec(info) => match info {
            ExactNumberInfo::PrecisionAndScale(p, s) if *p <= 38 => {
                DataType::Decimal128(*p as u8, *s as i8)
            }
            ExactNumberInfo::Precision(p) if *p <= 38 => DataType::Decimal128(*p as u8, 0),
            // Unconstrained NUMERIC: stored as double precision (what DLProv
            // scientists' measures need; documented in docs/sql.md).
            _ => DataType::Float64,
        },
        S::Text
        | S::String(_)
        | S::Varchar(_)
        | S::CharVarying(_)
        | S::CharacterVarying(_)
        | S::Char(_)
        | S::Character(_)
        | S::Nvarchar(_)
        | S::Uuid
        | S::JSON
        | S::JSONB
        | S::Clob(_) => DataType::Utf8,
        S::Bytea | S::Blob(_) | S::Binary(_) | S::Varbinary(_) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Time(_, _) => DataType::Time64(TimeUnit::Microsecond),
        S::Timestamp(_, tz) => match tz {
            TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        },
        S::Datetime(_) => DataType::Timestamp(TimeUnit::Microsecond, None),
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::Array(_) => {
            return Err(SqlError::feature_not_supported(
                "array columns are not supported yet",
            ));
        }
        S::Custom(name, _) => custom_type(&name.to_string())?,
        other => {
            return Err(SqlError::feature_not_supported(format!(
                "type {other} is not supported"
            )));
        }
    })
}

fn custom_type(name: &str) -> SqlResult<DataType> {
    Ok(match name.to_ascii_lowercase().trim_matches('"') {
        "serial" | "serial4" => DataType::Int32,
        "bigserial" | "serial8" => DataType::Int64,
        "smallserial" | "serial2" => DataType::Int16,
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "long_text" | "file" | "name" | "citext" => DataType::Utf8,
        other => {
            return Err(SqlError::new(
                "42704",
                format!("type \"{other}\" does not exist"),
            ));
        }
    })
}

/// The PostgreSQL name of the type a column is stored as, for messages.
pub fn pg_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "boolean",
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        DataType::Int64 => "bigint",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal128(_, _) => "numeric",
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "text",
        DataType::Binary => "bytea",
        DataType::Date32 => "date",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Time64(_) => "time",
        DataType::Interval(_) => "interval",
        _ => "unknown",
    }
}
