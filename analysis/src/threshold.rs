//! The `threshold` judge: successCondition / failureCondition as CEL over `result`, with the
//! helpers Argo Rollouts users know (`len`, `isNaN`, `isInf`, `default`).

use std::fmt;
use std::sync::Arc;

use cel::extractors::Arguments;
use cel::{Context, Env, ExecutionError, Program, Value};

use crate::SpecError;
use crate::verdict::{Evidence, Judgement, Verdict, finite, format_values};

/// Compiled conditions of a threshold metric.
#[derive(Clone)]
pub struct ThresholdJudge {
    env: Arc<Env>,
    success: Option<Condition>,
    failure: Option<Condition>,
}

#[derive(Clone)]
struct Condition {
    source: String,
    program: Arc<Program>,
}

impl fmt::Debug for ThresholdJudge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThresholdJudge")
            .field("success", &self.success.as_ref().map(|c| &c.source))
            .field("failure", &self.failure.as_ref().map(|c| &c.source))
            .finish()
    }
}

impl ThresholdJudge {
    /// Compiles the conditions; `path` (e.g. `metrics[error-rate]`) prefixes field names in errors.
    pub fn new(
        success_condition: Option<&str>,
        failure_condition: Option<&str>,
        path: &str,
    ) -> Result<Self, SpecError> {
        let env = Arc::new(Env::stdlib());
        let compile = |source: Option<&str>, field: &str| -> Result<Option<Condition>, SpecError> {
            let Some(source) = source.map(str::trim).filter(|s| !s.is_empty()) else {
                return Ok(None);
            };
            let program = env
                .compile(source)
                .map_err(|error| SpecError::InvalidCondition {
                    field: format!("{path}.{field}"),
                    condition: source.to_owned(),
                    reason: error.to_string(),
                })?;
            Ok(Some(Condition {
                source: source.to_owned(),
                program: Arc::new(program),
            }))
        };
        let success = compile(success_condition, "successCondition")?;
        let failure = compile(failure_condition, "failureCondition")?;
        Ok(Self {
            env,
            success,
            failure,
        })
    }

    /// Judges one query result.
    ///
    /// An empty result or one holding NaN/Inf is never a Pass: it is Inconclusive, unless the
    /// failure condition says Fail on it (e.g. `isNaN(result[0])`), which the user asked for.
    /// Without a failure condition a false success condition is a Fail; with both, neither being
    /// true is Inconclusive (as Argo Rollouts).
    pub fn judge(&self, values: &[f64]) -> Judgement {
        let evidence = Evidence {
            values: Some(format_values(values)),
            test: Some("cel".to_owned()),
            canary_samples: Some(values.len() as u64),
            // The value a chart of the looks draws: the result's mean, most often its one value.
            canary_mean: (!values.is_empty())
                .then(|| values.iter().sum::<f64>() / values.len() as f64)
                .and_then(finite),
            ..Evidence::default()
        };
        let no_data_reason = if values.is_empty() {
            Some("the query returned no data")
        } else if values.iter().any(|value| !value.is_finite()) {
            Some("the result holds NaN or Inf")
        } else {
            None
        };
        let failure = self.failure.as_ref().map(|c| (c, self.evaluate(c, values)));
        if let Some((condition, Ok(true))) = &failure {
            let message = format!("failureCondition `{}` is true", condition.source);
            return Judgement::new(Verdict::Fail, message, evidence);
        }
        if let Some(reason) = no_data_reason {
            return Judgement::new(Verdict::Inconclusive, reason, evidence);
        }
        if let Some((condition, Err(error))) = &failure {
            let message = format!("failureCondition `{}`: {error}", condition.source);
            return Judgement::new(Verdict::Error, message, evidence);
        }
        let failure_stated = failure.is_some();
        match &self.success {
            None => Judgement::new(
                Verdict::Pass,
                if failure_stated {
                    "failureCondition is false"
                } else {
                    "no condition set; the query returned data"
                },
                evidence,
            ),
            Some(condition) => match self.evaluate(condition, values) {
                Ok(true) => Judgement::new(
                    Verdict::Pass,
                    format!("successCondition `{}` is true", condition.source),
                    evidence,
                ),
                Ok(false) if failure_stated => Judgement::new(
                    Verdict::Inconclusive,
                    format!(
                        "neither successCondition `{}` nor failureCondition is true",
                        condition.source
                    ),
                    evidence,
                ),
                Ok(false) => Judgement::new(
                    Verdict::Fail,
                    format!("successCondition `{}` is false", condition.source),
                    evidence,
                ),
                Err(error) => Judgement::new(
                    Verdict::Error,
                    format!("successCondition `{}`: {error}", condition.source),
                    evidence,
                ),
            },
        }
    }

