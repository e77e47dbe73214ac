//! Runs of rows with equal grouping values, and each reduction over them.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowNativeTypeOp, ArrowPrimitiveType, AsArray, Float64Array, Int64Array,
    PrimitiveArray, UInt32Array, downcast_primitive_array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, internal_err};

/// What a run is reduced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reduce {
    Min,
    Max,
    /// The sum, wrapping on integer overflow as DataFusion's `sum` does.
    Sum,
    /// The rows whose value is not NULL (every row without a value).
    Count,
}

impl Reduce {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Reduce::Min => "min",
            Reduce::Max => "max",
            Reduce::Sum => "sum",
            Reduce::Count => "count",
        }
    }
}

/// The first row of each run, for taking the grouping values.
pub(crate) fn run_starts(bounds: &[usize]) -> Result<UInt32Array> {
    let starts = &bounds[..bounds.len().saturating_sub(1)];
    match starts
        .iter()
        .map(|&s| u32::try_from(s))
        .collect::<Result<Vec<u32>, _>>()
    {
        Ok(indices) => Ok(UInt32Array::from(indices)),
        Err(_) => internal_err!("a batch of more than u32::MAX rows"),
    }
}

/// `columns` at the first row of each run.
pub(crate) fn take_starts(columns: &[ArrayRef], starts: &UInt32Array) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| Ok(take(c.as_ref(), starts, None)?))
        .collect()
}

/// `reduce` over each run of `values` (`None`: a count of rows).
pub(crate) fn reduce_runs(
    reduce: Reduce,
    values: Option<&ArrayRef>,
    bounds: &[usize],
) -> Result<ArrayRef> {
    let Some(values) = values else {
        return Ok(Arc::new(run_lengths(bounds, None)));
    };
    match (reduce, values.data_type()) {
        (Reduce::Count, _) => Ok(Arc::new(run_lengths(bounds, Some(values.as_ref())))),
        (Reduce::Min | Reduce::Max, DataType::Float64) => Ok(Arc::new(float_extremes(
            values.as_primitive::<Float64Type>(),
            bounds,
            reduce,
        ))),
        _ => downcast_primitive_array!(
            values => Ok(Arc::new(fold(values, bounds, reduce))),
            t => internal_err!("cannot reduce runs of type {t}")
        ),
    }
}

/// What `reduce` makes of each row alone (a run of one row), for batches
/// whose runs are too short to be worth reducing.
pub(crate) fn per_row(reduce: Reduce, values: Option<&ArrayRef>, n: usize) -> ArrayRef {
    match (reduce, values) {
        (_, None) => Arc::new(Int64Array::from_value(1, n)),
        (Reduce::Count, Some(values)) => Arc::new(match values.logical_nulls() {
            None => Int64Array::from_value(1, n),
            Some(nulls) => nulls.iter().map(|valid| Some(i64::from(valid))).collect(),
        }),
        (_, Some(values)) => Arc::clone(values),
    }
}

/// How many rows of each run are not NULL in `values` (every row when
/// there are none).
fn run_lengths(bounds: &[usize], values: Option<&dyn Array>) -> Int64Array {
    let nulls = values.and_then(|v| v.logical_nulls());
    bounds
        .windows(2)
        .map(|w| {
            let rows = w[1] - w[0];
            let valid = match &nulls {
                Some(n) => n.inner().slice(w[0], rows).count_set_bits(),
                None => rows,
            };
            Some(valid as i64)
        })
        .collect()
}

/// Each run of `values` reduced by `reduce` (a minimum, maximum or sum),
/// NULL for a run without a value. The types here (integers, decimals,
/// temporal types) compare as DataFusion's accumulators compare them.
fn fold<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    bounds: &[usize],
    reduce: Reduce,
) -> PrimitiveArray<T> {
    match reduce {
        Reduce::Min => fold_with(values, bounds, |a, b| if b.is_lt(a) { b } else { a }),
        Reduce::Max => fold_with(values, bounds, |a, b| if b.is_gt(a) { b } else { a }),
        _ => fold_with(values, bounds, |a, b| a.add_wrapping(b)),
    }
}

/// [`fold`] of a minimum or maximum of doubles, in IEEE 754 total order
/// as provdb's `min` and `max` compare them ([`crate::min_max`]: NaN
/// above `Infinity`, -0 below 0). Found through integer keys (the bits,
/// with the magnitude's bits flipped for negatives, which order as
/// `f64::total_cmp` does), which a loop compares without branches.
fn float_extremes(values: &Float64Array, bounds: &[usize], reduce: Reduce) -> Float64Array {
    fn key(x: f64) -> i64 {
        let bits = x.to_bits() as i64;
        bits ^ ((((bits >> 63) as u64) >> 1) as i64)
    }
    fn value(key: i64) -> f64 {
        f64::from_bits((key ^ ((((key >> 63) as u64) >> 1) as i64)) as u64)
    }
    fn extreme(keys: impl Iterator<Item = i64>, reduce: Reduce) -> Option<i64> {
        match reduce {
            Reduce::Min => keys.min(),
            _ => keys.max(),
        }
    }
    let data = values.values();
    let nulls = values.nulls().filter(|n| n.null_count() > 0);
    bounds
        .windows(2)
        .map(|w| {
            let found = match nulls {
                None => extreme(data[w[0]..w[1]].iter().map(|&x| key(x)), reduce),
                Some(n) => extreme(
                    (w[0]..w[1])
                        .filter(|&i| n.is_valid(i))
                        .map(|i| key(data[i])),
                    reduce,
                ),
            };
            found.map(value)
        })
        .collect()
}

