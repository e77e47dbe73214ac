//! The in-memory PROV graph: nodes interned to compact `u32` ids, typed
//! edges kept in both directions, and the dictionaries that turn node keys
//! and relation kinds into text and back.
//!
//! Edges carry their [`Origin`]: `Derived` edges are computed from DLProv
//! rows (and change when those rows change), `User` edges are rows of
//! `prov.relation`. Both may link the same two nodes; traversal does not care.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::ids::{Existing, NodeKey, PackedKey, Sym, Symbols, indexable, table_bytes};
use super::offsets::Offsets;

/// A node's compact id: its position in [`Graph`]'s tables.
pub type NodeIdx = u32;

/// A relation kind's compact id: its position in [`Kinds`] (7 bits).
pub type KindId = u8;

/// Kind ids go up to this one; later kinds share it (see [`Kinds::intern`]).
pub const OTHER_KIND: KindId = 126;

/// Marks a removed entry in a compacted adjacency array.
const DEAD: u8 = 0x7F;

/// The high bit of a stored kind byte: the edge is a user edge.
const USER_BIT: u8 = 0x80;

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

    fn from_bits(b: u8) -> NodeKind {
        match b & 3 {
            1 => NodeKind::Activity,
            2 => NodeKind::Agent,
            _ => NodeKind::Entity,
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
/// where the edge comes from. Stored as 5 bytes (node, kind | origin bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub node: NodeIdx,
    pub kind: KindId,
    pub origin: Origin,
}

impl Edge {
    fn kind_byte(self) -> u8 {
        match self.origin {
            Origin::Derived => self.kind,
            Origin::User => self.kind | USER_BIT,
        }
    }

    fn from_parts(node: NodeIdx, byte: u8) -> Edge {
        Edge {
            node,
            kind: byte & !USER_BIT,
            origin: if byte & USER_BIT != 0 {
                Origin::User
            } else {
                Origin::Derived
            },
        }
    }
}

/// One direction of adjacency: a compacted part (CSR: per-node offsets into
/// parallel node and kind arrays, removed entries marked dead) and the
/// edges added since the last compaction. Compaction runs when the added
/// and dead entries reach half the compacted ones, so its cost is amortized
/// over the writes.
#[derive(Debug, Default)]
struct Adjacency {
    offsets: Offsets,
    nodes: Vec<NodeIdx>,
    kinds: Vec<u8>,
    added: hashbrown::HashMap<NodeIdx, Vec<Edge>>,
    /// One bit per node: whether `added` has an entry for it (a walk reads
    /// the bit, not the hash map, for the many nodes without one).
    has_added: Vec<u64>,
    added_len: usize,
    dead: usize,
}

impl Adjacency {
    #[inline]
    fn base(&self, n: NodeIdx) -> std::ops::Range<usize> {
        self.offsets.range(n as usize)
    }

    fn edges(&self, n: NodeIdx) -> impl Iterator<Item = Edge> + '_ {
        let r = self.base(n);
        let base = self.nodes[r.clone()]
            .iter()
            .zip(&self.kinds[r])
            .filter(|(_, k)| **k != DEAD)
            .map(|(&node, &k)| Edge::from_parts(node, k));
        let added: &[Edge] = if self.has_added(n) {
            self.added.get(&n).map_or(&[], Vec::as_slice)
        } else {
            &[]
        };
        base.chain(added.iter().copied())
    }

    /// Call `f` with each edge of `n`: the loop form of [`Adjacency::edges`]
    /// that walks use (plain loops over the two slices).
    #[inline]
    fn for_each(&self, n: NodeIdx, mut f: impl FnMut(Edge)) {
        let r = self.base(n);
        for (&node, &k) in self.nodes[r.clone()].iter().zip(&self.kinds[r]) {
            if k != DEAD {
                f(Edge::from_parts(node, k));
            }
        }
        if self.has_added(n)
            && let Some(list) = self.added.get(&n)
        {
            list.iter().copied().for_each(f);
        }
    }

    #[inline]
    fn has_added(&self, n: NodeIdx) -> bool {
        self.has_added
            .get(n as usize / 64)
            .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
    }

    fn push(&mut self, n: NodeIdx, e: Edge) {
        let word = n as usize / 64;
        if word >= self.has_added.len() {
            self.has_added.resize(word + 1, 0);
        }
        self.has_added[word] |= 1u64 << (n % 64);
        self.added.entry(n).or_default().push(e);
        self.added_len += 1;
    }

    fn remove(&mut self, n: NodeIdx, e: Edge) -> bool {
        if let Some(list) = self.added.get_mut(&n)
            && let Some(i) = list.iter().rposition(|x| *x == e)
        {
            list.swap_remove(i);
            if list.is_empty() {
                self.added.remove(&n);
                if let Some(w) = self.has_added.get_mut(n as usize / 64) {
                    *w &= !(1u64 << (n % 64));
                }
            }
            self.added_len -= 1;
            return true;
        }
        let byte = e.kind_byte();
        for i in self.base(n) {
            if self.nodes[i] == e.node && self.kinds[i] == byte {
                self.kinds[i] = DEAD;
                self.dead += 1;
                return true;
            }
        }
        false
    }

    /// Compact when the added and dead entries reach half the compacted
    /// ones: the compacted part at least doubles between compactions, so
    /// their total cost stays within twice the edges written.
    fn wants_compaction(&self) -> bool {
        let pending = self.added_len + self.dead;
        pending > 4096 && pending * 2 > self.nodes.len()
    }

    /// Added plus dead entries: what a compaction would fold in.
    fn pending(&self) -> usize {
        self.added_len + self.dead
    }

    /// Rewrite as compacted arrays holding the live compacted entries, the
    /// added ones and `extra` edges given as (from, to, kind byte) — the
    /// bulk load's edges. Two passes: count per node, then place.
    fn compact(&mut self, node_count: usize, extra: &[(NodeIdx, NodeIdx, u8)]) {
        let added = std::mem::take(&mut self.added);
        self.has_added = Vec::new();
        let mut counts = vec![0u32; node_count];
        for (n, c) in counts.iter_mut().enumerate() {
            let r = self.base(n as NodeIdx);
            *c = self.kinds[r].iter().filter(|k| **k != DEAD).count() as u32;
        }
        for (n, list) in &added {
            if let Some(c) = counts.get_mut(*n as usize) {
                *c += list.len() as u32;
            }
        }
        for &(from, _, _) in extra {
            if let Some(c) = counts.get_mut(from as usize) {
                *c += 1;
            }
        }
        let (offsets, total) = Offsets::from_counts(&counts);
        let mut nodes = vec![0 as NodeIdx; total as usize];
        let mut kinds = vec![DEAD; total as usize];
        // `counts` becomes each node's write cursor.
        for (n, c) in counts.iter_mut().enumerate() {
            *c = offsets.get(n).unwrap_or(total);
        }
        let mut place = |from: NodeIdx, to: NodeIdx, k: u8| {
            if let Some(c) = counts.get_mut(from as usize) {
                nodes[*c as usize] = to;
                kinds[*c as usize] = k;
                *c += 1;
            }
        };
        for n in 0..node_count as NodeIdx {
            let r = self.base(n);
            for (&node, &k) in self.nodes[r.clone()].iter().zip(&self.kinds[r]) {
                if k != DEAD {
                    place(n, node, k);
                }
            }
        }
        for (n, list) in &added {
            for e in list {
                place(*n, e.node, e.kind_byte());
            }
        }
        for &(from, to, k) in extra {
            place(from, to, k);
        }
        self.offsets = offsets;
        self.nodes = nodes;
        self.kinds = kinds;
        self.added_len = 0;
        self.dead = 0;
    }

    fn heap_bytes(&self) -> usize {
        let added: usize = self
            .added
            .values()
            .map(|v| v.capacity() * std::mem::size_of::<Edge>() + 40)
            .sum();
        self.offsets.heap_bytes()
            + self.nodes.capacity() * 4
            + self.kinds.capacity()
            + self.has_added.capacity() * 8
            + added
    }
}

