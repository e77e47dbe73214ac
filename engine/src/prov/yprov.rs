//! yProv4ML documents: find the run, its parameters, metric series and
//! artifacts in the PROV records of any of yProv4ML's three layouts
//! (`docs/prov.md`), so they land in the `ml` tables.
//!
//! - layout C (yprov4ml 3.x): `prov:type` `provml:HyperParameter`,
//!   `provml:Metric` (series in the side file named by
//!   `dcterms:identifier`), artifacts with a `dcterms:identifier` path;
//! - layout B (2.0.x): the run is the context activity with `level` 0,
//!   parameters are attributes of the other context activities, metric
//!   entities name their side file in `yProv4ML:path`;
//! - layout A (≤ 1.0): `prov-ml:type` `Parameter` and `Metric` entities,
//!   the series inline as Python list strings (parsed while reading).

use std::collections::HashMap;
use std::path::Path;

use super::cells::datetime_to_micros;
use super::model::{Attrs, Value};
use super::namespace::split;
use super::series::{locate, parse_csv};
use super::spill::{Parked, Spill};
use crate::error::{EngineError, Result};
use crate::lineage::NodeKind;

/// An element after name resolution, as the importer stores it.
#[derive(Debug, Clone)]
pub struct ElementRow {
    pub class: NodeKind,
    pub id: String,
    pub attrs: Attrs,
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// What a yProv4ML document contributes to the `ml` tables.
#[derive(Debug, Default)]
pub struct MlRows {
    pub run: String,
    pub experiment: Option<String>,
    pub layout: &'static str,
    pub user: Option<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// (name, context, value)
    pub params: Vec<(String, String, String)>,
    pub series: Vec<Series>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug)]
pub struct Series {
    pub name: String,
    pub context: String,
    pub source: Option<String>,
    pub file: Option<String>,
    /// The points, until they are written.
    pub data: Parked,
}

#[derive(Debug)]
pub struct Artifact {
    pub name: String,
    pub context: String,
    pub path: String,
    pub role: Option<String>,
    pub kind: Option<String>,
    pub size: Option<i64>,
}

/// The first value of the attribute whose local name is `local`.
fn get<'a>(attrs: &'a Attrs, local: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|(k, _)| split(k).1 == local)
        .map(|(_, v)| v)
}

fn text(attrs: &Attrs, local: &str) -> Option<String> {
    get(attrs, local).map(unwrap_literal)
}

/// A value's text, unwrapping the stringified typed dicts yProv4ML writes
/// for unsupported types (`"{'$': '0.1', 'type': 'ndarray'}"`).
fn unwrap_literal(v: &Value) -> String {
    let t = v.text();
    let s = t.trim();
    if s.starts_with("{'$':") || s.starts_with("{\"$\":") {
        let rest = &s[5..];
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"');
        if let Some(q) = quote {
            if let Some(end) = rest[1..].find(q) {
                return rest[1..1 + end].to_string();
            }
        } else if let Some(end) = rest.find(',') {
            return rest[..end].trim().to_string();
        }
    }
    t
}

fn local_id(id: &str) -> &str {
    split(id).1
}

/// `name//context` ids of layout C.
fn context_of(id: &str) -> String {
    local_id(id)
        .split_once("//")
        .map(|(_, c)| c.to_string())
        .unwrap_or_default()
}

/// Epoch seconds as text (`"1760967802.17"`) or an xsd:dateTime, to micros.
fn time_of(attrs: &Attrs, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| {
        let t = text(attrs, k)?;
        datetime_to_micros(&t).or_else(|| t.parse::<f64>().ok().map(|s| (s * 1e6) as i64))
    })
}

/// Recognise a yProv4ML document and collect its `ml` rows; `None` when the
/// document is not one. Side files are looked up from `base`.
pub fn extract(
    elements: &[ElementRow],
    inline: &mut HashMap<String, Parked>,
    spill: &mut Spill,
    associated: &HashMap<String, String>,
    base: Option<&Path>,
) -> Result<Option<MlRows>> {
    let is_a = |e: &&ElementRow| {
        e.class == NodeKind::Activity
            && text(&e.attrs, "type").as_deref() == Some("LearningExecution")
    };
    let is_b = |e: &&ElementRow| {
        e.class == NodeKind::Activity
            && text(&e.attrs, "level").as_deref() == Some("0")
            && get(&e.attrs, "experiment_name").is_some()
    };
    let is_c = |e: &&ElementRow| {
        e.class == NodeKind::Activity
            && get(&e.attrs, "experiment_name").is_some()
            && get(&e.attrs, "run_id").is_some()
            && get(&e.attrs, "level").is_none()
    };
    let (run, layout) = if let Some(r) = elements.iter().find(is_c) {
        (r, "C")
    } else if let Some(r) = elements.iter().find(is_b) {
        (r, "B")
    } else if let Some(r) = elements.iter().find(is_a) {
        (r, "A")
    } else {
        return Ok(None);
    };
    let mut out = MlRows {
        run: run.id.clone(),
        layout,
        user: associated.get(&run.id).cloned(),
        start: run
            .start
            .or_else(|| time_of(&run.attrs, &["startedAtTime", "execution_start_time"])),
        end: run
            .end
            .or_else(|| time_of(&run.attrs, &["endedAtTime", "execution_end_time"])),
        experiment: text(&run.attrs, "experiment_name"),
        ..Default::default()
    };
    match layout {
        "C" => layout_c(elements, &mut out, base, spill)?,
        "B" => layout_b(elements, &mut out, base, spill)?,
        _ => layout_a(elements, inline, &mut out)?,
    }
    Ok(Some(out))
}

