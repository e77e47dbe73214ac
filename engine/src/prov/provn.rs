//! PROV-N output (W3C PROV-N): `document ... endDocument`, namespace
//! declarations first, then one line per record with formal arguments in
//! order, `-` for absent ones.

use std::fmt::Write;

use super::model::{Attrs, Document, Element, Relation, Value};
use crate::lineage::NodeKind;

/// A double-quoted string with `\\`, `"` and control characters escaped
/// (PROV-N's string literal; DOT reads the same escapes).
pub(super) fn string_literal(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn value(v: &Value, out: &mut String) {
    match v {
        Value::Str(s) => string_literal(s, out),
        Value::Lang { text, lang } => {
            string_literal(text, out);
            let _ = write!(out, "@{lang}");
        }
        Value::Typed { lexical, datatype } => {
            string_literal(lexical, out);
            let _ = write!(out, " %% {datatype}");
        }
        Value::Bool(b) => {
            let _ = write!(out, "\"{b}\" %% xsd:boolean");
        }
        Value::QName(q) => {
            let _ = write!(out, "'{q}'");
        }
    }
}

fn attrs(a: &Attrs, out: &mut String) {
    if a.is_empty() {
        return;
    }
    out.push_str(", [");
    for (i, (k, v)) in a.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        value(v, out);
    }
    out.push(']');
}

fn element(e: &Element, out: &mut String) {
    let _ = write!(out, "  {}({}", e.class.name(), e.id);
    if e.class == NodeKind::Activity {
        let _ = write!(
            out,
            ", {}, {}",
            e.start.as_deref().unwrap_or("-"),
            e.end.as_deref().unwrap_or("-")
        );
    }
    attrs(&e.attrs, out);
    out.push_str(")\n");
}

fn relation(r: &Relation, out: &mut String) {
    let _ = write!(out, "  {}(", r.spec.name);
    if let Some(id) = &r.id {
        let _ = write!(out, "{id}; ");
    }
    for (i, a) in r.args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(a.as_deref().unwrap_or("-"));
    }
    attrs(&r.attrs, out);
    out.push_str(")\n");
}

/// The whole document as PROV-N text.
pub fn to_provn(doc: &Document) -> String {
    let mut out = String::from("document\n");
    if let Some(d) = &doc.default_namespace {
        let _ = writeln!(out, "  default <{d}>");
    }
    for (p, iri) in &doc.namespaces {
        let _ = writeln!(out, "  prefix {p} <{iri}>");
    }
    out.push('\n');
    for e in &doc.elements {
        element(e, &mut out);
    }
    for r in &doc.relations {
        relation(r, &mut out);
    }
    out.push_str("endDocument\n");
    out
}
