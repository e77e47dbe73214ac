//! Casts of stored text columns, computed once per array.
//!
//! DfAnalyzer writes every attribute it does not know the type of as TEXT,
//! timestamps included, so dashboards cast: `max(CAST("timestamp" AS
//! TIMESTAMP))` over a million epoch rows parses a million strings at every
//! refresh (most of the 40 ms DLProv's M4 took). The rows come from the
//! segment cache and the table buffers, whose arrays are immutable and come
//! back query after query, so the cast of each array is kept once it is
//! seen again ([`crate::array_memo`], at most [`MEMO_BYTES`] pinned).
//!
//! [`MemoCasts`] runs after DataFusion's optimizer rules and replaces each
//! remaining `CAST(column AS type)` from a string type to a number, a
//! decimal, a boolean, a date, a time or a timestamp by the function
//! [`MemoCast`], which casts exactly as `CAST` does (DataFusion's default
//! cast options: a bad value is an error) and keeps the result when the
//! input is an array of [`MEMO_MIN_ROWS`] rows or more. Output names are
//! kept. Casts DataFusion moves to the other side of a comparison
//! (`CAST(c AS TIMESTAMP) > '...'` compares `c` with a cast literal) never
//! reach it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::format::DEFAULT_CAST_OPTIONS;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use crate::array_memo::ArrayMemo;

/// Most bytes the memo pins (input arrays and their casts).
pub const MEMO_BYTES: usize = 128 << 20;

/// Arrays shorter than this are cast every time (the tail of a buffer, a
/// filtered batch: short-lived, not worth an entry).
pub const MEMO_MIN_ROWS: usize = 1024;

static CASTS: ArrayMemo<ArrayRef> = ArrayMemo::new(MEMO_BYTES);

/// The optimizer rule.
#[derive(Debug, Default)]
pub struct MemoCasts;

impl OptimizerRule for MemoCasts {
    fn name(&self) -> &str {
        "provdb_memo_casts"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(memo_cast)?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    }
}

/// `CAST(column AS type)` from text to a type worth keeping, as a call of
/// [`MemoCast`]; anything else unchanged.
fn memo_cast(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::Cast(cast) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let Expr::Column(_) = cast.expr.as_ref() else {
        return Ok(Transformed::no(expr));
    };
    if !parsed_type(cast.field.data_type()) {
        return Ok(Transformed::no(expr));
    }
    // The source type is not in the expression: the call checks it at run
    // time and casts like CAST whatever it is given.
    let udf = ScalarUDF::new_from_impl(MemoCast::new(Arc::clone(&cast.field)));
    let arg = cast.expr.as_ref().clone();
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(Arc::new(udf), vec![arg]),
    )))
}

/// Types a cast from text parses into (numbers include decimals).
fn parsed_type(t: &DataType) -> bool {
    t.is_numeric() || t.is_temporal() || *t == DataType::Boolean
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// `CAST(x AS target)`, kept per input array when `x` is text.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MemoCast {
    /// The cast's target (type and metadata).
    target: FieldRef,
    signature: Signature,
}

impl MemoCast {
    pub fn new(target: FieldRef) -> Self {
        MemoCast {
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for MemoCast {
    fn name(&self) -> &str {
        "provdb_memo_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.target.data_type().clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // As CAST: nullable exactly when its input is.
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(
            self.target.as_ref().clone().with_nullable(nullable),
        ))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return internal_err!("provdb_memo_cast takes one argument");
        };
        match value {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(self.cast_array(a)?)),
            other => self.cast(other),
        }
    }
}

impl MemoCast {
    /// The type cast to.
    pub(crate) fn target(&self) -> &FieldRef {
        &self.target
    }

    /// `CAST(array AS target)`, kept when `array` is long text seen before.
    pub(crate) fn cast_array(&self, array: &ArrayRef) -> Result<ArrayRef> {
        self.cast_kept(array, false)
    }

    /// `CAST(array AS target)` of a stored array (one of a cached segment
    /// or a table buffer, which comes back query after query): kept from
    /// its first sighting when long text.
    pub(crate) fn cast_stored(&self, array: &ArrayRef) -> Result<ArrayRef> {
        self.cast_kept(array, true)
    }

