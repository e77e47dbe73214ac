//! Literal arguments of the lineage table functions. DataFusion folds
//! constant expressions before calling a table function, so `ARRAY['a','b']`
//! and `'a' || 'b'` arrive as literals; anything else (a column, a `$1`
//! parameter, a subquery) is rejected with a message saying so.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::Expr;

fn literal<'a>(e: &'a Expr, func: &str, param: &str) -> Result<&'a ScalarValue> {
    match e {
        Expr::Literal(v, _) => Ok(v),
        other => plan_err!(
            "{func}(): {param} must be a constant (a literal, an ARRAY[...] of literals, or NULL), got {other}"
        ),
    }
}

/// A text argument; `None` for NULL or when absent.
pub fn text(args: &[Expr], i: usize, func: &str, param: &str) -> Result<Option<String>> {
    let Some(e) = args.get(i) else {
        return Ok(None);
    };
    match literal(e, func, param)? {
        v if v.is_null() => Ok(None),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(Some(s.clone())),
        v => plan_err!("{func}(): {param} must be text, got {} {v}", v.data_type()),
    }
}

/// A text or text-array argument; `None` for NULL or when absent.
pub fn texts(args: &[Expr], i: usize, func: &str, param: &str) -> Result<Option<Vec<String>>> {
    let Some(e) = args.get(i) else {
        return Ok(None);
    };
    let v = literal(e, func, param)?;
    if v.is_null() {
        return Ok(None);
    }
    if let Some(s) = text(args, i, func, param).ok().flatten() {
        return Ok(Some(vec![s]));
    }
    let values = match v {
        ScalarValue::List(a) => a.values().clone(),
        ScalarValue::LargeList(a) => a.values().clone(),
        ScalarValue::FixedSizeList(a) => a.values().clone(),
        v => {
            return plan_err!(
                "{func}(): {param} must be text or an array of text, got {}",
                v.data_type()
            );
        }
    };
    let values = cast(&values, &DataType::Utf8)?;
    let strings = values.as_string::<i32>();
    if strings.null_count() > 0 {
        return plan_err!("{func}(): {param} must not contain NULL");
    }
    Ok(Some(strings.iter().flatten().map(str::to_string).collect()))
}

/// A non-negative integer argument; `None` for NULL or when absent.
pub fn count(args: &[Expr], i: usize, func: &str, param: &str) -> Result<Option<u32>> {
    let Some(e) = args.get(i) else {
        return Ok(None);
    };
    let v = literal(e, func, param)?;
    if v.is_null() {
        return Ok(None);
    }
    // Text that reads as an integer is accepted too: a `$n` parameter bound
    // as text (its type cannot be inferred inside a table function).
    let n = match v {
        ScalarValue::Utf8(Some(t))
        | ScalarValue::LargeUtf8(Some(t))
        | ScalarValue::Utf8View(Some(t)) => t.trim().parse::<i64>().ok(),
        _ if v.data_type().is_integer() => match v.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(n))) => Some(n),
            _ => None,
        },
        _ => None,
    };
    let Some(n) = n else {
        return plan_err!(
            "{func}(): {param} must be an integer, got {} {v}",
            v.data_type()
        );
    };
    match u32::try_from(n) {
        Ok(n) => Ok(Some(n)),
        Err(_) => plan_err!(
            "{func}(): {param} must be between 0 and {}, got {n}",
            u32::MAX
        ),
    }
}
