//! `min` and `max`: DataFusion's, with one total order for floating point.
//!
//! DataFusion's grouped accumulators for `min` and `max` of doubles (and
//! reals) compare with `partial_cmp` and start each group at the largest
//! finite value, so a group holding only `-Infinity` gets a `max` of
//! -1.797e308, a value the data never held, and where a NaN sits among a
//! group's rows changes the answer (apache/datafusion#13415, #24432). Its
//! accumulator without groups, its window accumulator and `ScalarValue`
//! already compare in IEEE 754 total order (`f64::total_cmp`: NaN above
//! `Infinity`, `-0` below `0`). Training logs do hold infinities and NaNs
//! (a diverged run's loss), so provdb registers [`min_udaf`] and
//! [`max_udaf`] in place of DataFusion's: the same functions, whose grouped
//! accumulators for `Float32` and `Float64` compare in that total order and
//! start each group at the order's far end. Every type, every other
//! accumulator and every planning property is DataFusion's.
//!
//! The optimizer code that matches aggregates finds these by name, as it
//! found DataFusion's; [`crate::run_aggregate`] reduces runs of doubles in
//! the same order.

use std::cmp::Ordering;

use datafusion::arrow::datatypes::{DataType, FieldRef, Float32Type, Float64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::min_max::{Max, Min};
use datafusion::logical_expr::expr::AggregateFunctionParams;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, GroupsAccumulator, ReversedUDAF,
    SetMonotonicity, Signature, StatisticsArgs,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// provdb's `min`.
pub fn min_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(TotalOrder {
        inner: AggregateUDF::new_from_impl(Min::new()),
        extreme: Extreme::Min,
    })
}

/// provdb's `max`.
pub fn max_udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(TotalOrder {
        inner: AggregateUDF::new_from_impl(Max::new()),
        extreme: Extreme::Max,
    })
}

/// Which end of the order a function keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Extreme {
    Min,
    Max,
}

/// DataFusion's `min` or `max` (`inner`), with grouped float accumulators
/// in total order.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TotalOrder {
    inner: AggregateUDF,
    extreme: Extreme,
}

/// A float type's total order and its two ends.
trait TotalFloat: Copy + Send + Sync + 'static {
    /// The first value of the order (a NaN with the sign bit set and every
    /// payload bit).
    const FIRST: Self;
    /// The last value of the order (a NaN with every payload bit).
    const LAST: Self;
    fn total_cmp(&self, other: &Self) -> Ordering;
}

impl TotalFloat for f64 {
    const FIRST: f64 = f64::from_bits(u64::MAX);
    const LAST: f64 = f64::from_bits(u64::MAX >> 1);
    fn total_cmp(&self, other: &f64) -> Ordering {
        f64::total_cmp(self, other)
    }
}

impl TotalFloat for f32 {
    const FIRST: f32 = f32::from_bits(u32::MAX);
    const LAST: f32 = f32::from_bits(u32::MAX >> 1);
    fn total_cmp(&self, other: &f32) -> Ordering {
        f32::total_cmp(self, other)
    }
}

/// A grouped accumulator keeping each group's `extreme` of `T` in total
/// order. Each group starts at the opposite end of the order, which any
/// value replaces or equals bit for bit; a group without a value is NULL
/// (the accumulator's null state, not the starting value, says so).
fn total_order_groups<T>(data_type: &DataType, extreme: Extreme) -> Box<dyn GroupsAccumulator>
where
    T: datafusion::arrow::datatypes::ArrowPrimitiveType + Send,
    T::Native: TotalFloat,
{
    match extreme {
        Extreme::Max => Box::new(
            PrimitiveGroupsAccumulator::<T, _>::new(data_type, |cur: &mut T::Native, new| {
                if new.total_cmp(cur) == Ordering::Greater {
                    *cur = new;
                }
            })
            .with_starting_value(T::Native::FIRST),
        ),
        Extreme::Min => Box::new(
            PrimitiveGroupsAccumulator::<T, _>::new(data_type, |cur: &mut T::Native, new| {
                if new.total_cmp(cur) == Ordering::Less {
                    *cur = new;
                }
            })
            .with_starting_value(T::Native::LAST),
        ),
    }
}

