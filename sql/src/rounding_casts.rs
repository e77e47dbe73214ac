//! Casts to integer types that round as PostgreSQL's do.
//!
//! Arrow's cast, and so DataFusion's, truncates a fraction toward zero:
//! `CAST(11.5 AS BIGINT)` is 11, and a `real` of 93.7 inserted into an
//! `integer` column is stored as 93. PostgreSQL rounds: a `real` or `double
//! precision` to the nearest integer, ties to even (`rint`: 11.5 is 12,
//! 12.5 is 12), a `numeric` to the nearest, ties away from zero (12.5 is
//! 13). [`RoundingCasts`], an analyzer rule after DataFusion's type
//! coercion (which adds the implicit casts of INSERT and UPDATE), rounds
//! the operand of every cast from a float or a decimal to an integer type
//! first: floats with [`RoundEven`], decimals with DataFusion's `round`
//! (ties away from zero), and so a number written in the statement, which
//! PostgreSQL reads as a numeric and DataFusion as a double.
//! Out-of-range values still fail as the cast fails. Output names are
//! kept.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Float32Array, Float64Array};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result, ScalarValue, exec_err};
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The analyzer rule.
#[derive(Debug, Default)]
pub struct RoundingCasts;

impl AnalyzerRule for RoundingCasts {
    fn name(&self) -> &str {
        "provdb_rounding_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(round_casts_of)
            .map(|t| t.data)
    }
}

/// `plan` with the operands of its float or decimal to integer casts
/// rounded. A node without a cast to an integer type (most) is passed by
/// after one walk of its expressions.
fn round_casts_of(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    let mut any = false;
    plan.apply_expressions(|e| {
        any = e.exists(|x| Ok(integer_cast(x).is_some()))?;
        Ok(if any {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if !any {
        return Ok(Transformed::no(plan));
    }
    let mut schema = merge_schema(&plan.inputs());
    if let LogicalPlan::TableScan(scan) = &plan {
        schema.merge(&DFSchema::try_from_qualified_schema(
            scan.table_name.clone(),
            &scan.source.schema(),
        )?);
    }
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let rewritten = expr.transform_up(|e| rounded(e, &schema))?;
        Ok(rewritten.update_data(|e| name.restore(e)))
    })
}

/// A cast from a float or a decimal to an integer type, with its operand
/// rounded; anything else unchanged. An operand whose type cannot be told
/// here (a column of an outer query) is left as it is.
fn rounded(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Some(operand) = integer_cast(&expr) else {
        return Ok(Transformed::no(expr));
    };
    let Ok(source) = operand.get_type(schema) else {
        return Ok(Transformed::no(expr));
    };
    let round = match source {
        // A number written in the statement is a numeric in PostgreSQL
        // (`CAST(12.5 AS INT)` is 13 there), DataFusion's literal a float.
        DataType::Float32 | DataType::Float64 if matches!(operand, Expr::Literal(..)) => {
            datafusion::functions::math::round()
        }
        DataType::Float32 | DataType::Float64 => round_even(),
        DataType::Decimal32(_, s)
        | DataType::Decimal64(_, s)
        | DataType::Decimal128(_, s)
        | DataType::Decimal256(_, s)
            if s > 0 =>
        {
            datafusion::functions::math::round()
        }
        _ => return Ok(Transformed::no(expr)),
    };
    let call = |e: Box<Expr>| Box::new(round.call(vec![*e]));
    Ok(Transformed::yes(match expr {
        Expr::Cast(Cast { expr, field }) => Expr::Cast(Cast {
            expr: call(expr),
            field,
        }),
        Expr::TryCast(TryCast { expr, field }) => Expr::TryCast(TryCast {
            expr: call(expr),
            field,
        }),
        other => other,
    }))
}

/// `value` ready to be cast to `target`: a float rounded to the nearest
/// integer, ties to even, when `target` is an integer type (a float bound
/// to an integer parameter is assigned as PostgreSQL assigns it);
/// anything else as it is.
pub fn rounded_for(value: ScalarValue, target: &DataType) -> ScalarValue {
    if !target.is_integer() {
        return value;
    }
    match value {
        ScalarValue::Float64(v) => ScalarValue::Float64(v.map(f64::round_ties_even)),
        ScalarValue::Float32(v) => ScalarValue::Float32(v.map(f32::round_ties_even)),
        other => other,
    }
}

/// The parameters `plan` uses only as the operand of casts to an integer
/// type (`CAST($1 AS INT)`), with that type. Their values are rounded
/// before binding ([`rounded_for`]): the cast is analysed while the
/// parameter has no type, so the rule cannot round it.
pub fn integer_cast_params(plan: &LogicalPlan) -> HashMap<String, DataType> {
    // Per parameter: its uses, and its uses as such an operand.
    let mut uses: HashMap<String, (usize, usize, Option<DataType>)> = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Some(Expr::Placeholder(p)) = integer_cast(x)
                    && let Expr::Cast(Cast { field, .. }) | Expr::TryCast(TryCast { field, .. }) = x
                {
                    let entry = uses.entry(p.id.clone()).or_default();
                    entry.1 += 1;
                    entry.2 = Some(field.data_type().clone());
                }
                if let Expr::Placeholder(p) = x {
                    uses.entry(p.id.clone()).or_default().0 += 1;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    uses.into_iter()
        .filter_map(|(id, (all, cast, target))| (all == cast).then_some((id, target?)))
        .collect()
}

/// The operand of `expr` when it is a cast to an integer type.
fn integer_cast(expr: &Expr) -> Option<&Expr> {
    match expr {
        Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field })
            if field.data_type().is_integer() =>
        {
            Some(expr)
        }
        _ => None,
    }
}

/// The shared [`RoundEven`] function.
fn round_even() -> Arc<ScalarUDF> {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> =
        std::sync::LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(RoundEven::new())));
    Arc::clone(&UDF)
}