    fn evaluate(&self, condition: &Condition, values: &[f64]) -> Result<bool, String> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        let result = Value::List(Arc::new(values.iter().map(|v| Value::Float(*v)).collect()));
        context.add_variable_from_value("result", result);
        register_helpers(&mut context).map_err(|error| error.to_string())?;
        match condition.program.execute(&context) {
            Ok(Value::Bool(answer)) => Ok(answer),
            Ok(other) => Err(format!("evaluates to {other:?}, not a bool")),
            Err(error) => Err(error.to_string()),
        }
    }
}

fn register_helpers(context: &mut Context<'_, '_>) -> Result<(), cel::DeclarationError> {
    context.add_function("len", len)?;
    context.add_function("isNaN", is_nan)?;
    context.add_function("isInf", is_inf)?;
    context.add_function("default", default)?;
    Ok(())
}

fn expect_args(name: &str, args: &[Value], count: usize) -> Result<(), ExecutionError> {
    if args.len() == count {
        Ok(())
    } else {
        Err(ExecutionError::function_error(
            name,
            format!("takes {count} argument(s), got {}", args.len()),
        ))
    }
}

/// `len(x)`: the length of a list, map or string, as Argo's `len`.
fn len(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    expect_args("len", &args, 1)?;
    let length = match &args[0] {
        Value::List(items) => items.len(),
        Value::Map(map) => map.map.len(),
        Value::String(text) => text.chars().count(),
        Value::Bytes(bytes) => bytes.len(),
        other => {
            return Err(ExecutionError::function_error(
                "len",
                format!("needs a list, map or string, got {other:?}"),
            ));
        }
    };
    Ok(Value::Int(i64::try_from(length).unwrap_or(i64::MAX)))
}

fn as_number(name: &str, value: &Value) -> Result<f64, ExecutionError> {
    match value {
        Value::Float(number) => Ok(*number),
        Value::Int(number) => Ok(*number as f64),
        Value::UInt(number) => Ok(*number as f64),
        other => Err(ExecutionError::function_error(
            name,
            format!("needs a number, got {other:?}"),
        )),
    }
}

/// `isNaN(x)`: true for a NaN double.
fn is_nan(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    expect_args("isNaN", &args, 1)?;
    Ok(Value::Bool(as_number("isNaN", &args[0])?.is_nan()))
}

/// `isInf(x)`: true for +Inf or −Inf.
fn is_inf(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    expect_args("isInf", &args, 1)?;
    Ok(Value::Bool(as_number("isInf", &args[0])?.is_infinite()))
}

