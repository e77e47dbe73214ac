//! The dataflow specification (`POST /pde/dataflow/json`): parsing the
//! DfAnalyzer JSON into a validated model, and merging a re-posted spec into
//! the stored one (schema evolution).
//!
//! Naming follows DfAnalyzer: tags and attribute names are lowercased; a set
//! used by several transformations is one table whose task-id columns are
//! its producers then its consumers, in order of first appearance.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::error::{EngineError, Result};

/// An attribute type, as DfAnalyzer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttrType {
    #[serde(rename = "TEXT")]
    Text,
    #[serde(rename = "NUMERIC")]
    Numeric,
    #[serde(rename = "FILE")]
    File,
    #[serde(rename = "LONG_TEXT")]
    LongText,
}

impl AttrType {
    fn parse(s: &str) -> Option<AttrType> {
        match s.to_ascii_uppercase().as_str() {
            "TEXT" => Some(AttrType::Text),
            "NUMERIC" => Some(AttrType::Numeric),
            // The Python client's enum also has RDFILE (a file read by the
            // script); it is a path like FILE.
            "FILE" | "RDFILE" => Some(AttrType::File),
            "LONG_TEXT" => Some(AttrType::LongText),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AttrType::Text => "TEXT",
            AttrType::Numeric => "NUMERIC",
            AttrType::File => "FILE",
            AttrType::LongText => "LONG_TEXT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrSpec {
    pub name: String,
    pub ty: AttrType,
}

/// How a transformation uses a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetUse {
    pub set: String,
    pub output: bool,
    /// For an input: the transformation that produces it.
    pub dependency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformationSpec {
    pub tag: String,
    pub uses: Vec<SetUse>,
}

/// A set: its attributes and its task-id columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSpec {
    pub tag: String,
    pub attributes: Vec<AttrSpec>,
    /// Transformations whose tasks insert rows (`<dt>_task_id` columns).
    pub producers: Vec<String>,
    /// Transformations whose tasks consume rows produced upstream.
    pub consumers: Vec<String>,
}

impl SetSpec {
    /// Task-id column names, producers then consumers, without duplicates.
    pub fn task_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        for dt in self.producers.iter().chain(&self.consumers) {
            let c = task_column(dt);
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        cols
    }
}

pub fn task_column(dt: &str) -> String {
    format!("{dt}_task_id")
}

/// A validated dataflow specification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataflowSpec {
    pub tag: String,
    pub transformations: Vec<TransformationSpec>,
    pub sets: Vec<SetSpec>,
}

impl DataflowSpec {
    pub fn set(&self, tag: &str) -> Option<&SetSpec> {
        self.sets.iter().find(|s| s.tag == tag)
    }

    pub fn transformation(&self, tag: &str) -> Option<&TransformationSpec> {
        self.transformations.iter().find(|t| t.tag == tag)
    }

