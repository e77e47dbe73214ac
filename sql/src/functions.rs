//! PostgreSQL functions clients call that DataFusion and pg_catalog lack:
//! `version()`, `current_setting(name)`, `pg_is_in_recovery()`; and
//! [`crate::min_max`]'s `min` and `max` in place of DataFusion's.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// Register provdb's extra functions in a session.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(crate::min_max::min_udaf());
    ctx.register_udaf(crate::min_max::max_udaf());
    let version = format!(
        "PostgreSQL {} (provdb {}) on Rust/DataFusion",
        crate::SERVER_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    ctx.register_udf(create_udf(
        "pg_is_in_recovery",
        vec![],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))))
        }),
    ));
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrays[0].as_any().downcast_ref::<StringArray>();
            let out: StringArray = match names {
                Some(n) => n.iter().map(|v| v.map(setting_value)).collect(),
                None => StringArray::from(Vec::<Option<String>>::new()),
            };
            let out: ArrayRef = Arc::new(out);
            if out.len() == 1 {
                return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
            }
            Ok(ColumnarValue::Array(out))
        }),
    ));
}

/// Server-wide settings reported by `current_setting`.
fn setting_value(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "server_version" => crate::SERVER_VERSION.to_string(),
        "server_version_num" => "160000".to_string(),
        "search_path" => "public".to_string(),
        "server_encoding" | "client_encoding" => "UTF8".to_string(),
        "standard_conforming_strings" => "on".to_string(),
        "timezone" => "UTC".to_string(),
        "max_identifier_length" => "63".to_string(),
        _ => String::new(),
    }
}