/// `default(x, fallback)`: `fallback` when `x` is null or NaN, else `x`. CEL evaluates arguments
/// before the call, so an out-of-range `result[0]` is still an error: guard with `len(result)`.
fn default(Arguments(args): Arguments) -> Result<Value, ExecutionError> {
    expect_args("default", &args, 2)?;
    let missing = match &args[0] {
        Value::Null => true,
        Value::Float(number) => number.is_nan(),
        _ => false,
    };
    Ok(if missing {
        args[1].clone()
    } else {
        args[0].clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge(success: Option<&str>, failure: Option<&str>, values: &[f64]) -> Verdict {
        ThresholdJudge::new(success, failure, "metrics[m]")
            .unwrap()
            .judge(values)
            .verdict
    }

    #[test]
    fn argo_style_conditions_work() {
        assert_eq!(
            judge(Some("result[0] < 0.01"), None, &[0.005]),
            Verdict::Pass
        );
        assert_eq!(
            judge(Some("result[0] < 0.01"), None, &[0.02]),
            Verdict::Fail
        );
        let both = (Some("result[0] < 0.01"), Some("result[0] >= 0.05"));
        assert_eq!(judge(both.0, both.1, &[0.005]), Verdict::Pass);
        assert_eq!(judge(both.0, both.1, &[0.03]), Verdict::Inconclusive);
        assert_eq!(judge(both.0, both.1, &[0.07]), Verdict::Fail);
        let at_least = Some("len(result) > 0 && result[0] >= 0.99");
        assert_eq!(judge(at_least, None, &[0.995]), Verdict::Pass);
        assert_eq!(judge(at_least, None, &[0.9]), Verdict::Fail);
        assert_eq!(judge(None, Some("result[0] > 5"), &[1.0]), Verdict::Pass);
        assert_eq!(judge(None, Some("result[0] > 5"), &[6.0]), Verdict::Fail);
        assert_eq!(judge(None, None, &[1.0]), Verdict::Pass);
    }

    #[test]
    fn helpers_behave_like_argo() {
        assert_eq!(
            judge(Some("len(result) == 3"), None, &[1.0, 2.0, 3.0]),
            Verdict::Pass
        );
        assert_eq!(
            judge(Some("!isNaN(result[0])"), None, &[1.0]),
            Verdict::Pass
        );
        assert_eq!(
            judge(Some("!isInf(result[0])"), None, &[1.0]),
            Verdict::Pass
        );
        assert_eq!(
            judge(Some("default(result[0], 0.0) < 1.0"), None, &[0.5]),
            Verdict::Pass
        );
        assert_eq!(
            judge(Some("result.all(x, x < 1.0)"), None, &[0.5, 0.7]),
            Verdict::Pass
        );
    }

    #[test]
    fn empty_results_and_nan_are_inconclusive_never_pass() {
        // A success condition that would be true on NaN still does not pass it.
        assert_eq!(
            judge(Some("isNaN(result[0])"), None, &[f64::NAN]),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge(Some("result[0] < 0.01"), None, &[f64::NAN]),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge(Some("result[0] < 0.01"), None, &[f64::INFINITY]),
            Verdict::Inconclusive
        );
        // `result[0]` on an empty result is an evaluation error, but no data is Inconclusive.
        assert_eq!(
            judge(Some("result[0] < 0.01"), None, &[]),
            Verdict::Inconclusive
        );
        assert_eq!(
            judge(Some("len(result) == 0"), None, &[]),
            Verdict::Inconclusive
        );
        assert_eq!(judge(None, None, &[]), Verdict::Inconclusive);
        assert_eq!(
            judge(Some("result[0] < 0.01"), Some("result[0] >= 0.05"), &[]),
            Verdict::Inconclusive
        );
    }

    #[test]
    fn a_failure_condition_may_fail_on_nan_or_no_data() {
        assert_eq!(
            judge(None, Some("isNaN(result[0])"), &[f64::NAN]),
            Verdict::Fail
        );
        assert_eq!(
            judge(None, Some("isInf(result[0])"), &[f64::INFINITY]),
            Verdict::Fail
        );
        assert_eq!(judge(None, Some("len(result) == 0"), &[]), Verdict::Fail);
        assert_eq!(
            judge(
                Some("result[0] < 1.0"),
                Some("default(result[0], 9.0) > 5.0"),
                &[f64::NAN]
            ),
            Verdict::Fail
        );
    }

    #[test]
    fn evaluation_errors_on_real_data_are_errors() {
        let judgement = ThresholdJudge::new(Some("result[3] < 1.0"), None, "m")
            .unwrap()
            .judge(&[0.5]);
        assert_eq!(judgement.verdict, Verdict::Error, "{}", judgement.message);
        assert_eq!(judge(Some("result[0]"), None, &[0.5]), Verdict::Error);
        assert_eq!(judge(Some("isNaN('x')"), None, &[0.5]), Verdict::Error);
    }

    #[test]
    fn syntax_errors_name_the_field() {
        let error = ThresholdJudge::new(None, Some("result[0] >"), "metrics[m]").unwrap_err();
        assert!(
            error.to_string().contains("metrics[m].failureCondition"),
            "{error}"
        );
    }

    #[test]
    fn evidence_keeps_nan_visible() {
        let judgement = ThresholdJudge::new(Some("result[0] < 1.0"), None, "m")
            .unwrap()
            .judge(&[f64::NAN, 0.5]);
        assert_eq!(judgement.evidence.values.as_deref(), Some("[NaN, 0.5]"));
        assert!(serde_json::to_string(&judgement).is_ok());
    }
}