    fn cast_kept(&self, array: &ArrayRef, stored: bool) -> Result<ArrayRef> {
        let value = ColumnarValue::Array(Arc::clone(array));
        if !is_text(array.data_type()) || array.len() < MEMO_MIN_ROWS {
            return self.cast(&value)?.into_array(array.len());
        }
        let compute = || {
            let out = self.cast(&value)?.into_array(array.len())?;
            let bytes = out.get_array_memory_size();
            Ok::<_, datafusion::common::DataFusionError>((out, bytes))
        };
        if stored {
            CASTS.get_or_compute_stored(array, compute)
        } else {
            CASTS.get_or_compute(array, compute)
        }
    }

    /// What `CAST(value AS target)` gives.
    fn cast(&self, value: &ColumnarValue) -> Result<ColumnarValue> {
        value.cast_to(self.target.data_type(), Some(&DEFAULT_CAST_OPTIONS))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, TimeUnit};
    use datafusion::config::ConfigOptions;

    use super::*;

    fn call(f: &MemoCast, value: ColumnarValue, rows: usize) -> Result<ColumnarValue> {
        let arg = Arc::new(Field::new("t", DataType::Utf8, true));
        f.invoke_with_args(ScalarFunctionArgs {
            args: vec![value],
            arg_fields: vec![arg],
            number_rows: rows,
            return_field: Arc::clone(&f.target),
            config_options: Arc::new(ConfigOptions::default()),
        })
    }

    fn timestamps(n: usize) -> ArrayRef {
        Arc::new(StringArray::from_iter_values((0..n).map(|i| {
            format!("2026-11-30 10:{:02}:{:02}", i / 60 % 60, i % 60)
        })))
    }

    #[test]
    fn casts_like_cast_and_keeps_the_result_per_array() {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let f = MemoCast::new(Arc::new(Field::new("c", ts.clone(), true)));
        let text = timestamps(2 * MEMO_MIN_ROWS);
        let expected = datafusion::arrow::compute::cast(&text, &ts).unwrap();
        // kept from the second sighting of the array on
        let runs: Vec<ArrayRef> = (0..3)
            .map(
                |_| match call(&f, ColumnarValue::Array(Arc::clone(&text)), text.len()).unwrap() {
                    ColumnarValue::Array(a) => a,
                    ColumnarValue::Scalar(_) => panic!("array expected"),
                },
            )
            .collect();
        for a in &runs {
            assert_eq!(a.as_ref(), expected.as_ref());
        }
        assert!(!Arc::ptr_eq(&runs[0], &runs[1]));
        assert!(
            Arc::ptr_eq(&runs[1], &runs[2]),
            "the third call returns the kept cast"
        );
        // a short array is cast each time
        let short = timestamps(3);
        let c1 = call(&f, ColumnarValue::Array(Arc::clone(&short)), 3).unwrap();
        let c2 = call(&f, ColumnarValue::Array(Arc::clone(&short)), 3).unwrap();
        let (ColumnarValue::Array(c1), ColumnarValue::Array(c2)) = (c1, c2) else {
            panic!("arrays expected");
        };
        assert_eq!(c1.as_ref(), c2.as_ref());
        assert!(!Arc::ptr_eq(&c1, &c2));
    }

    #[test]
    fn a_bad_value_fails_as_cast_does_and_is_not_kept() {
        let f = MemoCast::new(Arc::new(Field::new("c", DataType::Int64, true)));
        let mut values: Vec<String> = (0..MEMO_MIN_ROWS).map(|i| i.to_string()).collect();
        values.push("twelve".into());
        let text: ArrayRef = Arc::new(StringArray::from(values));
        for _ in 0..2 {
            let err = call(&f, ColumnarValue::Array(Arc::clone(&text)), text.len()).unwrap_err();
            assert!(err.to_string().contains("twelve"), "{err}");
        }
        // numbers are cast like CAST casts them
        let ok: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..MEMO_MIN_ROWS).map(|i| i.to_string()),
        ));
        let ColumnarValue::Array(got) = call(&f, ColumnarValue::Array(ok), MEMO_MIN_ROWS).unwrap()
        else {
            panic!("array expected");
        };
        let want = Int64Array::from_iter_values(0..MEMO_MIN_ROWS as i64);
        assert_eq!(got.as_ref(), &want as &dyn Array);
    }
}
