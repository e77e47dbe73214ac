//! Task messages (`POST /pde/task/json`): parsing DfAnalyzer's JSON into a
//! typed message. Lenient where the Python client is (numbers or strings for
//! ids, `hardware` as a JSON string or object, both dependency encodings),
//! strict where a wrong guess would store wrong data.

use serde_json::{Map, Value as Json};

use super::spec::normalize_tag;
use crate::error::{EngineError, Result};

/// One task message.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    pub dataflow: String,
    pub transformation: String,
    pub identifier: i64,
    pub first: bool,
    pub exec: String,
    pub status: String,
    pub email: Option<String>,
    pub hardware: Option<Hardware>,
    /// Parent tasks: (transformation tag, identifier) pairs.
    pub parents: Vec<(String, i64)>,
    pub sets: Vec<SetElements>,
    pub performances: Vec<Performance>,
    pub subid: Option<i64>,
    pub workspace: Option<String>,
    pub resource: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

/// The rows a message carries for one set; each inner list is one row.
#[derive(Debug, Clone, PartialEq)]
pub struct SetElements {
    pub set: String,
    pub rows: Vec<Vec<Option<String>>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Performance {
    pub start: Option<String>,
    pub end: Option<String>,
    pub method: Option<String>,
    pub description: Option<String>,
    pub invocation: Option<String>,
}

/// The machine a run executes on (`hardware` in the first task's messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hardware {
    pub hostname: String,
    pub os: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub processor: Option<String>,
    pub gpus: Option<String>,
    pub in_container: Option<bool>,
}

impl TaskMessage {
    pub fn parse(body: &Json) -> Result<TaskMessage> {
        let obj = body
            .as_object()
            .ok_or_else(|| bad("a task message must be a JSON object"))?;
        let dataflow = normalize_tag(&required_str(obj, "dataflow")?);
        let transformation = match opt_str(obj, "transformation")? {
            Some(t) => normalize_tag(&t),
            None => normalize_tag(&required_str(obj, "tag")?),
        };
        let identifier = required_int(obj, "id")?;
        let first = opt_int(obj, "first")?.unwrap_or(0) == 1;
        let exec = required_str(obj, "exec")?;
        let status = required_str(obj, "status")?.to_uppercase();
        Ok(TaskMessage {
            dataflow,
            transformation,
            identifier,
            first,
            exec,
            status,
            email: opt_str(obj, "email")?,
            hardware: parse_hardware(obj.get("hardware"))?,
            parents: parse_dependency(obj.get("dependency"))?,
            sets: parse_sets(obj.get("sets"))?,
            performances: parse_performances(obj.get("performances"))?,
            subid: opt_int(obj, "subid")?,
            workspace: opt_str(obj, "workspace")?,
            resource: opt_str(obj, "resource")?,
            output: opt_str(obj, "output")?,
            error: opt_str(obj, "error")?,
        })
    }
}

/// `{"tags":[{"tag":"a"},{"tag":"b"}],"ids":[...]}` in either encoding:
/// per parent (`ids` = `[{"id":"3"},{"id":"4"}]`, one per tag) or
/// positional records (`[{"id":"3,4"}]`, one value per tag; several records
/// mean several parents per transformation).
fn parse_dependency(v: Option<&Json>) -> Result<Vec<(String, i64)>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad("dependency must be an object with \"tags\" and \"ids\""))?;
    let tags: Vec<String> = list(obj.get("tags"), "dependency.tags")?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            field_str(t, "tag")
                .map(|s| normalize_tag(&s))
                .ok_or_else(|| bad(format!("dependency.tags[{i}].tag is missing")))
        })
        .collect::<Result<_>>()?;
    let records: Vec<String> = list(obj.get("ids"), "dependency.ids")?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            field_str(t, "id").ok_or_else(|| bad(format!("dependency.ids[{i}].id is missing")))
        })
        .collect::<Result<_>>()?;
    if tags.is_empty() && records.is_empty() {
        return Ok(Vec::new());
    }
    let split: Vec<Vec<&str>> = records
        .iter()
        .map(|r| r.split(',').map(str::trim).collect())
        .collect();
    let per_parent = records.len() == tags.len() && split.iter().all(|r| r.len() == 1);
    let mut out = Vec::new();
    if per_parent {
        for (tag, id) in tags.iter().zip(&records) {
            out.push((tag.clone(), parse_identifier(id, "dependency.ids")?));
        }
        return Ok(out);
    }
    for (i, rec) in split.iter().enumerate() {
        if rec.len() != tags.len() {
            return Err(bad(format!(
                "dependency.ids[{i}]: \"{}\" has {} value(s) but there are {} dependency tag(s)",
                records[i],
                rec.len(),
                tags.len()
            )));
        }
        for (tag, id) in tags.iter().zip(rec) {
            out.push((tag.clone(), parse_identifier(id, "dependency.ids")?));
        }
    }
    Ok(out)
}