/// Each run of `values` folded by `op` (inlined for each of the three).
fn fold_with<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    bounds: &[usize],
    op: impl Fn(T::Native, T::Native) -> T::Native + Copy,
) -> PrimitiveArray<T> {
    let data = values.values();
    let folded: PrimitiveArray<T> = match values.nulls().filter(|n| n.null_count() > 0) {
        None => bounds
            .windows(2)
            .map(|w| data[w[0]..w[1]].iter().copied().reduce(op))
            .collect(),
        Some(nulls) => bounds
            .windows(2)
            .map(|w| {
                (w[0]..w[1])
                    .filter(|&i| nulls.is_valid(i))
                    .map(|i| data[i])
                    .reduce(op)
            })
            .collect(),
    };
    // Keeps parameters the native type does not carry (time zone, scale).
    folded.with_data_type(values.data_type().clone())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringArray, TimestampSecondArray};
    use datafusion::arrow::datatypes::{Int64Type, TimeUnit, TimestampSecondType};

    use crate::filter_aggregate::run_bounds;

    use super::*;

    fn ints(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    #[test]
    fn runs_end_where_any_key_changes_and_nulls_are_equal() -> Result<()> {
        let a = ints(&[Some(1), Some(1), None, None, Some(2), Some(1), Some(1)]);
        let b: ArrayRef = Arc::new(StringArray::from(vec!["x", "x", "x", "x", "x", "x", "y"]));
        assert_eq!(run_bounds(&[Arc::clone(&a)], 7)?, vec![0, 2, 4, 5, 7]);
        assert_eq!(run_bounds(&[a, b], 7)?, vec![0, 2, 4, 5, 6, 7]);
        assert_eq!(run_bounds(&[ints(&[])], 0)?, vec![0]);
        assert_eq!(run_bounds(&[ints(&[Some(3)])], 1)?, vec![0, 1]);
        Ok(())
    }

    #[test]
    fn runs_reduce_to_their_extremes_sums_and_counts() -> Result<()> {
        let values = ints(&[Some(5), None, Some(-2), None, None, Some(7)]);
        let bounds = [0, 3, 5, 6];
        let reduced = |r| reduce_runs(r, Some(&values), &bounds);
        let min = reduced(Reduce::Min)?;
        let max = reduced(Reduce::Max)?;
        let sum = reduced(Reduce::Sum)?;
        let count = reduced(Reduce::Count)?;
        // The second run has no value: NULL, and a count of 0.
        assert_eq!(
            min.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(-2), None, Some(7)])
        );
        assert_eq!(
            max.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(5), None, Some(7)])
        );
        assert_eq!(
            sum.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(3), None, Some(7)])
        );
        assert_eq!(
            count.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![2, 0, 1])
        );
        let rows = reduce_runs(Reduce::Count, None, &bounds)?;
        assert_eq!(
            rows.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![3, 2, 1])
        );
        Ok(())
    }

    #[test]
    fn sums_wrap_and_float_extremes_follow_the_total_order() -> Result<()> {
        let big = ints(&[Some(i64::MAX), Some(1)]);
        let sum = reduce_runs(Reduce::Sum, Some(&big), &[0, 2])?;
        assert_eq!(sum.as_primitive::<Int64Type>().value(0), i64::MIN);
        // -0 is below 0 wherever each comes; NaN is above Infinity; a run
        // of one infinity keeps it.
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![
            -1.0,
            0.0,
            -0.0,
            -0.0,
            0.0,
            3.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]));
        let bounds = [0, 3, 6, 8, 9];
        let min = reduce_runs(Reduce::Min, Some(&floats), &bounds)?;
        let max = reduce_runs(Reduce::Max, Some(&floats), &bounds)?;
        let (min, max) = (
            min.as_primitive::<Float64Type>(),
            max.as_primitive::<Float64Type>(),
        );
        assert!(max.value(0) == 0.0 && max.value(0).is_sign_positive());
        assert_eq!(min.value(0), -1.0);
        assert!(min.value(1) == 0.0 && min.value(1).is_sign_negative());
        assert_eq!(max.value(1), 3.5);
        assert!(max.value(2).is_nan());
        assert_eq!(min.value(2), f64::INFINITY);
        assert_eq!(max.value(3), f64::NEG_INFINITY);
        assert_eq!(min.value(3), f64::NEG_INFINITY);
        Ok(())
    }

    #[test]
    fn reduced_timestamps_keep_their_time_zone() -> Result<()> {
        let at: ArrayRef =
            Arc::new(TimestampSecondArray::from(vec![10, 30, 20]).with_timezone("+02:00"));
        let max = reduce_runs(Reduce::Max, Some(&at), &[0, 3])?;
        let zoned = DataType::Timestamp(TimeUnit::Second, Some("+02:00".into()));
        assert_eq!(max.data_type(), &zoned);
        assert_eq!(max.as_primitive::<TimestampSecondType>().value(0), 30);
        Ok(())
    }

    #[test]
    fn rows_alone_count_one_unless_null() {
        let values = ints(&[Some(1), None, Some(3)]);
        let counts = per_row(Reduce::Count, Some(&values), 3);
        assert_eq!(
            counts.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![1, 0, 1])
        );
        let rows = per_row(Reduce::Count, None, 3);
        assert_eq!(
            rows.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![1, 1, 1])
        );
        assert!(Arc::ptr_eq(
            &per_row(Reduce::Max, Some(&values), 3),
            &values
        ));
    }
}
