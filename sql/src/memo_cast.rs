//! Casts of stored text columns, computed once per array.
//!
//! DfAnalyzer writes every attribute it does not know the type of as TEXT,
//! timestamps included, so dashboards cast: `max(CAST("timestamp" AS
//! TIMESTAMP))` over a million epoch rows parses a million strings at every
//! refresh (most of the 40 ms DLProv's M4 took). The rows come from the
//! segment cache and the table buffers, whose arrays are immutable and come
//! back query after query, so the cast of each array is kept once it is
//! seen again ([`crate::array_memo`], at most [`MEMO_BYTES`] pinned; one
//! cast per target type, as a query may cast a column two ways).
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
//!
//! `TRY_CAST` of a column is kept the same way ([`CastMode::Try`]: a bad
//! value gives NULL). Eager aggregation ([`crate::eager_aggregate`])
//! aggregates an input before the join that drops some of its rows, where
//! a bad value in a dropped row must not fail the query: it casts there in
//! that mode, carries the bad values up ([`crate::cast_faults`]), and
//! [`RaiseCast`] above the join fails a group that still has one with the
//! cast's own error. The strict cast is what is kept, so while an array's
//! values all cast both modes return the same kept array.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::compute::is_not_null;
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

/// Per text array, its casts kept so far: one per target type (a query may
/// cast one column to two types).
static CASTS: ArrayMemo<Arc<[ArrayRef]>> = ArrayMemo::new(MEMO_BYTES);

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
    let (arg, target, mode) = match &expr {
        Expr::Cast(cast) => (&cast.expr, &cast.field, CastMode::Strict),
        Expr::TryCast(cast) => (&cast.expr, &cast.field, CastMode::Try),
        _ => return Ok(Transformed::no(expr)),
    };
    let Expr::Column(_) = arg.as_ref() else {
        return Ok(Transformed::no(expr));
    };
    if !parsed_type(target.data_type()) {
        return Ok(Transformed::no(expr));
    }
    // The source type is not in the expression: the call checks it at run
    // time and casts like CAST whatever it is given.
    let call = MemoCast::with_mode(Arc::clone(target), mode).call(arg.as_ref().clone());
    Ok(Transformed::yes(call))
}

/// Types a cast from text parses into (numbers include decimals).
pub(crate) fn parsed_type(t: &DataType) -> bool {
    t.is_numeric() || t.is_temporal() || *t == DataType::Boolean
}

pub(crate) fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// What a [`MemoCast`] gives for a value that does not cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CastMode {
    /// `CAST`: the query fails.
    Strict,
    /// `TRY_CAST`: NULL.
    Try,
}

/// `CAST(x AS target)`, kept per input array when `x` is text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemoCast {
    /// The cast's target (type and metadata).
    target: FieldRef,
    mode: CastMode,
    signature: Signature,
}

impl MemoCast {
    pub fn new(target: FieldRef) -> Self {
        Self::with_mode(target, CastMode::Strict)
    }

    pub fn with_mode(target: FieldRef, mode: CastMode) -> Self {
        MemoCast {
            target,
            mode,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    /// A call of this function on `arg`.
    pub fn call(self, arg: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(self);
        Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![arg]))
    }
}

impl ScalarUDFImpl for MemoCast {
    fn name(&self) -> &str {
        match self.mode {
            CastMode::Strict => "provdb_memo_cast",
            CastMode::Try => "provdb_memo_try_cast",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.target.data_type().clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let [input] = args.arg_fields else {
            return internal_err!("{} takes one argument", self.name());
        };
        Ok(match self.mode {
            // As CAST: nullable exactly when its input is.
            CastMode::Strict => Arc::new(
                self.target
                    .as_ref()
                    .clone()
                    .with_nullable(input.is_nullable()),
            ),
            CastMode::Try => Arc::new(self.target.as_ref().clone().with_nullable(true)),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return internal_err!("{} takes one argument", self.name());
        };
        match value {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(self.cast_array(a)?)),
            ColumnarValue::Scalar(s) => {
                let array = s.to_array()?;
                let cast = self.in_mode(&array, self.cast(&array))?;
                Ok(ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::try_from_array(&cast, 0)?,
                ))
            }
        }
    }
}

