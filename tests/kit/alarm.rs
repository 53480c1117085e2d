//! The template's alarms, evaluated by the tests over what the functions logged.
//!
//! MiniStack keeps function output in CloudWatch Logs but turns no EMF document into a metric
//! and evaluates no alarm over several periods, so the alarm tests do what CloudWatch would:
//! - [`emf_datapoints`] reads a function's log group and checks every EMF document in it
//!   against the Embedded Metric Format specification (one JSON object a log event, `_aws`
//!   at its top level, every dimension and metric named there a top-level member of the right
//!   type), failing on any document CloudWatch would drop;
//! - [`Template::alarm`] reads an alarm's definition from `template.yaml` (metric, dimensions,
//!   statistic, period, evaluation periods, datapoints to alarm, threshold, comparison,
//!   missing data), so the test evaluates the alarm as deployed, not a copy of it;
//! - [`AlarmSpec::evaluate`] buckets datapoints into periods aligned as CloudWatch aligns them
//!   and applies the M-out-of-N rule at the end of every complete period.

use crate::Stack;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use serde_norway::Value as Yaml;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// One metric value set from one EMF document.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    pub namespace: String,
    pub metric: String,
    pub dimensions: BTreeMap<String, String>,
    pub at_ms: u64,
    pub values: Vec<f64>,
}

const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Whether a log line claims to be an EMF document (CloudWatch looks for `_aws`).
pub fn looks_like_emf(line: &str) -> bool {
    line.contains("\"_aws\"")
}

/// The datapoints of one EMF document, checked against the specification
/// (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
pub fn parse_emf(line: &str) -> Result<Vec<Datapoint>> {
    let root: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("an EMF log event must be one JSON object: {line}"))?;
    let root = root
        .as_object()
        .with_context(|| format!("an EMF document must be a JSON object: {line}"))?;
    let aws = root
        .get("_aws")
        .and_then(Value::as_object)
        .with_context(|| {
            format!("`_aws` must be an object at the document's top level (not nested): {line}")
        })?;
    let at_ms = aws
        .get("Timestamp")
        .and_then(Value::as_u64)
        .with_context(|| format!("_aws.Timestamp must be epoch milliseconds: {line}"))?;
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .filter(|d| !d.is_empty())
        .with_context(|| format!("_aws.CloudWatchMetrics must be a non-empty array: {line}"))?;
    let mut points = Vec::new();
    for directive in directives {
        let namespace = directive["Namespace"]
            .as_str()
            .filter(|n| !n.is_empty() && n.len() <= 255)
            .with_context(|| {
                format!("a directive needs a Namespace of 1-255 characters: {line}")
            })?;
        let dimension_sets = directive["Dimensions"]
            .as_array()
            .with_context(|| format!("Dimensions must be an array of arrays: {line}"))?;
        let metrics = directive["Metrics"]
            .as_array()
            .filter(|m| m.len() <= 100)
            .with_context(|| format!("Metrics must be an array of at most 100: {line}"))?;
        for set in dimension_sets {
            let names = set.as_array().filter(|s| s.len() <= 30).with_context(|| {
                format!("a dimension set is an array of at most 30 names: {line}")
            })?;
            let mut dimensions = BTreeMap::new();
            for name in names {
                let name = name
                    .as_str()
                    .with_context(|| format!("dimension names are strings: {line}"))?;
                let value = root.get(name).and_then(Value::as_str).with_context(|| {
                    format!("dimension {name} must be a top-level string member: {line}")
                })?;
                dimensions.insert(name.to_owned(), value.to_owned());
            }
            for metric in metrics {
                let name = metric["Name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .with_context(|| format!("a metric needs a Name: {line}"))?;
                if let Some(unit) = metric.get("Unit") {
                    let unit = unit.as_str().unwrap_or_default();
                    if !UNITS.contains(&unit) {
                        bail!("metric {name} has unit {unit:?}, not a CloudWatch unit: {line}");
                    }
                }
                let values = match root.get(name) {
                    Some(Value::Number(n)) => vec![n.as_f64().unwrap_or(f64::NAN)],
                    Some(Value::Array(values)) if values.len() <= 100 => values
                        .iter()
                        .map(|v| v.as_f64().context("metric values are numbers"))
                        .collect::<Result<_>>()
                        .with_context(|| format!("metric {name}: {line}"))?,
                    _ => bail!(
                        "metric {name} must be a top-level number or array of at most 100: {line}"
                    ),
                };
                points.push(Datapoint {
                    namespace: namespace.to_owned(),
                    metric: name.to_owned(),
                    dimensions: dimensions.clone(),
                    at_ms,
                    values,
                });
            }
        }
    }
    Ok(points)
}