    /// Parse a `POST /pde/dataflow/json` body.
    pub fn parse(body: &Json) -> Result<DataflowSpec> {
        let obj = body
            .as_object()
            .ok_or_else(|| bad("the dataflow specification must be a JSON object"))?;
        let tag = required_tag(obj.get("tag"), "tag")?;
        let dts = match obj.get("transformations") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(a)) => a.clone(),
            Some(_) => return Err(bad("\"transformations\" must be an array")),
        };
        let mut spec = DataflowSpec {
            tag,
            transformations: Vec::new(),
            sets: Vec::new(),
        };
        // Declarations first (a consumer may appear before its producer's
        // output in the JSON only if we read every output first).
        let mut parsed = Vec::new();
        for (i, dt) in dts.iter().enumerate() {
            parsed.push(parse_transformation(dt, &format!("transformations[{i}]"))?);
        }
        for (dt, decls) in &parsed {
            for (set_use, attrs) in decls {
                if set_use.dependency.is_none() {
                    spec.declare_set(&set_use.set, attrs)?;
                }
            }
            if spec.transformation(&dt.tag).is_some() {
                return Err(bad(format!(
                    "transformation \"{}\" is declared twice",
                    dt.tag
                )));
            }
            spec.transformations.push(dt.clone());
        }
        spec.check_dependencies()?;
        spec.derive_task_columns();
        Ok(spec)
    }

    fn declare_set(&mut self, tag: &str, attrs: &[AttrSpec]) -> Result<()> {
        if let Some(existing) = self.sets.iter_mut().find(|s| s.tag == tag) {
            merge_attributes(existing, attrs)?;
        } else {
            let mut set = SetSpec {
                tag: tag.to_string(),
                attributes: Vec::new(),
                producers: Vec::new(),
                consumers: Vec::new(),
            };
            merge_attributes(&mut set, attrs)?;
            self.sets.push(set);
        }
        Ok(())
    }

    fn check_dependencies(&self) -> Result<()> {
        for dt in &self.transformations {
            for u in &dt.uses {
                let Some(dep) = &u.dependency else { continue };
                let producer = self.transformation(dep).ok_or_else(|| {
                    bad(format!(
                        "transformation \"{}\": set \"{}\" depends on transformation \"{dep}\", which the specification does not declare",
                        dt.tag, u.set
                    ))
                })?;
                if !producer.uses.iter().any(|p| p.set == u.set && p.output) {
                    return Err(bad(format!(
                        "transformation \"{}\": set \"{}\" depends on \"{dep}\", but \"{dep}\" has no output set \"{}\"",
                        dt.tag, u.set, u.set
                    )));
                }
            }
        }
        Ok(())
    }

    /// Producer and consumer lists of every set, from the uses in order.
    fn derive_task_columns(&mut self) {
        for set in &mut self.sets {
            set.producers.clear();
            set.consumers.clear();
        }
        for dt in &self.transformations {
            for u in &dt.uses {
                let Some(set) = self.sets.iter_mut().find(|s| s.tag == u.set) else {
                    continue;
                };
                if u.output {
                    push_unique(&mut set.producers, &dt.tag);
                } else {
                    if let Some(dep) = &u.dependency {
                        push_unique(&mut set.producers, dep);
                    }
                    push_unique(&mut set.consumers, &dt.tag);
                }
            }
        }
    }

    /// The spec after re-posting `newer`: everything already declared stays
    /// (with its order), new transformations, uses, sets and attributes are
    /// appended. An attribute whose type changed is a conflict.
    pub fn merge(&self, newer: &DataflowSpec) -> Result<DataflowSpec> {
        let mut out = self.clone();
        for set in &newer.sets {
            out.declare_set(&set.tag, &set.attributes)
                .map_err(|e| match e {
                    EngineError::BadRequest(m) => EngineError::Conflict(m),
                    other => other,
                })?;
        }
        for dt in &newer.transformations {
            match out.transformations.iter_mut().find(|t| t.tag == dt.tag) {
                Some(existing) => {
                    for u in &dt.uses {
                        if !existing.uses.contains(u) {
                            existing.uses.push(u.clone());
                        }
                    }
                }
                None => out.transformations.push(dt.clone()),
            }
        }
        out.check_dependencies()?;
        out.derive_task_columns();
        Ok(out)
    }
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn merge_attributes(set: &mut SetSpec, attrs: &[AttrSpec]) -> Result<()> {
    for a in attrs {
        match set.attributes.iter().find(|x| x.name == a.name) {
            Some(x) if x.ty != a.ty => {
                return Err(bad(format!(
                    "set \"{}\": attribute \"{}\" is declared as {} and as {}",
                    set.tag,
                    a.name,
                    x.ty.name(),
                    a.ty.name()
                )));
            }
            Some(_) => {}
            None => set.attributes.push(a.clone()),
        }
    }
    Ok(())
}

type Declarations = Vec<(SetUse, Vec<AttrSpec>)>;