impl MemoCast {
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
        if !is_text(array.data_type()) || array.len() < MEMO_MIN_ROWS {
            return self.in_mode(array, self.cast(array));
        }
        // The strict cast is what is kept, whatever the mode: while every
        // value casts, both modes give the same array.
        let kept = CASTS.get(array);
        let target = self.target.data_type();
        if let Some(cast) = kept
            .iter()
            .flat_map(|k| k.iter())
            .find(|c| c.data_type() == target)
        {
            return Ok(Arc::clone(cast));
        }
        let strict = self.cast(array);
        if let Ok(cast) = &strict {
            let casts: Arc<[ArrayRef]> = kept
                .iter()
                .flat_map(|k| k.iter())
                .chain(std::iter::once(cast))
                .cloned()
                .collect();
            let bytes = casts.iter().map(|c| c.get_array_memory_size()).sum();
            if stored {
                CASTS.insert_stored(array, casts, bytes);
            } else {
                CASTS.insert(array, casts, bytes);
            }
        }
        self.in_mode(array, strict)
    }

    /// What this mode makes of `array` given its strict cast.
    fn in_mode(&self, array: &ArrayRef, strict: Result<ArrayRef>) -> Result<ArrayRef> {
        match (self.mode, strict) {
            (CastMode::Strict, strict) => strict,
            (CastMode::Try, Ok(cast)) => Ok(cast),
            (CastMode::Try, Err(_)) => self.cast_with(array, &SAFE_CAST),
        }
    }

    /// What `CAST(array AS target)` gives.
    fn cast(&self, array: &ArrayRef) -> Result<ArrayRef> {
        self.cast_with(array, &DEFAULT_CAST_OPTIONS)
    }

    fn cast_with(&self, array: &ArrayRef, options: &CastOptions<'static>) -> Result<ArrayRef> {
        let value = ColumnarValue::Array(Arc::clone(array));
        value
            .cast_to(self.target.data_type(), Some(options))?
            .into_array(array.len())
    }
}

/// `TRY_CAST`'s options: a value that does not cast becomes NULL.
const SAFE_CAST: CastOptions<'static> = CastOptions {
    safe: true,
    format_options: DEFAULT_CAST_OPTIONS.format_options,
};

/// `provdb_raise_cast(result, fault)`: `result`, unless `fault` (a value
/// that did not cast, [`crate::cast_faults`]) holds a value, in which case
/// the query fails with the error `CAST(fault AS target)` gives. Eager
/// aggregation puts it above the join, so only a bad value in a row the
/// join keeps fails the query.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RaiseCast {
    target: FieldRef,
    signature: Signature,
}

impl RaiseCast {
    pub fn new(target: FieldRef) -> Self {
        RaiseCast {
            target,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// A call of this function on `result` and `fault`.
    pub fn call(self, result: Expr, fault: Expr) -> Expr {
        let udf = ScalarUDF::new_from_impl(self);
        Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![result, fault]))
    }
}