fn layout_c(
    elements: &[ElementRow],
    out: &mut MlRows,
    base: Option<&Path>,
    spill: &mut Spill,
) -> Result<()> {
    for e in elements.iter().filter(|e| e.class == NodeKind::Entity) {
        let ty = text(&e.attrs, "type").unwrap_or_default();
        let name = text(&e.attrs, "label").unwrap_or_else(|| local_id(&e.id).to_string());
        let context = context_of(&e.id);
        match ty.as_str() {
            "provml:HyperParameter" => {
                let value = text(&e.attrs, "value").unwrap_or_default();
                out.params.push((name, context, value));
            }
            "provml:Metric" => {
                let file = text(&e.attrs, "identifier").filter(|f| !f.is_empty());
                let data = load_side_file(&e.id, file.as_deref(), base, spill)?;
                out.series.push(Series {
                    name,
                    context: text(&e.attrs, "context").unwrap_or(context),
                    source: text(&e.attrs, "source"),
                    file,
                    data,
                });
            }
            _ => {
                if let Some(path) = text(&e.attrs, "identifier").filter(|p| !p.is_empty()) {
                    out.artifacts.push(artifact(
                        e,
                        name,
                        context,
                        path,
                        Some(ty).filter(|t| !t.is_empty()),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn layout_b(
    elements: &[ElementRow],
    out: &mut MlRows,
    base: Option<&Path>,
    spill: &mut Spill,
) -> Result<()> {
    for e in elements {
        match e.class {
            NodeKind::Activity if e.id != out.run && get(&e.attrs, "level").is_some() => {
                let context = local_id(&e.id).to_string();
                for (k, v) in &e.attrs {
                    let key = split(k).1;
                    if key != "level" {
                        out.params
                            .push((key.to_string(), context.clone(), unwrap_literal(v)));
                    }
                }
            }
            NodeKind::Entity => {
                let name = text(&e.attrs, "label").unwrap_or_else(|| local_id(&e.id).to_string());
                let context = text(&e.attrs, "context").unwrap_or_default();
                let Some(path) = text(&e.attrs, "path").filter(|p| !p.is_empty()) else {
                    continue;
                };
                let is_metric = [".csv", ".nc", ".zarr"].iter().any(|x| path.ends_with(x))
                    && get(&e.attrs, "context").is_some();
                if is_metric {
                    let data = load_side_file(&e.id, Some(&path), base, spill)?;
                    out.series.push(Series {
                        name,
                        context,
                        source: text(&e.attrs, "source"),
                        file: Some(path),
                        data,
                    });
                } else {
                    out.artifacts.push(artifact(e, name, context, path, None));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn layout_a(
    elements: &[ElementRow],
    inline: &mut HashMap<String, Parked>,
    out: &mut MlRows,
) -> Result<()> {
    for e in elements.iter().filter(|e| e.class == NodeKind::Entity) {
        match text(&e.attrs, "type").as_deref() {
            Some("Parameter") => {
                let value = text(&e.attrs, "parameter_value").unwrap_or_default();
                out.params
                    .push((local_id(&e.id).to_string(), String::new(), value));
            }
            Some("Metric") => {
                // checked by the reader
                let data = inline.remove(&e.id).unwrap_or_default();
                out.series.push(Series {
                    name: text(&e.attrs, "name").unwrap_or_else(|| local_id(&e.id).to_string()),
                    context: text(&e.attrs, "context").unwrap_or_default(),
                    source: text(&e.attrs, "source").filter(|s| !s.is_empty()),
                    file: None,
                    data,
                });
            }
            _ => {
                if let Some(path) = text(&e.attrs, "artifact_path").filter(|p| !p.is_empty()) {
                    let name = local_id(&e.id).to_string();
                    out.artifacts.push(artifact(
                        e,
                        name,
                        String::new(),
                        path,
                        text(&e.attrs, "type"),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn artifact(
    e: &ElementRow,
    name: String,
    context: String,
    path: String,
    kind: Option<String>,
) -> Artifact {
    Artifact {
        name,
        context,
        path,
        role: text(&e.attrs, "role"),
        kind,
        size: text(&e.attrs, "file_size").and_then(|s| s.parse().ok()),
    }
}

/// Read the side file of metric entity `id` and park its series.
fn load_side_file(
    id: &str,
    file: Option<&str>,
    base: Option<&Path>,
    spill: &mut Spill,
) -> Result<Parked> {
    let Some(file) = file else {
        return Err(EngineError::Invalid(format!(
            "metric entity '{id}' names no side file"
        )));
    };
    if file.ends_with(".nc") || file.ends_with(".zarr") {
        return Err(EngineError::Invalid(format!(
            "metric entity '{id}': side file '{file}' is NetCDF or Zarr, which provdb cannot read yet \
             (log metrics as CSV: metrics_file_type=\"csv\")"
        )));
    }
    let Some(base) = base else {
        return Err(EngineError::Invalid(format!(
            "metric entity '{id}': side file '{file}' cannot be read: the document was sent without \
             its directory (import the file with `provdb import`, or pass base=<dir> to POST /prov/import)"
        )));
    };
    let path = locate(base, file).map_err(|tried| {
        EngineError::NotFound(format!(
            "metric entity '{id}': side file '{file}' not found (looked for {})",
            tried
                .iter()
                .take(4)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        EngineError::Invalid(format!(
            "metric entity '{id}': reading {}: {e}",
            path.display()
        ))
    })?;
    let mut s = parse_csv(&text).map_err(|m| {
        EngineError::Invalid(format!("metric entity '{id}': {}: {m}", path.display()))
    })?;
    s.check()
        .map_err(|m| EngineError::Invalid(format!("metric entity '{id}': {m}")))?;
    spill.park(s).map_err(|e| {
        EngineError::internal(format!(
            "metric entity '{id}': cannot set its points aside: {e}"
        ))
    })
}