impl AggregateUDFImpl for TotalOrder {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.schema_name(params)
    }

    fn human_display(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.human_display(params)
    }

    fn display_name(&self, params: &AggregateFunctionParams) -> Result<String> {
        self.inner.display_name(params)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        self.inner.return_field(arg_fields)
    }

    fn is_nullable(&self) -> bool {
        self.inner.is_nullable()
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.accumulator(args)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type();
        match data_type {
            DataType::Float64 => Ok(total_order_groups::<Float64Type>(data_type, self.extreme)),
            DataType::Float32 => Ok(total_order_groups::<Float32Type>(data_type, self.extreme)),
            _ => self.inner.create_groups_accumulator(args),
        }
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        self.inner.create_sliding_accumulator(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        // DataFusion's answer is Identical: the function is its own reverse.
        ReversedUDAF::Identical
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn is_descending(&self) -> Option<bool> {
        self.inner.is_descending()
    }

    fn value_from_stats(&self, args: &StatisticsArgs) -> Option<ScalarValue> {
        self.inner.value_from_stats(args)
    }

    fn default_value(&self, data_type: &DataType) -> Result<ScalarValue> {
        self.inner.default_value(data_type)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.inner().set_monotonicity(data_type)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
    use datafusion::logical_expr::EmitTo;

    use super::*;

    /// Each group's extreme after `rows` (group, value) arrive in two
    /// halves, each a partition's partial state merged into the final one.
    /// Each half must hold a row of every group, as an aggregation's
    /// batches do for the groups it counts.
    fn grouped(extreme: Extreme, rows: &[(usize, Option<f64>)], groups: usize) -> Float64Array {
        let half = rows.len() / 2;
        let batch = |rows: &[(usize, Option<f64>)]| {
            let values: ArrayRef = Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>());
            let groups: Vec<usize> = rows.iter().map(|r| r.0).collect();
            (values, groups)
        };
        let run = |rows: &[(usize, Option<f64>)]| -> Result<ArrayRef> {
            let mut acc = total_order_groups::<Float64Type>(&DataType::Float64, extreme);
            let (values, group_indices) = batch(rows);
            acc.update_batch(&[values], &group_indices, None, groups)?;
            let mut state = acc.state(EmitTo::All)?;
            Ok(state.remove(0))
        };
        let (first, second) = (run(&rows[..half]), run(&rows[half..]));
        let mut acc = total_order_groups::<Float64Type>(&DataType::Float64, extreme);
        let all: Vec<usize> = (0..groups).collect();
        for state in [first, second] {
            let state = state.unwrap_or_else(|e| panic!("state: {e}"));
            acc.merge_batch(&[state], &all, groups)
                .unwrap_or_else(|e| panic!("merge: {e}"));
        }
        let out = acc
            .evaluate(EmitTo::All)
            .unwrap_or_else(|e| panic!("evaluate: {e}"));
        out.as_primitive::<Float64Type>().clone()
    }

    #[test]
    fn infinities_alone_are_their_own_extremes() {
        let rows = [
            (0, Some(f64::NEG_INFINITY)),
            (1, Some(f64::INFINITY)),
            (0, Some(f64::NEG_INFINITY)),
            (1, Some(f64::INFINITY)),
        ];
        let max = grouped(Extreme::Max, &rows, 2);
        let min = grouped(Extreme::Min, &rows, 2);
        assert_eq!(max.value(0), f64::NEG_INFINITY);
        assert_eq!(min.value(1), f64::INFINITY);
    }

    #[test]
    fn nan_is_the_largest_wherever_it_comes() {
        for rows in [
            [
                (0, Some(f64::NAN)),
                (0, Some(1.0)),
                (0, Some(2.0)),
                (0, None),
            ],
            [
                (0, Some(1.0)),
                (0, None),
                (0, Some(2.0)),
                (0, Some(f64::NAN)),
            ],
        ] {
            assert!(grouped(Extreme::Max, &rows, 1).value(0).is_nan());
            assert_eq!(grouped(Extreme::Min, &rows, 1).value(0), 1.0);
        }
    }

    #[test]
    fn minus_zero_is_below_zero_and_empty_groups_are_null() {
        let rows = [(0, Some(0.0)), (1, None), (0, Some(-0.0)), (1, None)];
        let min = grouped(Extreme::Min, &rows, 2);
        let max = grouped(Extreme::Max, &rows, 2);
        assert!(min.value(0) == 0.0 && min.value(0).is_sign_negative());
        assert!(max.value(0) == 0.0 && max.value(0).is_sign_positive());
        assert!(min.is_null(1) && max.is_null(1));
    }

    #[test]
    fn the_ends_of_the_order_are_nans_past_every_value() {
        for x in [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0] {
            assert_ne!(f64::FIRST.total_cmp(&x), Ordering::Greater);
            assert_ne!(f64::LAST.total_cmp(&x), Ordering::Less);
        }
        assert!(f32::FIRST.is_nan() && f32::LAST.is_nan());
        assert_eq!(f32::FIRST.total_cmp(&f32::NEG_INFINITY), Ordering::Less);
    }

    #[test]
    fn registered_functions_keep_their_names() {
        assert_eq!(min_udaf().name(), "min");
        assert_eq!(max_udaf().name(), "max");
    }
}