fn parse_transformation(dt: &Json, at: &str) -> Result<(TransformationSpec, Declarations)> {
    let obj = dt
        .as_object()
        .ok_or_else(|| bad(format!("{at} must be an object")))?;
    let tag = required_tag(obj.get("tag"), &format!("{at}.tag"))?;
    let sets = match obj.get("sets") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(a)) => a.clone(),
        Some(_) => return Err(bad(format!("{at}.sets must be an array"))),
    };
    let mut uses = Vec::new();
    let mut decls = Vec::new();
    for (j, s) in sets.iter().enumerate() {
        let at = format!("{at}.sets[{j}]");
        let (u, attrs) = parse_set_use(s, &at)?;
        if uses
            .iter()
            .any(|x: &SetUse| x.set == u.set && x.output == u.output)
        {
            continue;
        }
        uses.push(u.clone());
        decls.push((u, attrs));
    }
    Ok((TransformationSpec { tag, uses }, decls))
}

fn parse_set_use(s: &Json, at: &str) -> Result<(SetUse, Vec<AttrSpec>)> {
    let obj = s
        .as_object()
        .ok_or_else(|| bad(format!("{at} must be an object")))?;
    let tag = required_tag(obj.get("tag"), &format!("{at}.tag"))?;
    let output = match obj
        .get("type")
        .and_then(Json::as_str)
        .map(str::to_ascii_uppercase)
    {
        Some(t) if t == "OUTPUT" => true,
        Some(t) if t == "INPUT" => false,
        _ => {
            return Err(bad(format!("{at}.type must be \"INPUT\" or \"OUTPUT\"")));
        }
    };
    if obj
        .get("extractors")
        .and_then(Json::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(bad(format!(
            "{at}: raw-data extractors are not supported by provdb"
        )));
    }
    let dependency = match obj.get("dependency") {
        None | Some(Json::Null) => None,
        Some(Json::String(d)) if d.trim().is_empty() => None,
        Some(Json::String(d)) => Some(normalize_tag(d)),
        Some(_) => return Err(bad(format!("{at}.dependency must be a string"))),
    };
    if output && dependency.is_some() {
        return Err(bad(format!("{at}: an OUTPUT set cannot have a dependency")));
    }
    let mut attrs = Vec::new();
    if dependency.is_none() {
        let list = match obj.get("attributes") {
            None | Some(Json::Null) => Vec::new(),
            Some(Json::Array(a)) => a.clone(),
            Some(_) => return Err(bad(format!("{at}.attributes must be an array"))),
        };
        for (k, a) in list.iter().enumerate() {
            let at = format!("{at}.attributes[{k}]");
            let name = required_tag(a.get("name"), &format!("{at}.name"))?;
            let raw = a
                .get("type")
                .and_then(Json::as_str)
                .ok_or_else(|| bad(format!("{at}.type is missing")))?;
            let ty = AttrType::parse(raw).ok_or_else(|| {
                bad(format!(
                    "{at}.type: unknown attribute type \"{raw}\" (expected TEXT, NUMERIC, FILE or LONG_TEXT)"
                ))
            })?;
            if attrs.iter().any(|x: &AttrSpec| x.name == name) {
                return Err(bad(format!("{at}: attribute \"{name}\" is declared twice")));
            }
            if name == "id" || name.ends_with("_task_id") {
                return Err(bad(format!(
                    "{at}: attribute name \"{name}\" collides with a generated column"
                )));
            }
            attrs.push(AttrSpec { name, ty });
        }
    }
    Ok((
        SetUse {
            set: tag,
            output,
            dependency,
        },
        attrs,
    ))
}

/// DfAnalyzer lowercases tags and attribute names.
pub fn normalize_tag(s: &str) -> String {
    s.trim().to_lowercase()
}

fn required_tag(v: Option<&Json>, at: &str) -> Result<String> {
    match v {
        Some(Json::String(s)) if !s.trim().is_empty() => {
            let t = normalize_tag(s);
            if t.contains('/') || t.contains('\0') {
                return Err(bad(format!("{at}: \"{s}\" contains '/' or NUL")));
            }
            Ok(t)
        }
        Some(Json::String(_)) => Err(bad(format!("{at} is empty"))),
        None | Some(Json::Null) => Err(bad(format!("{at} is missing"))),
        Some(_) => Err(bad(format!("{at} must be a string"))),
    }
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::BadRequest(msg.into())
}
