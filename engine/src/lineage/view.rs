//! The derived part of schema `prov`: what `prov.relation`, `prov.entity`,
//! `prov.activity` and `prov.agent` show beside their stored rows.
//!
//! `prov.relation` lists the edges derived from DLProv rows and the two
//! shortcut relations traversal also follows (see [`super::traverse`]):
//! `wasDerivedFrom` from each entity a task generated to each entity it
//! used, and `wasInformedBy` from a task to each task that generated
//! something it used. The node tables list the DLProv nodes and the user
//! nodes only named in relations (their class inferred).

use super::graph::{Graph, KindId, NodeIdx, NodeKind, Origin};
use super::ids::NodeKey;
use super::traverse::{KindFilter, shortcuts};

/// Derived edges, shortcuts included, as (subject, kind, object).
pub fn derived_relations(g: &Graph) -> Vec<(NodeIdx, KindId, NodeIdx)> {
    let mut rows: Vec<(NodeIdx, KindId, NodeIdx)> = g
        .triples()
        .filter(|t| t.3 == Origin::Derived)
        .map(|(s, k, o, _)| (s, k, o))
        .collect();
    let mut found = Vec::new();
    for n in 0..g.node_count() as NodeIdx {
        found.clear();
        shortcuts(g, n, true, &KindFilter::all(), &mut found);
        found.sort_unstable();
        found.dedup();
        rows.extend(found.iter().map(|&(m, k)| (n, k, m)));
    }
    rows
}

/// Nodes of class `class` that have no stored `prov.*` row: DLProv nodes
/// and user nodes only named in relations.
pub fn derived_nodes(g: &Graph, class: NodeKind) -> Vec<NodeIdx> {
    (0..g.node_count() as NodeIdx)
        .filter(|&n| g.class(n) == class)
        .filter(|&n| !matches!(g.key(n), NodeKey::User(_)) || !g.declared(n))
        .collect()
}

/// A readable label for DLProv nodes: the dataset of a row, the tag of an
/// execution or dataflow.
pub fn label(g: &Graph, n: NodeIdx) -> Option<String> {
    match g.key(n) {
        NodeKey::Row { dataset, .. } => Some(g.symbols.dataset_name(dataset).to_string()),
        NodeKey::Execution(s) | NodeKey::Dataflow(s) => Some(g.symbols.text(s).to_string()),
        _ => None,
    }
}