/// Every EMF datapoint a stack's function (by output name) logged from `since_ms` on, each
/// document checked ([`parse_emf`]; a document CloudWatch would drop fails the read), with
/// the number of documents read.
pub async fn emf_datapoints(
    stack: &Stack,
    function_output: &str,
    since_ms: u64,
) -> Result<(Vec<Datapoint>, usize)> {
    let sdk = stack.sdk().await;
    let function = stack.output(function_output)?;
    let config = aws_sdk_lambda::Client::new(&sdk)
        .get_function_configuration()
        .function_name(function)
        .send()
        .await?;
    let group = config
        .logging_config()
        .and_then(|l| l.log_group())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("/aws/lambda/{function}"));
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    // A log event's own timestamp may be the end of its invocation (a renewer invocation
    // lasts a minute): read from well before and keep documents by their own Timestamp.
    let start = since_ms.saturating_sub(120_000) as i64;
    let mut points = Vec::new();
    let mut documents = 0;
    let mut token = None;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(&group)
            .start_time(start)
            .set_next_token(token)
            .send()
            .await
            .with_context(|| format!("reading log group {group}"))?;
        for event in page.events() {
            let message = event.message().unwrap_or_default();
            if !looks_like_emf(message) {
                continue;
            }
            documents += 1;
            points.extend(
                parse_emf(message)?
                    .into_iter()
                    .filter(|p| p.at_ms >= since_ms),
            );
        }
        match page.next_token() {
            Some(next) if !page.events().is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok((points, documents))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statistic {
    Sum,
    Maximum,
    Minimum,
    Average,
    SampleCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    GreaterThanOrEqualToThreshold,
    GreaterThanThreshold,
    LessThanThreshold,
    LessThanOrEqualToThreshold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingData {
    Breaching,
    NotBreaching,
    /// `missing` and `ignore`: the period does not count either way.
    Ignore,
}

/// One alarm as the template defines it, with its references resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    pub dimensions: BTreeMap<String, String>,
    pub statistic: Statistic,
    pub period_ms: u64,
    pub evaluation_periods: usize,
    pub datapoints_to_alarm: usize,
    pub threshold: f64,
    pub comparison: Comparison,
    pub missing: MissingData,
}

/// What [`AlarmSpec::evaluate`] saw: each complete period's statistic (`None`: no data) and the
/// end of the first period at which the alarm was in ALARM.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub periods: Vec<(u64, Option<f64>)>,
    pub fired_at_ms: Option<u64>,
}

impl Evaluation {
    pub fn fired(&self) -> bool {
        self.fired_at_ms.is_some()
    }
}

impl AlarmSpec {
    pub fn selects(&self, point: &Datapoint) -> bool {
        point.namespace == self.namespace
            && point.metric == self.metric
            && point.dimensions == self.dimensions
    }

    fn statistic_of(&self, values: &[f64]) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        Some(match self.statistic {
            Statistic::Sum => values.iter().sum(),
            Statistic::Maximum => values.iter().cloned().fold(f64::MIN, f64::max),
            Statistic::Minimum => values.iter().cloned().fold(f64::MAX, f64::min),
            Statistic::Average => values.iter().sum::<f64>() / values.len() as f64,
            Statistic::SampleCount => values.len() as f64,
        })
    }

    fn breaches(&self, value: Option<f64>) -> Option<bool> {
        match value {
            Some(v) => Some(match self.comparison {
                Comparison::GreaterThanOrEqualToThreshold => v >= self.threshold,
                Comparison::GreaterThanThreshold => v > self.threshold,
                Comparison::LessThanThreshold => v < self.threshold,
                Comparison::LessThanOrEqualToThreshold => v <= self.threshold,
            }),
            None => match self.missing {
                MissingData::Breaching => Some(true),
                MissingData::NotBreaching => Some(false),
                MissingData::Ignore => None,
            },
        }
    }

    /// The alarm over `points` observed in `[from_ms, to_ms)`: periods aligned to multiples of
    /// the period (as CloudWatch aligns them), only those wholly inside the window, and the
    /// M-out-of-N rule applied at the end of each period once N complete periods are known.
    pub fn evaluate(&self, points: &[Datapoint], from_ms: u64, to_ms: u64) -> Evaluation {
        let first = from_ms.div_ceil(self.period_ms) * self.period_ms;
        let mut periods = Vec::new();
        let mut start = first;
        while start + self.period_ms <= to_ms {
            let values: Vec<f64> = points
                .iter()
                .filter(|p| self.selects(p) && (start..start + self.period_ms).contains(&p.at_ms))
                .flat_map(|p| p.values.iter().cloned())
                .collect();
            periods.push((start, self.statistic_of(&values)));
            start += self.period_ms;
        }
        let fired_at_ms = (self.evaluation_periods..=periods.len()).find_map(|end| {
            let window = &periods[end - self.evaluation_periods..end];
            let breaching = window
                .iter()
                .filter(|(_, v)| self.breaches(*v) == Some(true))
                .count();
            (breaching >= self.datapoints_to_alarm)
                .then(|| window[window.len() - 1].0 + self.period_ms)
        });
        Evaluation {
            periods,
            fired_at_ms,
        }
    }
}

