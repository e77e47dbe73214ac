//! Graph output: Graphviz DOT, and SVG rendered by the `dot` program when
//! it is installed (`PROVDB_DOT` names another binary).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use super::model::{Document, Value};
use crate::error::{EngineError, Result};
use crate::lineage::NodeKind;

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    super::provn::string_literal(s, &mut out);
    out
}

/// The document as a DOT digraph in the usual PROV colours: entities are
/// yellow ellipses, activities blue boxes, agents orange houses; edges point
/// from subject to object, labelled with the relation.
pub fn to_dot(doc: &Document) -> String {
    let mut out = String::from(
        "digraph prov {\n  rankdir=BT;\n  node [fontname=\"Helvetica\", fontsize=10];\n  edge [fontname=\"Helvetica\", fontsize=8];\n",
    );
    for e in &doc.elements {
        let (shape, color) = match e.class {
            NodeKind::Entity => ("ellipse", "#FFFC87"),
            NodeKind::Activity => ("box", "#9FB1FC"),
            NodeKind::Agent => ("house", "#FED37F"),
        };
        let label = e
            .attrs
            .iter()
            .find(|(k, _)| k == "prov:label")
            .map(|(_, v): &(String, Value)| v.text())
            .unwrap_or_else(|| e.id.clone());
        let _ = writeln!(
            out,
            "  {} [shape={shape}, style=filled, fillcolor={}, label={}];",
            quoted(&e.id),
            quoted(color),
            quoted(&label)
        );
    }
    for r in &doc.relations {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quoted(r.subject()),
            quoted(r.object()),
            quoted(r.spec.name)
        );
    }
    out.push_str("}\n");
    out
}

/// The Graphviz binary to run.
fn dot_binary() -> String {
    std::env::var("PROVDB_DOT").unwrap_or_else(|_| "dot".into())
}

/// Render DOT text to SVG with Graphviz. A missing `dot` is an error that
/// says how to install it.
pub fn to_svg(dot: &str) -> Result<Vec<u8>> {
    render_with(&dot_binary(), dot)
}

fn render_with(bin: &str, dot: &str) -> Result<Vec<u8>> {
    let mut child = Command::new(bin)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            EngineError::Invalid(format!(
                "SVG output needs Graphviz, but '{bin}' could not be run ({e}); install it \
                 (apt-get install graphviz) or ask for format 'dot'"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(dot.as_bytes())
            .map_err(|e| EngineError::internal(format!("writing to {bin}: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| EngineError::internal(format!("waiting for {bin}: {e}")))?;
    if !output.status.success() {
        return Err(EngineError::internal(format!(
            "{bin} -Tsvg failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_graphviz_says_how_to_get_it() {
        let err = render_with("/nonexistent/dot", "digraph {}").expect_err("no binary");
        let msg = err.to_string();
        assert!(
            msg.contains("apt-get install graphviz") && msg.contains("format 'dot'"),
            "{msg}"
        );
    }

    #[test]
    fn labels_and_ids_are_quoted() {
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}
