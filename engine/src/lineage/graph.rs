//! The in-memory PROV graph: nodes interned to compact `u32` ids, typed
//! edges kept in both directions, and the dictionaries that turn node keys
//! and relation kinds into text and back.
//!
//! Edges carry their [`Origin`]: `Derived` edges are computed from DLProv
//! rows (and change when those rows change), `User` edges are rows of
//! `prov.relation`. Both may link the same two nodes; traversal does not care.

use std::collections::HashMap;

use super::ids::{NodeKey, Sym, Symbols};

/// A node's compact id: its position in [`Graph`]'s tables.
pub type NodeIdx = u32;

/// A relation kind's compact id: its position in [`Kinds`].
pub type KindId = u16;

/// The three PROV node classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NodeKind {
    Entity = 0,
    Activity = 1,
    Agent = 2,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Entity => "entity",
            NodeKind::Activity => "activity",
            NodeKind::Agent => "agent",
        }
    }
}

/// Where an edge comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Origin {
    /// Computed from a DLProv row (task-id columns, task and execution rows).
    Derived = 0,
    /// A row of `prov.relation`.
    User = 1,
}

/// One adjacency entry: the node at the other end, the relation kind, and
/// where the edge comes from. 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub node: NodeIdx,
    pub kind: KindId,
    pub origin: Origin,
}

/// How sure we are of a node's class: declared (a row of `prov.entity`,
/// `prov.activity`, `prov.agent`, or a DLProv row) beats inferred from a
/// relation's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Certainty {
    Inferred,
    Declared,
}

/// The PROV relation names provdb knows, with the classes of their subject
/// and object (used to infer the class of nodes only named in relations).
pub const KNOWN_KINDS: &[(&str, NodeKind, NodeKind)] = &[
    ("used", NodeKind::Activity, NodeKind::Entity),
    ("wasGeneratedBy", NodeKind::Entity, NodeKind::Activity),
    ("wasInformedBy", NodeKind::Activity, NodeKind::Activity),
    ("wasAssociatedWith", NodeKind::Activity, NodeKind::Agent),
    ("wasDerivedFrom", NodeKind::Entity, NodeKind::Entity),
    ("hadPlan", NodeKind::Activity, NodeKind::Entity),
    ("wasAttributedTo", NodeKind::Entity, NodeKind::Agent),
    ("actedOnBehalfOf", NodeKind::Agent, NodeKind::Agent),
    ("wasStartedBy", NodeKind::Activity, NodeKind::Entity),
    ("wasEndedBy", NodeKind::Activity, NodeKind::Entity),
    ("wasInvalidatedBy", NodeKind::Entity, NodeKind::Activity),
    ("wasInfluencedBy", NodeKind::Entity, NodeKind::Entity),
    ("specializationOf", NodeKind::Entity, NodeKind::Entity),
    ("alternateOf", NodeKind::Entity, NodeKind::Entity),
    ("hadMember", NodeKind::Entity, NodeKind::Entity),
];

/// Kind ids of the relations the DLProv derivation produces.
pub mod kind {
    use super::KindId;
    pub const USED: KindId = 0;
    pub const WAS_GENERATED_BY: KindId = 1;
    pub const WAS_INFORMED_BY: KindId = 2;
    pub const WAS_ASSOCIATED_WITH: KindId = 3;
    pub const WAS_DERIVED_FROM: KindId = 4;
    pub const HAD_PLAN: KindId = 5;
}

/// Relation kind names <-> ids. Known PROV names match case-insensitively
/// and are stored in their canonical spelling; other names are kept as
/// given.
#[derive(Debug, Clone)]
pub struct Kinds {
    names: Vec<String>,
    by_lower: HashMap<String, KindId>,
}

impl Default for Kinds {
    fn default() -> Self {
        let mut k = Kinds {
            names: Vec::new(),
            by_lower: HashMap::new(),
        };
        for (name, _, _) in KNOWN_KINDS {
            k.intern(name);
        }
        k
    }
}

impl Kinds {
    /// The id of `name`, adding it if new. Saturates at `KindId::MAX` kinds.
    pub fn intern(&mut self, name: &str) -> KindId {
        let lower = name.to_ascii_lowercase();
        if let Some(id) = self.by_lower.get(&lower) {
            return *id;
        }
        let id = KindId::try_from(self.names.len()).unwrap_or(KindId::MAX);
        self.names.push(name.to_string());
        self.by_lower.insert(lower, id);
        id
    }

    pub fn get(&self, name: &str) -> Option<KindId> {
        self.by_lower.get(&name.to_ascii_lowercase()).copied()
    }

    pub fn name(&self, id: KindId) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// Subject and object classes of a known kind.
    pub fn classes(&self, id: KindId) -> Option<(NodeKind, NodeKind)> {
        KNOWN_KINDS.get(id as usize).map(|(_, s, o)| (*s, *o))
    }
}

/// The graph: nodes, their classes, and adjacency both ways.
#[derive(Debug, Default)]
pub struct Graph {
    pub symbols: Symbols,
    pub kinds: Kinds,
    keys: Vec<NodeKey>,
    index: HashMap<NodeKey, NodeIdx>,
    class: Vec<(NodeKind, Certainty)>,
    out: Vec<Vec<Edge>>,
    inn: Vec<Vec<Edge>>,
    edges: u64,
    /// Bumped on every change; lets readers cache what they derive.
    version: u64,
}