/// `provdb_round_even(x)`: a `real` or `double precision` rounded to the
/// nearest integer, ties to even, as PostgreSQL's `rint` (NaN and the
/// infinities unchanged).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RoundEven {
    signature: Signature,
}

impl RoundEven {
    fn new() -> Self {
        RoundEven {
            signature: Signature::uniform(
                1,
                vec![DataType::Float32, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RoundEven {
    fn name(&self) -> &str {
        "provdb_round_even"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Float64))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("provdb_round_even takes one argument");
        };
        Ok(match value {
            ColumnarValue::Scalar(ScalarValue::Float64(v)) => {
                ColumnarValue::Scalar(ScalarValue::Float64(v.map(f64::round_ties_even)))
            }
            ColumnarValue::Scalar(ScalarValue::Float32(v)) => {
                ColumnarValue::Scalar(ScalarValue::Float32(v.map(f32::round_ties_even)))
            }
            ColumnarValue::Array(a) => ColumnarValue::Array(round_array(a)?),
            ColumnarValue::Scalar(other) => {
                return exec_err!("provdb_round_even of {}", other.data_type());
            }
        })
    }
}

fn round_array(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(match a.data_type() {
        DataType::Float64 => {
            let rounded: Float64Array = a.as_primitive::<Float64Type>().unary(f64::round_ties_even);
            Arc::new(rounded)
        }
        DataType::Float32 => {
            let rounded: Float32Array = a.as_primitive::<Float32Type>().unary(f32::round_ties_even);
            Arc::new(rounded)
        }
        other => return exec_err!("provdb_round_even of {other}"),
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Array;

    use super::*;

    #[tokio::test]
    async fn parameters_used_only_under_integer_casts_are_found() {
        let state = datafusion::prelude::SessionContext::new().state();
        let plan = state
            .create_logical_plan("SELECT CAST($1 AS INT), $2::bigint, CAST($3 AS INT), $3 * 2.5")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut found: Vec<(String, DataType)> = integer_cast_params(&plan).into_iter().collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            found,
            [
                ("$1".to_string(), DataType::Int32),
                ("$2".to_string(), DataType::Int64)
            ],
            "$3 is also used as it is"
        );
    }

    #[test]
    fn ties_go_to_even_and_specials_stay() {
        let a: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(11.5),
            Some(12.5),
            Some(-2.5),
            Some(-2.6),
            None,
            Some(f64::INFINITY),
        ]));
        let r = round_array(&a).unwrap_or_else(|e| panic!("{e}"));
        let r = r.as_primitive::<Float64Type>();
        assert_eq!(r.value(0), 12.0);
        assert_eq!(r.value(1), 12.0);
        assert_eq!(r.value(2), -2.0);
        assert_eq!(r.value(3), -3.0);
        assert!(r.is_null(4));
        assert_eq!(r.value(5), f64::INFINITY);
    }
}
