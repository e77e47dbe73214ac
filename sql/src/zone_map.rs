//! Zone maps: the minimum and maximum of a column in one in-memory batch,
//! and the column bounds a run-time filter implies, so a scan can drop a
//! batch the filter cannot match without looking at its rows.
//!
//! Batches come from the segment cache and the table buffers and are
//! shared, immutable Arrow arrays (the same `Arc` from one query to the
//! next), so a batch's min/max is computed once and kept
//! ([`crate::array_memo`], at most [`PINNED_BYTES`] of arrays pinned).
//!
//! Filters are read as the conjunction DataFusion's hash join and top-k
//! produce (`k >= 3 AND k <= 9 AND k IN (...)`), or a statement's own
//! `WHERE`: each `column <op> literal` term is a bound, other terms are
//! ignored (a batch is only dropped when a bound proves no row can pass).
//! Floating-point terms are ignored too (see [`Bound::new`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, Operator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::split_conjunction;
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;

use crate::array_memo::ArrayMemo;

/// Most bytes of arrays the cache keeps alive.
pub const PINNED_BYTES: usize = 64 << 20;

/// One `column <op> value` term of a filter.
#[derive(Debug, Clone)]
pub struct Bound {
    column: usize,
    op: Operator,
    value: ScalarValue,
}

impl Bound {
    /// `column <op> value`; `None` for an operator other than a comparison,
    /// a NULL value or a floating-point one (Arrow compares floats in total
    /// order, -0.0 < 0.0 and NaN largest, scalars as IEEE values: a bound
    /// could drop a match).
    pub fn new(column: usize, op: Operator, value: ScalarValue) -> Option<Bound> {
        if !matches!(
            op,
            Operator::Eq | Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
        ) || value.is_null()
            || value.data_type().is_floating()
        {
            return None;
        }
        Some(Bound { column, op, value })
    }

    /// Column index, operator, value.
    pub fn parts(&self) -> (usize, Operator, &ScalarValue) {
        (self.column, self.op, &self.value)
    }
}

/// The bounds in the current state of `filter` (a dynamic filter is
/// snapshotted first). Empty when the filter has none.
pub fn bounds(filter: &Arc<dyn PhysicalExpr>) -> Vec<Bound> {
    let Ok(snapshot) = snapshot_physical_expr(Arc::clone(filter)) else {
        return Vec::new();
    };
    split_conjunction(&snapshot)
        .into_iter()
        .filter_map(|term| bound(term.as_ref()))
        .collect()
}

fn bound(term: &dyn PhysicalExpr) -> Option<Bound> {
    let binary = term.downcast_ref::<BinaryExpr>()?;
    let (left, right) = (binary.left(), binary.right());
    let (column, op, literal) = match (
        left.downcast_ref::<Column>(),
        right.downcast_ref::<Literal>(),
    ) {
        (Some(c), Some(l)) => (c, *binary.op(), l),
        _ => {
            let c = right.downcast_ref::<Column>()?;
            let l = left.downcast_ref::<Literal>()?;
            (c, binary.op().swap()?, l)
        }
    };
    Bound::new(column.index(), op, literal.value().clone())
}

/// False when `bounds` prove no row of `batch` passes the filter.
pub fn may_match(batch: &RecordBatch, bounds: &[Bound]) -> bool {
    bounds.iter().all(|b| {
        let Some(array) = batch.columns().get(b.column) else {
            return true;
        };
        let Some((min, max)) = min_max(array) else {
            return true;
        };
        bound_may_match(b, &min, &max)
    })
}

fn bound_may_match(b: &Bound, min: &ScalarValue, max: &ScalarValue) -> bool {
    use std::cmp::Ordering::*;
    let (Some(lo), Some(hi)) = (min.partial_cmp(&b.value), max.partial_cmp(&b.value)) else {
        return true; // not comparable (different types): cannot tell
    };
    match b.op {
        Operator::Eq => lo != Greater && hi != Less,
        Operator::Lt => lo == Less,
        Operator::LtEq => lo != Greater,
        Operator::Gt => hi == Greater,
        Operator::GtEq => hi != Less,
        _ => true,
    }
}

/// Min/max per array (the arrays are pinned: at most this many bytes).
static MIN_MAX: ArrayMemo<Option<(ScalarValue, ScalarValue)>> = ArrayMemo::new(PINNED_BYTES);

/// The non-null minimum and maximum of `array`, None when it holds no
/// non-null value or the type has no order. Cached per array.
pub fn min_max(array: &ArrayRef) -> Option<(ScalarValue, ScalarValue)> {
    if let Some(kept) = MIN_MAX.get(array) {
        return kept;
    }
    let value = compute(array);
    let bytes = value.as_ref().map_or(0, |(lo, hi)| lo.size() + hi.size());
    MIN_MAX.insert(array, value.clone(), bytes);
    value
}

