//! `provdb_run_count(n)`: a `count` fed the counts of runs.
//!
//! Below a reduction of runs ([`super::RunAggregateExec`]) a `count(x)`
//! becomes a sum of the runs' counts. `sum` would have a different partial
//! state (a nullable `[sum]` field where `count` has a non-null `[count]`)
//! than the final `count` above it merges, and a different output field;
//! this function has `count`'s exactly, so nothing above the partial
//! aggregation changes.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};

/// The aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RunCount {
    signature: Signature,
}

impl Default for RunCount {
    fn default() -> Self {
        RunCount {
            signature: Signature::exact(vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for RunCount {
    fn name(&self) -> &str {
        "provdb_run_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let name = format_state_name(args.name, "count");
        Ok(vec![Arc::new(Field::new(name, DataType::Int64, false))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Total(0)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GroupTotals::default()))
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }
}

/// The counts of `values` (one Int64 column), NULL or filtered out as 0.
fn counts<'a>(
    values: &'a [ArrayRef],
    filter: Option<&'a BooleanArray>,
) -> Result<impl Iterator<Item = i64> + 'a> {
    let [counts] = values else {
        return internal_err!("provdb_run_count takes one argument");
    };
    let counts = counts.as_primitive::<Int64Type>();
    Ok((0..counts.len()).map(move |i| {
        let kept = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
        if kept && counts.is_valid(i) {
            counts.value(i)
        } else {
            0
        }
    }))
}

/// The ungrouped total.
#[derive(Debug)]
struct Total(i64);

impl Accumulator for Total {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.0 = counts(values, None)?.fold(self.0, i64::wrapping_add);
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(self.0)))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }
}

/// One total per group.
#[derive(Debug, Default)]
struct GroupTotals {
    totals: Vec<i64>,
}

impl GroupsAccumulator for GroupTotals {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.totals.resize(total_num_groups, 0);
        for (&group, count) in group_indices.iter().zip(counts(values, opt_filter)?) {
            self.totals[group] = self.totals[group].wrapping_add(count);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(Int64Array::from(
            emit_to.take_needed(&mut self.totals),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.update_batch(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let counts = Int64Array::from_iter_values(counts(values, opt_filter)?);
        Ok(vec![Arc::new(counts)])
    }

    fn size(&self) -> usize {
        self.totals.capacity() * size_of::<i64>()
    }
}