impl Graph {
    pub fn node_count(&self) -> usize {
        self.keys.len()
    }

    pub fn edge_count(&self) -> u64 {
        self.edges
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn key(&self, n: NodeIdx) -> NodeKey {
        self.keys[n as usize]
    }

    pub fn lookup(&self, key: &NodeKey) -> Option<NodeIdx> {
        self.index.get(key).copied()
    }

    /// The node for `key`, created (as an inferred entity) if new.
    pub fn node(&mut self, key: NodeKey) -> NodeIdx {
        if let Some(n) = self.index.get(&key) {
            return *n;
        }
        let n = NodeIdx::try_from(self.keys.len()).unwrap_or(NodeIdx::MAX);
        self.keys.push(key);
        self.index.insert(key, n);
        let class = key.fixed_class();
        self.class.push(match class {
            Some(c) => (c, Certainty::Declared),
            None => (NodeKind::Entity, Certainty::Inferred),
        });
        self.out.push(Vec::new());
        self.inn.push(Vec::new());
        self.version += 1;
        n
    }

    /// Record the declared class of a user node.
    pub fn declare(&mut self, n: NodeIdx, kind: NodeKind) {
        if self.keys[n as usize].fixed_class().is_none() {
            self.class[n as usize] = (kind, Certainty::Declared);
            self.version += 1;
        }
    }

    fn infer(&mut self, n: NodeIdx, kind: NodeKind) {
        let slot = &mut self.class[n as usize];
        if slot.1 == Certainty::Inferred {
            slot.0 = kind;
        }
    }

    /// Whether a node's class is known (a DLProv node, or a user node with a
    /// row in `prov.entity|activity|agent`) rather than inferred.
    pub fn declared(&self, n: NodeIdx) -> bool {
        self.class[n as usize].1 == Certainty::Declared
    }

    pub fn class(&self, n: NodeIdx) -> NodeKind {
        self.class[n as usize].0
    }

    pub fn out_edges(&self, n: NodeIdx) -> &[Edge] {
        &self.out[n as usize]
    }

    pub fn in_edges(&self, n: NodeIdx) -> &[Edge] {
        &self.inn[n as usize]
    }

    /// Add the edge `subject --kind--> object`.
    pub fn add_edge(&mut self, subject: NodeIdx, kind: KindId, object: NodeIdx, origin: Origin) {
        self.out[subject as usize].push(Edge {
            node: object,
            kind,
            origin,
        });
        self.inn[object as usize].push(Edge {
            node: subject,
            kind,
            origin,
        });
        if origin == Origin::User
            && let Some((s, o)) = self.kinds.classes(kind)
        {
            self.infer(subject, s);
            self.infer(object, o);
        }
        self.edges += 1;
        self.version += 1;
    }

    /// Remove one `subject --kind--> object` edge of `origin`; false if absent.
    pub fn remove_edge(
        &mut self,
        subject: NodeIdx,
        kind: KindId,
        object: NodeIdx,
        origin: Origin,
    ) -> bool {
        let fwd = Edge {
            node: object,
            kind,
            origin,
        };
        let back = Edge {
            node: subject,
            kind,
            origin,
        };
        let removed = remove_one(&mut self.out[subject as usize], fwd);
        if removed {
            remove_one(&mut self.inn[object as usize], back);
            self.edges -= 1;
            self.version += 1;
        }
        removed
    }

    /// Every edge, as (subject, kind, object, origin), in node order.
    pub fn triples(&self) -> impl Iterator<Item = (NodeIdx, KindId, NodeIdx, Origin)> + '_ {
        self.out.iter().enumerate().flat_map(|(s, edges)| {
            edges
                .iter()
                .map(move |e| (s as NodeIdx, e.kind, e.node, e.origin))
        })
    }

    /// Text id of a node, as SQL and PROV documents show it.
    pub fn node_text(&self, n: NodeIdx) -> String {
        self.keys[n as usize].render(&self.symbols)
    }

    /// The node a text id names, if it exists.
    pub fn find(&self, text: &str) -> Option<NodeIdx> {
        let key = NodeKey::parse_existing(text, &self.symbols)?;
        self.lookup(&key)
    }

    /// The key a text id names, interning what it needs.
    pub fn key_for_text(&mut self, text: &str) -> NodeKey {
        NodeKey::parse(text, &mut self.symbols)
    }

    pub fn sym(&mut self, s: &str) -> Sym {
        self.symbols.intern(s)
    }

    /// Approximate heap bytes held by adjacency and node tables.
    pub fn heap_bytes(&self) -> usize {
        let adjacency: usize = self
            .out
            .iter()
            .chain(self.inn.iter())
            .map(|v| v.capacity() * std::mem::size_of::<Edge>() + std::mem::size_of::<Vec<Edge>>())
            .sum();
        let nodes = self.keys.capacity() * std::mem::size_of::<NodeKey>()
            + self.class.capacity() * 2
            + self.index.capacity() * (std::mem::size_of::<NodeKey>() + 4 + 1);
        adjacency + nodes + self.symbols.heap_bytes()
    }
}

fn remove_one(list: &mut Vec<Edge>, e: Edge) -> bool {
    match list.iter().rposition(|x| *x == e) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}