impl AlarmSpec {
    /// The alarm over one phase of a test, `[start_ms, end_ms)`: only the phase's own
    /// datapoints count; its first and last periods may be partial (they hold only what the
    /// phase saw); periods before the phase count as not breaching, whatever the alarm does
    /// with missing data, since the test did not observe them. So a phase fires only on what
    /// happened in it.
    pub fn evaluate_phase(&self, points: &[Datapoint], start_ms: u64, end_ms: u64) -> Evaluation {
        let inside: Vec<Datapoint> = points
            .iter()
            .filter(|p| (start_ms..end_ms).contains(&p.at_ms))
            .cloned()
            .collect();
        let first = start_ms / self.period_ms * self.period_ms;
        let last = end_ms.div_ceil(self.period_ms) * self.period_ms;
        let mut evaluation = self.evaluate(&inside, first, last);
        let observed = evaluation.periods.clone();
        let padded: Vec<Option<bool>> =
            std::iter::repeat_n(Some(false), self.evaluation_periods - 1)
                .chain(observed.iter().map(|(_, v)| self.breaches(*v)))
                .collect();
        evaluation.fired_at_ms = (self.evaluation_periods..=padded.len()).find_map(|end| {
            let breaching = padded[end - self.evaluation_periods..end]
                .iter()
                .filter(|b| **b == Some(true))
                .count();
            (breaching >= self.datapoints_to_alarm)
                .then(|| observed[end - self.evaluation_periods].0 + self.period_ms)
        });
        evaluation
    }
}

/// `template.yaml`, for the definitions the tests evaluate.
pub struct Template {
    root: Yaml,
}

impl Template {
    pub fn load() -> Result<Self> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self> {
        Ok(Self {
            root: serde_norway::from_str(text).context("template.yaml is not YAML")?,
        })
    }

