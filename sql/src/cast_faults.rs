//! `provdb_cast_faults(cast, text)`: per group, the least text value whose
//! cast failed.
//!
//! Eager aggregation ([`crate::eager_aggregate`]) aggregates an input
//! before the join that drops some of its rows, so a `CAST` of text is made
//! there in its NULL-on-failure form ([`crate::memo_cast::CastMode::Try`]),
//! and this aggregate carries the values that did not cast up to the join's
//! survivors, where [`crate::memo_cast::RaiseCast`] fails the query with the
//! cast's own error. A value failed where the cast is NULL and the text is
//! not. While a batch has as many NULL casts as NULL texts, none failed
//! (the cast of a NULL is NULL), which is two counts Arrow keeps: a batch
//! without a bad value costs nothing per row.

use std::mem::size_of;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::kernels::boolean::{and, and_not};
use datafusion::arrow::compute::{cast, is_null, nullif, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, GroupsAccumulator, Signature,
    Volatility,
};

/// The aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CastFaults {
    signature: Signature,
}

impl Default for CastFaults {
    fn default() -> Self {
        CastFaults {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl CastFaults {
    /// `provdb_cast_faults(cast, text)`.
    pub fn call(cast: Expr, text: Expr) -> Expr {
        AggregateUDF::new_from_impl(CastFaults::default()).call(vec![cast, text])
    }
}

impl AggregateUDFImpl for CastFaults {
    fn name(&self) -> &str {
        "provdb_cast_faults"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(LeastFault::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let name = format_state_name(args.name, "fault");
        Ok(vec![Arc::new(Field::new(name, DataType::Utf8, true))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(GroupFaults::default()))
    }
}

/// The text values of the rows whose cast failed (NULL in the other rows),
/// or None when no row's did. Rows `filter` leaves out do not count.
fn failed(values: &[ArrayRef], filter: Option<&BooleanArray>) -> Result<Option<StringArray>> {
    let [cast_values, text] = values else {
        return internal_err!("provdb_cast_faults takes two arguments");
    };
    if cast_values.null_count() == text.null_count() {
        return Ok(None);
    }
    let mut rows = and_not(&is_null(cast_values)?, &is_null(text)?)?;
    if let Some(filter) = filter {
        // a NULL in the filter leaves the row out, as false does
        rows = match filter.null_count() {
            0 => and(&rows, filter)?,
            _ => and(&rows, &prep_null_mask_filter(filter))?,
        };
    }
    let strings = cast(text, &DataType::Utf8)?;
    let kept = nullif(&strings, &datafusion::arrow::compute::not(&rows)?)?;
    Ok(Some(kept.as_string::<i32>().clone()))
}

/// Keep the lesser of `slot` and `value`.
fn keep_least(slot: &mut Option<String>, value: &str) {
    if slot.as_deref().is_none_or(|least| value < least) {
        *slot = Some(value.to_owned());
    }
}

/// The grouped form: one slot per group.
#[derive(Default)]
struct GroupFaults {
    least: Vec<Option<String>>,
}

impl GroupFaults {
    fn keep(&mut self, faults: &StringArray, group_indices: &[usize], total_num_groups: usize) {
        self.least.resize(total_num_groups, None);
        for (value, &group) in faults.iter().zip(group_indices) {
            if let Some(value) = value {
                keep_least(&mut self.least[group], value);
            }
        }
    }
}

impl GroupsAccumulator for GroupFaults {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        match failed(values, opt_filter)? {
            Some(faults) => self.keep(&faults, group_indices, total_num_groups),
            None => self.least.resize(total_num_groups, None),
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(StringArray::from(
            emit_to.take_needed(&mut self.least),
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
        let [state] = values else {
            return internal_err!("provdb_cast_faults has one state column");
        };
        self.keep(state.as_string::<i32>(), group_indices, total_num_groups);
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values.first().map_or(0, |v| v.len());
        let faults = failed(values, opt_filter)?.unwrap_or_else(|| StringArray::new_null(rows));
        Ok(vec![Arc::new(faults)])
    }

    fn size(&self) -> usize {
        let strings: usize = self.least.iter().flatten().map(String::capacity).sum();
        self.least.capacity() * size_of::<Option<String>>() + strings
    }
}

/// The ungrouped form.
#[derive(Debug, Default)]
struct LeastFault {
    least: Option<String>,
}

impl LeastFault {
    fn keep(&mut self, faults: &StringArray) {
        for value in faults.iter().flatten() {
            keep_least(&mut self.least, value);
        }
    }
}

impl Accumulator for LeastFault {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if let Some(faults) = failed(values, None)? {
            self.keep(&faults);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8(self.least.clone()))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.least.as_ref().map_or(0, String::capacity)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [state] = states else {
            return internal_err!("provdb_cast_faults has one state column");
        };
        self.keep(state.as_string::<i32>());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Float64Array;

    use super::*;

    fn arrays(casts: Vec<Option<f64>>, texts: Vec<Option<&str>>) -> Vec<ArrayRef> {
        vec![
            Arc::new(Float64Array::from(casts)),
            Arc::new(StringArray::from(texts)),
        ]
    }

    #[test]
    fn keeps_the_least_failed_value_of_each_group() {
        let mut acc = GroupFaults::default();
        // group 0: a clean row and a NULL; group 1: two bad values
        let batch = arrays(
            vec![Some(1.0), None, None, None],
            vec![Some("1"), None, Some("zeta"), Some("alpha")],
        );
        acc.update_batch(&batch, &[0, 0, 1, 1], None, 2).unwrap();
        // a clean batch adds a group and changes nothing else
        let clean = arrays(vec![Some(2.0), None], vec![Some("2"), None]);
        acc.update_batch(&clean, &[2, 0], None, 3).unwrap();
        // a row the filter leaves out does not count
        let filtered = arrays(vec![None], vec![Some("aardvark")]);
        let no = BooleanArray::from(vec![false]);
        acc.update_batch(&filtered, &[2], Some(&no), 3).unwrap();
        let state = acc.state(EmitTo::All).unwrap();
        let got: Vec<Option<&str>> = state[0].as_string::<i32>().iter().collect();
        assert_eq!(got, vec![None, Some("alpha"), None]);

        // merging partial states keeps the least per group
        let mut merged = GroupFaults::default();
        let other: ArrayRef = Arc::new(StringArray::from(vec![Some("beta"), Some("aaa")]));
        merged.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        merged.merge_batch(&[other], &[1, 2], 3).unwrap();
        let out = merged.evaluate(EmitTo::All).unwrap();
        let got: Vec<Option<&str>> = out.as_string::<i32>().iter().collect();
        assert_eq!(got, vec![None, Some("alpha"), Some("aaa")]);
    }

    #[test]
    fn the_ungrouped_form_agrees() {
        let mut acc = LeastFault::default();
        acc.update_batch(&arrays(vec![Some(1.0), None], vec![Some("1"), None]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Utf8(None));
        acc.update_batch(&arrays(vec![None, None], vec![Some("x"), Some("b")]))
            .unwrap();
        assert_eq!(acc.evaluate().unwrap(), ScalarValue::Utf8(Some("b".into())));
    }
}