/// [`min_max`] computed afresh, not kept.
pub(crate) fn compute(array: &ArrayRef) -> Option<(ScalarValue, ScalarValue)> {
    if array.null_count() == array.len() {
        return None;
    }
    let mut min = MinAccumulator::try_new(array.data_type()).ok()?;
    let mut max = MaxAccumulator::try_new(array.data_type()).ok()?;
    min.update_batch(std::slice::from_ref(array)).ok()?;
    max.update_batch(std::slice::from_ref(array)).ok()?;
    let (min, max) = (min.evaluate().ok()?, max.evaluate().ok()?);
    (!min.is_null() && !max.is_null()).then_some((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::{binary, col, lit};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let k: ArrayRef = Arc::new(Int64Array::from(vec![Some(10), None, Some(20), Some(15)]));
        let s: ArrayRef = Arc::new(StringArray::from(vec!["b", "c", "d", "c"]));
        RecordBatch::try_new(schema, vec![k, s]).unwrap()
    }

    fn filter(b: &RecordBatch, column: &str, op: Operator, v: ScalarValue) -> Vec<Bound> {
        let schema = b.schema();
        let e = binary(col(column, &schema).unwrap(), op, lit(v), &schema).unwrap();
        bounds(&e)
    }

    #[test]
    fn bounds_rule_out_batches_outside_the_range() {
        let b = batch();
        let i = |v: i64| ScalarValue::Int64(Some(v));
        let cases = [
            (Operator::Eq, 9, false),
            (Operator::Eq, 10, true),
            (Operator::Eq, 20, true),
            (Operator::Eq, 21, false),
            (Operator::Lt, 10, false),
            (Operator::Lt, 11, true),
            (Operator::LtEq, 10, true),
            (Operator::Gt, 20, false),
            (Operator::Gt, 19, true),
            (Operator::GtEq, 20, true),
            (Operator::GtEq, 21, false),
        ];
        for (op, v, expected) in cases {
            assert_eq!(
                may_match(&b, &filter(&b, "k", op, i(v))),
                expected,
                "k {op} {v}"
            );
        }
        let s = |v: &str| ScalarValue::Utf8(Some(v.into()));
        assert!(!may_match(&b, &filter(&b, "s", Operator::Eq, s("a"))));
        assert!(may_match(&b, &filter(&b, "s", Operator::Eq, s("c"))));
        // literal on the left: 25 < k, i.e. k > 25
        let schema = b.schema();
        let e = binary(
            lit(i(25)),
            Operator::Lt,
            col("k", &schema).unwrap(),
            &schema,
        )
        .unwrap();
        assert!(!may_match(&b, &bounds(&e)));
    }

    #[test]
    fn float_terms_imply_no_bound() {
        // In Arrow's total order 0.0 > -0.0 holds, so a batch of 0.0 must
        // not be dropped by `x > -0.0` (its IEEE max equals the literal).
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let x: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![0.0]));
        let b = RecordBatch::try_new(schema, vec![x]).unwrap();
        let gt = filter(&b, "x", Operator::Gt, ScalarValue::Float64(Some(-0.0)));
        assert!(gt.is_empty());
        assert!(may_match(&b, &gt));
    }

    #[test]
    fn conjunction_terms_are_bounds_other_terms_are_ignored() {
        let b = batch();
        let schema = b.schema();
        let k = || col("k", &schema).unwrap();
        let i = |v: i64| lit(ScalarValue::Int64(Some(v)));
        let range = |lo: i64, hi: i64| {
            let ge = binary(k(), Operator::GtEq, i(lo), &schema).unwrap();
            let le = binary(k(), Operator::LtEq, i(hi), &schema).unwrap();
            binary(ge, Operator::And, le, &schema).unwrap()
        };
        assert!(!may_match(&b, &bounds(&range(21, 30))));
        assert!(may_match(&b, &bounds(&range(12, 13))));
        // an OR is not a bound: the batch is kept
        let either = binary(range(21, 30), Operator::Or, range(0, 1), &schema).unwrap();
        assert!(bounds(&either).is_empty());
        assert!(may_match(&b, &bounds(&either)));
    }

    #[test]
    fn min_max_skips_nulls_and_is_cached_per_array() {
        let b = batch();
        let k = b.column(0);
        let expected = Some((ScalarValue::Int64(Some(10)), ScalarValue::Int64(Some(20))));
        assert_eq!(min_max(k), expected);
        assert_eq!(min_max(k), expected);
        // a slice of the same buffer is a different entry
        let tail = k.slice(2, 2);
        assert_eq!(
            min_max(&tail),
            Some((ScalarValue::Int64(Some(15)), ScalarValue::Int64(Some(20))))
        );
        let nulls: ArrayRef = Arc::new(Int64Array::from(vec![None, None]));
        assert_eq!(min_max(&nulls), None);
    }
}