fn parse_identifier(s: &str, at: &str) -> Result<i64> {
    s.trim()
        .parse::<i64>()
        .map_err(|_| bad(format!("{at}: \"{s}\" is not an integer task id")))
}

fn parse_sets(v: Option<&Json>) -> Result<Vec<SetElements>> {
    let mut out = Vec::new();
    for (i, s) in list(v, "sets")?.iter().enumerate() {
        let at = format!("sets[{i}]");
        let set = field_str(s, "tag")
            .map(|t| normalize_tag(&t))
            .ok_or_else(|| bad(format!("{at}.tag is missing")))?;
        let elements = list(s.get("elements"), &format!("{at}.elements"))?;
        let mut rows = Vec::new();
        if elements.iter().all(|e| !e.is_array()) {
            // A single flat list of values: one row.
            if !elements.is_empty() {
                rows.push(cells(&elements, &format!("{at}.elements"))?);
            }
        } else {
            for (j, e) in elements.iter().enumerate() {
                let at = format!("{at}.elements[{j}]");
                let row = e
                    .as_array()
                    .ok_or_else(|| bad(format!("{at} must be a list of values")))?;
                rows.push(cells(row, &at)?);
            }
        }
        out.push(SetElements { set, rows });
    }
    Ok(out)
}

fn cells(values: &[Json], at: &str) -> Result<Vec<Option<String>>> {
    values
        .iter()
        .enumerate()
        .map(|(k, v)| match v {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s.clone())),
            Json::Number(n) => Ok(Some(n.to_string())),
            Json::Bool(b) => Ok(Some(b.to_string())),
            _ => Err(bad(format!(
                "{at}[{k}] must be a string, number, boolean or null"
            ))),
        })
        .collect()
}

fn parse_performances(v: Option<&Json>) -> Result<Vec<Performance>> {
    list(v, "performances")?
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if !p.is_object() {
                return Err(bad(format!("performances[{i}] must be an object")));
            }
            Ok(Performance {
                start: field_str(p, "startTime"),
                end: field_str(p, "endTime"),
                method: field_str(p, "method"),
                description: field_str(p, "description"),
                invocation: field_str(p, "invocation"),
            })
        })
        .collect()
}

/// `hardware` is a JSON *string* holding an object in DLProv's client; an
/// object is accepted too.
fn parse_hardware(v: Option<&Json>) -> Result<Option<Hardware>> {
    let parsed;
    let obj = match v {
        None | Some(Json::Null) => return Ok(None),
        Some(Json::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Json::String(s)) => {
            parsed = serde_json::from_str::<Json>(s)
                .map_err(|e| bad(format!("hardware is not valid JSON: {e}")))?;
            &parsed
        }
        Some(other) => other,
    };
    let o = obj
        .as_object()
        .ok_or_else(|| bad("hardware must be a JSON object"))?;
    let text = |k: &str| -> Option<String> {
        match o.get(k) {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(a)) => Some(
                a.iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Some(Json::Null) | None => None,
            Some(x) => Some(x.to_string()),
        }
    };
    let in_container = match o.get("in_container") {
        Some(Json::Bool(b)) => Some(*b),
        Some(Json::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => return Err(bad("hardware.in_container must be a boolean")),
        },
        Some(Json::Null) | None => None,
        Some(_) => return Err(bad("hardware.in_container must be a boolean")),
    };
    Ok(Some(Hardware {
        hostname: text("hostname").unwrap_or_else(|| "unknown".to_string()),
        os: text("os"),
        platform: text("platform"),
        architecture: text("architecture"),
        processor: text("processor"),
        gpus: text("gpus"),
        in_container,
    }))
}

fn list(v: Option<&Json>, at: &str) -> Result<Vec<Json>> {
    match v {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(a)) => Ok(a.clone()),
        Some(_) => Err(bad(format!("{at} must be an array"))),
    }
}

fn field_str(v: &Json, key: &str) -> Option<String> {
    match v.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn opt_str(obj: &Map<String, Json>, key: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(Json::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(bad(format!("\"{key}\" must be a string"))),
    }
}

fn required_str(obj: &Map<String, Json>, key: &str) -> Result<String> {
    match opt_str(obj, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(bad(format!("\"{key}\" is empty"))),
        None => Err(bad(format!("\"{key}\" is missing"))),
    }
}

fn opt_int(obj: &Map<String, Json>, key: &str) -> Result<Option<i64>> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| bad(format!("\"{key}\" must be an integer"))),
        Some(Json::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad(format!("\"{key}\": \"{s}\" is not an integer"))),
        Some(_) => Err(bad(format!("\"{key}\" must be an integer"))),
    }
}

fn required_int(obj: &Map<String, Json>, key: &str) -> Result<i64> {
    opt_int(obj, key)?.ok_or_else(|| bad(format!("\"{key}\" is missing")))
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}