/// A node's class byte: the [`NodeKind`] (2 bits), whether it was
/// declared, and whether it is a DLProv row or task (the nodes shortcut
/// relations start from), so walks need not decode keys.
const DECLARED: u8 = 4;
const ROW: u8 = 8;
const TASK: u8 = 16;

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
/// At most 127 names, so lookups scan the list (no allocation per call).
#[derive(Debug, Clone)]
pub struct Kinds {
    names: Vec<String>,
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds {
            names: KNOWN_KINDS.iter().map(|k| k.0.to_string()).collect(),
        }
    }
}

impl Kinds {
    /// The id of `name`, adding it if new. The index keeps 126 distinct
    /// kinds; later ones all get [`OTHER_KIND`], shown as `other`.
    pub fn intern(&mut self, name: &str) -> KindId {
        if let Some(id) = self.get(name) {
            return id;
        }
        if self.names.len() >= OTHER_KIND as usize {
            return OTHER_KIND;
        }
        self.names.push(name.to_string());
        (self.names.len() - 1) as KindId
    }

    pub fn get(&self, name: &str) -> Option<KindId> {
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as KindId)
    }

    pub fn name(&self, id: KindId) -> &str {
        self.names.get(id as usize).map_or("other", String::as_str)
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
    keys: Vec<PackedKey>,
    index: HashTable<NodeIdx>,
    hasher: DefaultHashBuilder,
    class: Vec<u8>,
    out: Adjacency,
    inn: Adjacency,
    edges: u64,
    /// Bumped on every change; lets readers cache what they derive.
    version: u64,
    bulk: bool,
    /// Edges added in bulk mode, as (subject, object, kind byte), placed at
    /// the next compaction.
    bulk_edges: Vec<(NodeIdx, NodeIdx, u8)>,
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
        self.keys[n as usize].unpack()
    }

    /// The hash a node is indexed under: its packed key's, or its text's
    /// for a user node (whose text has no table of its own).
    fn hash_of(hasher: &DefaultHashBuilder, symbols: &Symbols, key: PackedKey) -> u64 {
        match key.user_name() {
            Some(name) => hasher.hash_one(symbols.name(name)),
            None => hasher.hash_one(key),
        }
    }

    /// The user node whose text is `text`.
    fn find_user(&self, text: &str) -> Option<NodeIdx> {
        let text = indexable(text);
        let hash = self.hasher.hash_one(text);
        self.index
            .find(hash, |&n| {
                self.keys[n as usize]
                    .user_name()
                    .is_some_and(|u| self.symbols.name(u) == text)
            })
            .copied()
    }

    pub fn lookup(&self, key: &NodeKey) -> Option<NodeIdx> {
        match PackedKey::pack(*key) {
            Some(packed) if packed.user_name().is_none() => {
                let hash = self.hasher.hash_one(packed);
                self.index
                    .find(hash, |&n| self.keys[n as usize] == packed)
                    .copied()
            }
            // A user key names its text; keys too large to pack are user
            // nodes named by their text.
            _ => self.find_user(&key.render(&self.symbols)),
        }
    }

    /// The node for `key`, created (as an inferred entity) if new.
    pub fn node(&mut self, key: NodeKey) -> NodeIdx {
        let packed = match PackedKey::pack(key) {
            Some(p) if p.user_name().is_none() => p,
            _ => return self.user_node(&key.render(&self.symbols)),
        };
        let hash = self.hasher.hash_one(packed);
        let keys = &self.keys;
        if let Some(&n) = self.index.find(hash, |&n| keys[n as usize] == packed) {
            return n;
        }
        self.add_node(packed, hash)
    }

    /// The user node named `text`, created (as an inferred entity) if new.
    fn user_node(&mut self, text: &str) -> NodeIdx {
        if let Some(n) = self.find_user(text) {
            return n;
        }
        let text = indexable(text);
        let hash = self.hasher.hash_one(text);
        let name = self.symbols.push_name(text);
        self.add_node(PackedKey::user(name), hash)
    }

    /// Append a node not yet in the index.
    fn add_node(&mut self, packed: PackedKey, hash: u64) -> NodeIdx {
        let n = NodeIdx::try_from(self.keys.len()).unwrap_or(NodeIdx::MAX);
        self.keys.push(packed);
        let (keys, hasher, symbols) = (&self.keys, &self.hasher, &self.symbols);
        self.index.insert_unique(hash, n, |&m| {
            Self::hash_of(hasher, symbols, keys[m as usize])
        });
        let unpacked = packed.unpack();
        let flags = match unpacked {
            NodeKey::Row { .. } => ROW,
            NodeKey::Task(_) => TASK,
            _ => 0,
        };
        self.class.push(match unpacked.fixed_class() {
            Some(c) => c as u8 | DECLARED | flags,
            None => NodeKind::Entity as u8,
        });
        self.version += 1;
        n
    }

    /// Record the declared class of a user node.
    pub fn declare(&mut self, n: NodeIdx, kind: NodeKind) {
        if self.key(n).fixed_class().is_none() {
            self.class[n as usize] = kind as u8 | DECLARED;
            self.version += 1;
        }
    }

    fn infer(&mut self, n: NodeIdx, kind: NodeKind) {
        let slot = &mut self.class[n as usize];
        if *slot & DECLARED == 0 {
            *slot = kind as u8;
        }
    }

    /// Whether a node's class is known (a DLProv node, or a user node with a
    /// row in `prov.entity|activity|agent`) rather than inferred.
    pub fn declared(&self, n: NodeIdx) -> bool {
        self.class[n as usize] & DECLARED != 0
    }

    /// Whether `n` is a row of a DLProv `ds_*` table.
    pub fn is_row(&self, n: NodeIdx) -> bool {
        self.class[n as usize] & ROW != 0
    }

    /// Whether `n` is a DLProv row, and whether it is a task (one read).
    pub fn row_or_task(&self, n: NodeIdx) -> (bool, bool) {
        let c = self.class[n as usize];
        (c & ROW != 0, c & TASK != 0)
    }

    /// Whether `n` is a DLProv task.
    pub fn is_task(&self, n: NodeIdx) -> bool {
        self.class[n as usize] & TASK != 0
    }

    pub fn class(&self, n: NodeIdx) -> NodeKind {
        NodeKind::from_bits(self.class[n as usize])
    }

    /// Edges from `n` (it is their subject).
    pub fn out_edges(&self, n: NodeIdx) -> impl Iterator<Item = Edge> + '_ {
        self.out.edges(n)
    }

    /// Call `f` with each edge from `n` (upstream) or into `n`.
    #[inline]
    pub fn for_each_edge(&self, n: NodeIdx, upstream: bool, f: impl FnMut(Edge)) {
        if upstream {
            self.out.for_each(n, f);
        } else {
            self.inn.for_each(n, f);
        }
    }

    /// Edges into `n` (it is their object); `Edge::node` is the subject.
    pub fn in_edges(&self, n: NodeIdx) -> impl Iterator<Item = Edge> + '_ {
        self.inn.edges(n)
    }

    /// Add the edge `subject --kind--> object`.
    pub fn add_edge(&mut self, subject: NodeIdx, kind: KindId, object: NodeIdx, origin: Origin) {
        if self.bulk {
            let byte = Edge {
                node: object,
                kind,
                origin,
            }
            .kind_byte();
            self.bulk_edges.push((subject, object, byte));
            self.infer_from(subject, kind, object, origin);
            self.edges += 1;
            self.version += 1;
            return;
        }
        self.out.push(
            subject,
            Edge {
                node: object,
                kind,
                origin,
            },
        );
        self.inn.push(
            object,
            Edge {
                node: subject,
                kind,
                origin,
            },
        );
        self.infer_from(subject, kind, object, origin);
        self.edges += 1;
        self.version += 1;
        self.maybe_compact();
    }

    /// Infer the classes of a user edge's ends from its kind.
    fn infer_from(&mut self, subject: NodeIdx, kind: KindId, object: NodeIdx, origin: Origin) {
        if origin == Origin::User
            && let Some((s, o)) = self.kinds.classes(kind)
        {
            self.infer(subject, s);
            self.infer(object, o);
        }
    }

    /// Remove one `subject --kind--> object` edge of `origin`; false if absent.
    pub fn remove_edge(
        &mut self,
        subject: NodeIdx,
        kind: KindId,
        object: NodeIdx,
        origin: Origin,
    ) -> bool {
        if !self.bulk_edges.is_empty() {
            self.compact();
        }
        let removed = self.out.remove(
            subject,
            Edge {
                node: object,
                kind,
                origin,
            },
        );
        if removed {
            self.inn.remove(
                object,
                Edge {
                    node: subject,
                    kind,
                    origin,
                },
            );
            self.edges -= 1;
            self.version += 1;
            self.maybe_compact();
        }
        removed
    }

    fn maybe_compact(&mut self) {
        if !self.bulk && (self.out.wants_compaction() || self.inn.wants_compaction()) {
            self.compact();
        }
    }

    /// Bulk loading: edges are only collected until [`Graph::compact`]
    /// places them all at once (the initial build). Reads in between do not
    /// see them.
    pub fn set_bulk(&mut self, bulk: bool) {
        self.bulk = bulk;
    }

    /// Edges added or removed since the last compaction (one direction).
    pub fn pending_edges(&self) -> usize {
        self.out.pending()
    }

    /// Whether a compaction is worth running while writes pause: walks
    /// probe a hash map for every node with edges added since the last
    /// compaction, which after a bulk load can be a third of the graph
    /// (a deep closure then takes ~3x as long), while writes compact only
    /// when half the edges are pending.
    pub fn wants_idle_compaction(&self) -> bool {
        let pending = self.out.pending().max(self.inn.pending());
        pending >= 1024 && pending * 16 > self.out.nodes.len()
    }

    /// Rewrite both directions as compacted arrays and release spare
    /// capacity of the node tables.
    pub fn compact(&mut self) {
        let n = self.keys.len();
        let bulk = std::mem::take(&mut self.bulk_edges);
        self.out.compact(n, &bulk);
        let reversed: Vec<(NodeIdx, NodeIdx, u8)> =
            bulk.iter().map(|&(s, o, k)| (o, s, k)).collect();
        drop(bulk);
        self.inn.compact(n, &reversed);
        self.keys.shrink_to_fit();
        self.class.shrink_to_fit();
        self.symbols.shrink_to_fit();
    }

    /// Every edge, as (subject, kind, object, origin), in node order.
    pub fn triples(&self) -> impl Iterator<Item = (NodeIdx, KindId, NodeIdx, Origin)> + '_ {
        (0..self.keys.len() as NodeIdx).flat_map(move |s| {
            self.out
                .edges(s)
                .map(move |e| (s, e.kind, e.node, e.origin))
        })
    }

    /// Text id of a node, as SQL and PROV documents show it.
    pub fn node_text(&self, n: NodeIdx) -> String {
        self.key(n).render(&self.symbols)
    }

    /// The node a text id names, if it exists.
    pub fn find(&self, text: &str) -> Option<NodeIdx> {
        match NodeKey::parse_existing(text, &self.symbols) {
            Existing::Known(key) => self.lookup(&key),
            Existing::User => self.find_user(text),
            Existing::Absent => None,
        }
    }

    /// The node a text id names, created (as an inferred entity) if new.
    pub fn node_for_text(&mut self, text: &str) -> NodeIdx {
        match NodeKey::parse(text, &mut self.symbols) {
            Some(key) => self.node(key),
            None => self.user_node(text),
        }
    }

    pub fn sym(&mut self, s: &str) -> Sym {
        self.symbols.intern(s)
    }

    /// Heap bytes of the adjacency (both directions).
    pub fn adjacency_bytes(&self) -> usize {
        self.out.heap_bytes() + self.inn.heap_bytes()
    }

    /// Heap bytes of the node tables and the id dictionary.
    pub fn dictionary_bytes(&self) -> usize {
        self.keys.capacity() * 8
            + table_bytes(self.index.capacity(), 4)
            + self.class.capacity()
            + self.symbols.heap_bytes()
    }

    /// Approximate heap bytes of the whole index, from allocation capacities.
    pub fn heap_bytes(&self) -> usize {
        self.adjacency_bytes() + self.dictionary_bytes()
    }
}
