//! PROV-JSON output, and the attribute encoding provdb stores: the
//! `attributes` column of the `prov.*` tables holds a PROV-JSON attribute
//! object, so typed literals survive storage unchanged.

use serde_json::{Map, Value as Json, json};

use super::model::{Attrs, Document, Element, Value};
use crate::lineage::NodeKind;

/// One value as PROV-JSON.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Str(s) => Json::String(s.clone()),
        Value::Lang { text, lang } => json!({"$": text, "lang": lang}),
        Value::Typed { lexical, datatype } => json!({"$": lexical, "type": datatype}),
        Value::Bool(b) => Json::Bool(*b),
        Value::QName(q) => json!({"$": q, "type": "xsd:QName"}),
    }
}

/// Attributes as a PROV-JSON object; a repeated key becomes an array.
pub fn attrs_to_json(attrs: &Attrs) -> Map<String, Json> {
    let mut out = Map::new();
    for (k, v) in attrs {
        let j = value_to_json(v);
        match out.get_mut(k) {
            None => {
                out.insert(k.clone(), j);
            }
            // Values are never arrays themselves: an array is a repeated key.
            Some(Json::Array(a)) => a.push(j),
            Some(prev) => {
                let first = prev.take();
                *prev = Json::Array(vec![first, j]);
            }
        }
    }
    out
}

/// Parse one PROV-JSON attribute value (a string, number, boolean, typed
/// or language-tagged literal, or an array of those) into values. Lenient:
/// `"$"` may be a string or a number (older writers), numbers become
/// `xsd:int`/`xsd:long`/`xsd:double`, `prov:QUALIFIED_NAME` is a QName.
pub fn values_from_json(v: &Json) -> Result<Vec<Value>, String> {
    match v {
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if item.is_array() {
                    return Err("nested arrays are not PROV-JSON values".into());
                }
                out.extend(values_from_json(item)?);
            }
            Ok(out)
        }
        other => value_from_json(other).map(|v| vec![v]),
    }
}

fn number(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) if i32::try_from(i).is_ok() => Value::typed(i.to_string(), "xsd:int"),
        Some(i) => Value::typed(i.to_string(), "xsd:long"),
        None => Value::typed(n.to_string(), "xsd:double"),
    }
}

fn value_from_json(v: &Json) -> Result<Value, String> {
    Ok(match v {
        Json::String(s) => Value::Str(s.clone()),
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => number(n),
        Json::Null => return Err("null is not a PROV value".into()),
        Json::Array(_) => return Err("nested arrays are not PROV-JSON values".into()),
        Json::Object(o) => {
            let lexical = match o.get("$") {
                Some(Json::String(s)) => s.clone(),
                Some(Json::Number(n)) => n.to_string(),
                Some(Json::Bool(b)) => b.to_string(),
                _ => return Err(format!("a value object needs a \"$\" literal, got {v}")),
            };
            if let Some(unknown) = o
                .keys()
                .find(|k| !matches!(k.as_str(), "$" | "type" | "lang"))
            {
                return Err(format!("unknown key '{unknown}' in value object {v}"));
            }
            match (
                o.get("type").and_then(Json::as_str),
                o.get("lang").and_then(Json::as_str),
            ) {
                (Some("xsd:QName" | "prov:QUALIFIED_NAME"), _) => Value::QName(lexical),
                (Some("xsd:boolean"), _) if matches!(lexical.as_str(), "true" | "false") => {
                    Value::Bool(lexical == "true")
                }
                (Some(t), _) => Value::typed(lexical, t),
                (None, Some(lang)) => Value::Lang {
                    text: lexical,
                    lang: lang.to_string(),
                },
                (None, None) => Value::Str(lexical),
            }
        }
    })
}

/// Parse a stored `attributes` column value back into attributes.
pub fn attrs_from_text(text: &str) -> Result<Attrs, String> {
    let v: Json =
        serde_json::from_str(text).map_err(|e| format!("attributes are not JSON: {e}"))?;
    let Json::Object(map) = v else {
        return Err("attributes must be a JSON object".into());
    };
    let mut out = Vec::new();
    for (k, v) in &map {
        for value in values_from_json(v).map_err(|e| format!("attribute '{k}': {e}"))? {
            out.push((k.clone(), value));
        }
    }
    Ok(out)
}

fn element_json(e: &Element) -> Json {
    let mut m = Map::new();
    if e.class == NodeKind::Activity {
        if let Some(t) = &e.start {
            m.insert("prov:startTime".into(), Json::String(t.clone()));
        }
        if let Some(t) = &e.end {
            m.insert("prov:endTime".into(), Json::String(t.clone()));
        }
    }
    m.extend(attrs_to_json(&e.attrs));
    Json::Object(m)
}

/// The whole document as PROV-JSON.
pub fn to_json(doc: &Document) -> Json {
    let mut top = Map::new();
    let mut prefix = Map::new();
    for (p, iri) in &doc.namespaces {
        prefix.insert(p.clone(), Json::String(iri.clone()));
    }
    if let Some(d) = &doc.default_namespace {
        prefix.insert("default".into(), Json::String(d.clone()));
    }
    top.insert("prefix".into(), Json::Object(prefix));
    for class in [NodeKind::Entity, NodeKind::Activity, NodeKind::Agent] {
        let mut section = Map::new();
        for e in doc.elements.iter().filter(|e| e.class == class) {
            section.insert(e.id.clone(), element_json(e));
        }
        if !section.is_empty() {
            top.insert(class.name().into(), Json::Object(section));
        }
    }
    let mut blank = 0usize;
    for r in &doc.relations {
        let mut m = Map::new();
        for (name, arg) in r.spec.args.iter().zip(&r.args) {
            if let Some(a) = arg {
                m.insert(name.to_string(), Json::String(a.clone()));
            }
        }
        m.extend(attrs_to_json(&r.attrs));
        let id = r.id.clone().unwrap_or_else(|| {
            blank += 1;
            format!("_:id{blank}")
        });
        let section = top
            .entry(r.spec.name)
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(s) = section {
            s.insert(id, Json::Object(m));
        }
    }
    Json::Object(top)
}