    /// Every alarm's logical id.
    pub fn alarm_ids(&self) -> Vec<String> {
        self.root["Resources"]
            .as_mapping()
            .map(|resources| {
                resources
                    .iter()
                    .filter(|(_, r)| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
                    .filter_map(|(id, _)| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Alarm `id`, with `!Ref` to a parameter taken from `parameters` or its default, and
    /// `!Ref`/`!GetAtt` to a resource from `resolve` (e.g. a function's name from the stack's
    /// outputs).
    pub fn alarm(
        &self,
        id: &str,
        parameters: &BTreeMap<String, String>,
        resolve: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AlarmSpec> {
        let resource = &self.root["Resources"][id];
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            bail!("template.yaml has no alarm {id}");
        }
        let p = &resource["Properties"];
        let value = |key: &str| -> Result<String> {
            self.resolve(&p[key], parameters, resolve)
                .with_context(|| format!("{id}.{key}"))
        };
        let number = |key: &str| -> Result<f64> {
            value(key)?
                .parse::<f64>()
                .with_context(|| format!("{id}.{key} is not a number"))
        };
        let mut dimensions = BTreeMap::new();
        for d in p["Dimensions"].as_sequence().into_iter().flatten() {
            let name = self.resolve(&d["Name"], parameters, resolve)?;
            let value = self
                .resolve(&d["Value"], parameters, resolve)
                .with_context(|| format!("{id} dimension {name}"))?;
            dimensions.insert(name, value);
        }
        let evaluation_periods = number("EvaluationPeriods")? as usize;
        Ok(AlarmSpec {
            name: id.to_owned(),
            namespace: value("Namespace")?,
            metric: value("MetricName")?,
            dimensions,
            statistic: match value("Statistic")?.as_str() {
                "Sum" => Statistic::Sum,
                "Maximum" => Statistic::Maximum,
                "Minimum" => Statistic::Minimum,
                "Average" => Statistic::Average,
                "SampleCount" => Statistic::SampleCount,
                other => bail!("{id}: statistic {other} is not evaluated here"),
            },
            period_ms: number("Period")? as u64 * 1_000,
            evaluation_periods,
            datapoints_to_alarm: if p["DatapointsToAlarm"].is_null() {
                evaluation_periods
            } else {
                number("DatapointsToAlarm")? as usize
            },
            threshold: number("Threshold")?,
            comparison: match value("ComparisonOperator")?.as_str() {
                "GreaterThanOrEqualToThreshold" => Comparison::GreaterThanOrEqualToThreshold,
                "GreaterThanThreshold" => Comparison::GreaterThanThreshold,
                "LessThanThreshold" => Comparison::LessThanThreshold,
                "LessThanOrEqualToThreshold" => Comparison::LessThanOrEqualToThreshold,
                other => bail!("{id}: comparison {other} is not evaluated here"),
            },
            missing: match p["TreatMissingData"].as_str().unwrap_or("missing") {
                "breaching" => MissingData::Breaching,
                "notBreaching" => MissingData::NotBreaching,
                _ => MissingData::Ignore,
            },
        })
    }

    fn resolve(
        &self,
        node: &Yaml,
        parameters: &BTreeMap<String, String>,
        resolve: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String> {
        match node {
            Yaml::String(s) => Ok(s.clone()),
            Yaml::Number(n) => Ok(n.to_string()),
            Yaml::Bool(b) => Ok(b.to_string()),
            Yaml::Tagged(tagged) => {
                let target = tagged
                    .value
                    .as_str()
                    .ok_or_else(|| anyhow!("{} takes a name here", tagged.tag))?;
                if tagged.tag == "!Ref" {
                    if let Some(v) = parameters.get(target) {
                        return Ok(v.clone());
                    }
                    let parameter = &self.root["Parameters"][target];
                    if !parameter.is_null() {
                        return self.resolve(&parameter["Default"], parameters, resolve);
                    }
                }
                if tagged.tag == "!Ref" || tagged.tag == "!GetAtt" {
                    return resolve(target)
                        .ok_or_else(|| anyhow!("cannot resolve {} {target}", tagged.tag));
                }
                bail!("{} is not resolved here", tagged.tag)
            }
            other => bail!("cannot read {other:?} as a value"),
        }
    }
}

/// A stack's function names by their logical ids (the outputs of the same names).
pub fn stack_resolver(stack: &Stack) -> impl Fn(&str) -> Option<String> + '_ {
    move |target| stack.output(target).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(metric: &str, at_ms: u64, value: f64) -> Datapoint {
        Datapoint {
            namespace: "Tenure".into(),
            metric: metric.into(),
            dimensions: [("Function".to_owned(), "f".to_owned())].into(),
            at_ms,
            values: vec![value],
        }
    }

    fn spec(comparison: Comparison, missing: MissingData) -> AlarmSpec {
        AlarmSpec {
            name: "a".into(),
            namespace: "Tenure".into(),
            metric: "M".into(),
            dimensions: [("Function".to_owned(), "f".to_owned())].into(),
            statistic: Statistic::Sum,
            period_ms: 60_000,
            evaluation_periods: 3,
            datapoints_to_alarm: 2,
            threshold: 5.0,
            comparison,
            missing,
        }
    }

    #[test]
    fn emf_from_the_functions_parses_into_datapoints() {
        let line = r#"{"_aws":{"Timestamp":1800000000123,"CloudWatchMetrics":[{"Namespace":"Tenure","Dimensions":[["Function","Outcome"]],"Metrics":[{"Name":"Checks"},{"Name":"CheckDuration","Unit":"Milliseconds"}]}]},"Function":"lc","Outcome":"ok","Checks":3,"CheckDuration":[1.5,2.5]}"#;
        let points = parse_emf(line).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].metric, "Checks");
        assert_eq!(points[0].values, vec![3.0]);
        assert_eq!(points[0].dimensions["Outcome"], "ok");
        assert_eq!(points[1].values, vec![1.5, 2.5]);
        assert_eq!(points[1].at_ms, 1_800_000_000_123);
    }

    #[test]
    fn documents_cloudwatch_would_drop_are_refused() {
        // `_aws` nested inside a log formatter's fields.
        assert!(parse_emf(
            r#"{"level":"INFO","fields":{"_aws":{"Timestamp":1,"CloudWatchMetrics":[]}}}"#
        )
        .is_err());
        // A dimension that is not a top-level member.
        assert!(parse_emf(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"T","Dimensions":[["Function"]],"Metrics":[{"Name":"X"}]}]},"X":1}"#).is_err());
        // A metric without its value, and a value that is not a number.
        assert!(parse_emf(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"T","Dimensions":[[]],"Metrics":[{"Name":"X"}]}]}}"#).is_err());
        assert!(parse_emf(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"T","Dimensions":[[]],"Metrics":[{"Name":"X"}]}]},"X":"1"}"#).is_err());
        // A unit CloudWatch does not know, and a timestamp that is not a number.
        assert!(parse_emf(r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"T","Dimensions":[[]],"Metrics":[{"Name":"X","Unit":"ms"}]}]},"X":1}"#).is_err());
        assert!(parse_emf(r#"{"_aws":{"Timestamp":"now","CloudWatchMetrics":[{"Namespace":"T","Dimensions":[[]],"Metrics":[{"Name":"X"}]}]},"X":1}"#).is_err());
    }

    #[test]
    fn two_breaching_periods_of_three_fire_and_one_does_not() {
        let alarm = spec(
            Comparison::GreaterThanOrEqualToThreshold,
            MissingData::NotBreaching,
        );
        let one = [point("M", 60_000, 9.0)];
        assert!(!alarm.evaluate(&one, 0, 300_000).fired());
        let two = [point("M", 60_000, 9.0), point("M", 150_000, 5.0)];
        let evaluation = alarm.evaluate(&two, 0, 300_000);
        assert_eq!(evaluation.fired_at_ms, Some(180_000));
        // Other metrics and other dimensions do not count.
        let mut other = point("M", 150_000, 5.0);
        other.dimensions.insert("Outcome".into(), "ok".into());
        assert!(!alarm
            .evaluate(&[point("M", 60_000, 9.0), other], 0, 300_000)
            .fired());
    }

    #[test]
    fn missing_data_breaches_only_when_the_alarm_says_so_and_partial_periods_are_left_out() {
        let low = spec(Comparison::LessThanThreshold, MissingData::Breaching);
        let healthy: Vec<Datapoint> = (0..5).map(|m| point("M", m * 60_000 + 1, 9.0)).collect();
        assert!(!low.evaluate(&healthy, 0, 300_000).fired());
        // Two silent minutes after three healthy ones.
        assert_eq!(
            low.evaluate(&healthy[..3], 0, 300_000).fired_at_ms,
            Some(300_000)
        );
        // A window that starts mid-period does not count that period.
        assert_eq!(low.evaluate(&healthy, 30_000, 300_000).periods.len(), 4);
    }

    #[test]
    fn a_phase_fires_only_on_its_own_data() {
        let alarm = spec(
            Comparison::GreaterThanOrEqualToThreshold,
            MissingData::NotBreaching,
        );
        // Errors before the phase do not count; the phase's own two partial minutes do.
        let points = [
            point("M", 10_000, 50.0),
            point("M", 100_000, 5.0),
            point("M", 130_000, 5.0),
        ];
        assert!(!alarm.evaluate_phase(&points, 90_000, 110_000).fired());
        let both = alarm.evaluate_phase(&points, 90_000, 140_000);
        assert_eq!(both.fired_at_ms, Some(180_000), "{both:?}");
        // A silent phase of a breaching-when-missing alarm fires once it spans the minutes.
        let low = spec(Comparison::LessThanThreshold, MissingData::Breaching);
        assert!(!low.evaluate_phase(&[], 60_000, 120_000).fired());
        assert!(low.evaluate_phase(&[], 60_000, 180_000).fired());
    }

    #[test]
    fn the_template_alarms_resolve_against_a_stack() {
        let template = Template::load().unwrap();
        let names = |target: &str| Some(format!("{target}-name"));
        let ids = template.alarm_ids();
        assert!(ids.len() >= 8, "{ids:?}");
        for id in &ids {
            template
                .alarm(id, &BTreeMap::new(), &names)
                .unwrap_or_else(|e| panic!("{id}: {e:#}"));
        }
        let rounds = template
            .alarm("RenewerRoundsAlarm", &BTreeMap::new(), &names)
            .unwrap();
        assert_eq!(rounds.metric, "RenewerRounds");
        assert_eq!(rounds.dimensions["Function"], "LeaseRenewerFunction-name");
        assert_eq!(rounds.threshold, 10.0);
        assert_eq!(rounds.missing, MissingData::Breaching);
        let failed = template
            .alarm("IrcOpsFailedAlarm", &BTreeMap::new(), &names)
            .unwrap();
        assert_eq!(failed.dimensions["Status"], "FAILED");
    }
}