impl ScalarUDFImpl for RaiseCast {
    fn name(&self) -> &str {
        "provdb_raise_cast"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [result, _] => Ok(result.clone()),
            _ => internal_err!("provdb_raise_cast takes two arguments"),
        }
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        match args.arg_fields {
            [result, _] => Ok(Arc::clone(result)),
            _ => internal_err!("provdb_raise_cast takes two arguments"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [result, fault] = args.args.as_slice() else {
            return internal_err!("provdb_raise_cast takes two arguments");
        };
        let faults = fault.to_array(args.number_rows)?;
        if faults.null_count() == faults.len() {
            return Ok(result.clone());
        }
        let bad = datafusion::arrow::compute::filter(&faults, &is_not_null(&faults)?)?;
        let strict = MemoCast::new(Arc::clone(&self.target));
        strict.cast(&bad)?;
        internal_err!(
            "provdb_raise_cast: values that did not cast to {} now do",
            self.target.data_type()
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, TimeUnit};
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
        // kept from the second sighting of the array on (or the first: the
        // memo is one process-wide static keyed by address, and an array of
        // a test running alongside may have left a sighting at this
        // address; array_memo's own tests pin admission)
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

    fn array_of(value: Result<ColumnarValue>) -> ArrayRef {
        match value.unwrap() {
            ColumnarValue::Array(a) => a,
            ColumnarValue::Scalar(_) => panic!("array expected"),
        }
    }

    #[test]
    fn the_try_mode_gives_null_for_bad_values_and_the_kept_cast_otherwise() {
        let int = Arc::new(Field::new("c", DataType::Int64, true));
        let try_cast = MemoCast::with_mode(Arc::clone(&int), CastMode::Try);
        // long (kept casts) and short arrays
        for rows in [MEMO_MIN_ROWS, 12] {
            let mut values: Vec<Option<String>> = (0..rows).map(|i| Some(i.to_string())).collect();
            values[7] = Some("seven".into());
            values[9] = None;
            let text: ArrayRef = Arc::new(StringArray::from(values));
            for _ in 0..3 {
                let tried = array_of(call(
                    &try_cast,
                    ColumnarValue::Array(Arc::clone(&text)),
                    rows,
                ));
                let tried = tried.as_primitive::<Int64Type>();
                assert!(tried.is_null(7) && tried.is_null(9));
                assert_eq!(tried.null_count(), 2);
                assert_eq!(tried.value(8), 8);
            }
        }
        // every value casts: the try cast is the kept strict cast
        let ok: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..MEMO_MIN_ROWS).map(|i| i.to_string()),
        ));
        let strict = MemoCast::new(Arc::clone(&int));
        let runs: Vec<ArrayRef> = (0..2)
            .map(|_| {
                array_of(call(
                    &strict,
                    ColumnarValue::Array(Arc::clone(&ok)),
                    MEMO_MIN_ROWS,
                ))
            })
            .collect();
        let tried = array_of(call(&try_cast, ColumnarValue::Array(ok), MEMO_MIN_ROWS));
        assert!(Arc::ptr_eq(&runs[1], &tried));
    }

    #[test]
    fn raise_cast_fails_with_the_casts_error_only_for_a_fault() {
        let int = Arc::new(Field::new("c", DataType::Int64, true));
        let raise = RaiseCast::new(Arc::clone(&int));
        let invoke = |fault: Vec<Option<&str>>| {
            let rows = fault.len();
            let result: ArrayRef = Arc::new(Int64Array::from_iter_values(0..rows as i64));
            let fault: ArrayRef = Arc::new(StringArray::from(fault));
            raise.invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::clone(&result)),
                    ColumnarValue::Array(fault),
                ],
                arg_fields: vec![
                    Arc::clone(&int),
                    Arc::new(Field::new("f", DataType::Utf8, true)),
                ],
                number_rows: rows,
                return_field: Arc::clone(&int),
                config_options: Arc::new(ConfigOptions::default()),
            })
        };
        let passed = array_of(invoke(vec![None, None, None]));
        assert_eq!(passed.as_primitive::<Int64Type>().values(), &[0, 1, 2]);
        let err = invoke(vec![None, Some("twelve"), None]).unwrap_err();
        let strict =
            MemoCast::new(int).cast(&(Arc::new(StringArray::from(vec!["twelve"])) as ArrayRef));
        assert_eq!(
            err.to_string(),
            strict.unwrap_err().to_string(),
            "CAST's own error"
        );
    }

    #[test]
    fn one_array_cast_to_two_types_keeps_both() {
        let int = MemoCast::new(Arc::new(Field::new("c", DataType::Int64, true)));
        let float = MemoCast::new(Arc::new(Field::new("c", DataType::Float64, true)));
        let text: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..MEMO_MIN_ROWS).map(|i| i.to_string()),
        ));
        for _ in 0..3 {
            for (f, t) in [(&int, DataType::Int64), (&float, DataType::Float64)] {
                let got = array_of(call(
                    f,
                    ColumnarValue::Array(Arc::clone(&text)),
                    MEMO_MIN_ROWS,
                ));
                assert_eq!(got.data_type(), &t, "the kept cast of its own type");
            }
        }
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
