//! Breadth-first traversal over the graph, one frontier at a time: cost
//! grows with the answer, not with the graph.
//!
//! Direction: PROV relations point from the later node to the earlier one
//! (`model wasGeneratedBy train`, `train used data`), so *upstream* follows
//! edges from subject to object and *downstream* from object to subject.
//!
//! Besides stored edges the walk follows the relations `prov.relation` shows
//! as derived shortcuts: `wasDerivedFrom` between an entity a task generated
//! and the entities it used, and `wasInformedBy` between a task and the
//! tasks that generated what it used. A walk over every relation therefore
//! visits exactly what a `WITH RECURSIVE` query over `prov.relation` does,
//! at the same depths.

use std::collections::{HashMap, VecDeque};

use super::graph::{Edge, Graph, KindId, NodeIdx, Origin, kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upstream,
    Downstream,
    Both,
}

impl Direction {
    pub fn parse(s: &str) -> Option<Direction> {
        match s.to_ascii_lowercase().as_str() {
            "upstream" | "up" | "ancestors" => Some(Direction::Upstream),
            "downstream" | "down" | "descendants" => Some(Direction::Downstream),
            "both" => Some(Direction::Both),
            _ => None,
        }
    }
}

/// Which relation kinds a walk follows; `None` = all.
#[derive(Debug, Clone, Default)]
pub struct KindFilter(Option<Vec<KindId>>);

impl KindFilter {
    pub fn all() -> Self {
        KindFilter(None)
    }

    pub fn only(kinds: Vec<KindId>) -> Self {
        KindFilter(Some(kinds))
    }

    pub fn allows(&self, k: KindId) -> bool {
        self.0.as_ref().is_none_or(|v| v.contains(&k))
    }
}

/// One node reached: at `depth` hops from a start, first reached through
/// relation `kind` from node `via` (both `None` for the starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub node: NodeIdx,
    pub depth: u32,
    pub kind: Option<KindId>,
    pub via: Option<NodeIdx>,
}

impl Step {
    /// Node `node`, first reached at `depth` through relation `kind` from
    /// `via`.
    fn reached(node: NodeIdx, depth: u32, kind: KindId, via: NodeIdx) -> Step {
        Step {
            node,
            depth,
            kind: Some(kind),
            via: Some(via),
        }
    }
}

/// Send `step` to `sink` unless an earlier phase reported its node.
#[inline]
fn report(sink: &mut dyn FnMut(Step), reported: &Option<NodeSet>, step: Step) {
    if reported.as_ref().is_none_or(|r| !r.contains(step.node)) {
        sink(step);
    }
}

/// Call `f` for each edge of `n` in the walk's direction.
#[inline]
fn each_edge(g: &Graph, n: NodeIdx, upstream: bool, f: impl FnMut(Edge)) {
    g.for_each_edge(n, upstream, f);
}

/// The nodes one hop from `n`, with the relation followed.
pub fn neighbours(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    each_neighbour(g, n, upstream, f, &mut |m, k| out.push((m, k)));
}

/// Call `visit` with each node one hop from `n` and the relation followed.
#[inline]
fn each_neighbour(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    visit: &mut impl FnMut(NodeIdx, KindId),
) {
    each_edge(g, n, upstream, |e| {
        if f.allows(e.kind) {
            visit(e.node, e.kind);
        }
    });
    each_shortcut(g, n, upstream, f, visit);
}

/// The shortcut relations of `n` (see the module doc): nodes two derived
/// hops away, reported as one hop (possibly several times).
pub fn shortcuts(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    each_shortcut(g, n, upstream, f, &mut |m, k| out.push((m, k)));
}

#[inline]
fn each_shortcut(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    visit: &mut impl FnMut(NodeIdx, KindId),
) {
    let (row, task) = g.row_or_task(n);
    if row && f.allows(kind::WAS_DERIVED_FROM) {
        // entity <-generated- task -used-> entity
        let (first, second) = if upstream {
            (kind::WAS_GENERATED_BY, kind::USED)
        } else {
            (kind::USED, kind::WAS_GENERATED_BY)
        };
        two_hops(
            g,
            n,
            upstream,
            (first, second),
            kind::WAS_DERIVED_FROM,
            visit,
        );
    }
    if task && f.allows(kind::WAS_INFORMED_BY) {
        // task -used-> entity -generated-> task
        let (first, second) = if upstream {
            (kind::USED, kind::WAS_GENERATED_BY)
        } else {
            (kind::WAS_GENERATED_BY, kind::USED)
        };
        two_hops(
            g,
            n,
            upstream,
            (first, second),
            kind::WAS_INFORMED_BY,
            visit,
        );
    }
}

/// Nodes two derived hops from `n` (kinds `first` then `second`), reported
/// as one hop of kind `as_kind`.
fn two_hops(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    (first, second): (KindId, KindId),
    as_kind: KindId,
    visit: &mut impl FnMut(NodeIdx, KindId),
) {
    each_edge(g, n, upstream, |e1| {
        if e1.kind != first || e1.origin != Origin::Derived {
            return;
        }
        each_edge(g, e1.node, upstream, |e2| {
            if e2.kind == second && e2.origin == Origin::Derived && e2.node != n {
                visit(e2.node, as_kind);
            }
        });
    });
}

/// A set of nodes: a hash set while small, one bit per graph node once it
/// holds more than [`SPARSE_NODES`] nodes and 1/1024 of the graph. A dense set costs a
/// bit per graph node to allocate and clear (~1 ns per 8 bytes), which a
/// walk of a few thousand nodes in a graph of millions must not pay; a hash
/// set costs ~10-15 ns per insert, which a walk over millions of nodes must
/// not pay. The two break even near 1/1000 of the graph.
#[derive(Debug)]
enum NodeSet {
    Sparse(hashbrown::HashSet<NodeIdx>),
    Dense(Vec<u64>),
}

/// A sparse [`NodeSet`] never turns dense below this many nodes.
const SPARSE_NODES: usize = 4096;

impl Default for NodeSet {
    fn default() -> Self {
        NodeSet::Sparse(Default::default())
    }
}

impl NodeSet {
    /// An empty set with room for every node a sparse set holds, so a
    /// growing walk does not rehash on the way.
    fn with_room() -> Self {
        NodeSet::Sparse(hashbrown::HashSet::with_capacity(SPARSE_NODES))
    }

    /// Add `n`; false if it was there. `universe` is the graph's node count
    /// (it may grow between calls: writes land between levels).
    #[inline]
    fn insert(&mut self, n: NodeIdx, universe: usize) -> bool {
        match self {
            NodeSet::Sparse(set) => {
                let added = set.insert(n);
                if added && set.len() > SPARSE_NODES && set.len() > universe / 1024 {
                    self.densify(universe);
                }
                added
            }
            NodeSet::Dense(bits) => {
                let (word, bit) = (n as usize / 64, 1u64 << (n % 64));
                if word >= bits.len() {
                    bits.resize(word + 1, 0);
                }
                let added = bits[word] & bit == 0;
                bits[word] |= bit;
                added
            }
        }
    }

    #[inline]
    fn contains(&self, n: NodeIdx) -> bool {
        match self {
            NodeSet::Sparse(set) => set.contains(&n),
            NodeSet::Dense(bits) => bits
                .get(n as usize / 64)
                .is_some_and(|w| w & (1u64 << (n % 64)) != 0),
        }
    }

    fn densify(&mut self, universe: usize) {
        if let NodeSet::Sparse(set) = self {
            let mut bits = vec![0u64; universe.div_ceil(64)];
            for &n in set.iter() {
                let word = n as usize / 64;
                if word >= bits.len() {
                    bits.resize(word + 1, 0);
                }
                bits[word] |= 1u64 << (n % 64);
            }
            *self = NodeSet::Dense(bits);
        }
    }
}

/// The nodes a level starts from, visited in id order so a level reads the
/// adjacency arrays front to back (the hardware prefetches them; in
/// discovery order nearly every node of a large level costs a cache miss).
#[derive(Debug)]
enum Frontier {
    /// Sorted node ids (walks with a sparse visited set).
    List(Vec<NodeIdx>),
    /// One bit per node, set only within words `span` (walks with a dense
    /// visited set: marking a node new is then two word updates and no
    /// branch, and the id order comes free).
    Bits {
        words: Vec<u64>,
        span: std::ops::Range<usize>,
    },
}

impl Frontier {
    fn is_empty(&self) -> bool {
        match self {
            Frontier::List(v) => v.is_empty(),
            Frontier::Bits { span, .. } => span.is_empty(),
        }
    }

    /// Call `f` with each node in id order, emptying the frontier. Returns
    /// the bitmap's buffer, all-zero again, for reuse.
    fn drain(self, mut f: impl FnMut(NodeIdx)) -> Option<Vec<u64>> {
        match self {
            Frontier::List(v) => {
                v.into_iter().for_each(f);
                None
            }
            Frontier::Bits { mut words, span } => {
                let first = span.start;
                for (w, word) in words[span].iter_mut().enumerate() {
                    let mut x = std::mem::take(word);
                    while x != 0 {
                        f(((first + w) * 64) as NodeIdx + x.trailing_zeros());
                        x &= x - 1;
                    }
                }
                Some(words)
            }
        }
    }
}

/// A walk in progress; call [`Traversal::next_level`] (or
/// [`Traversal::next_level_into`], [`Traversal::next_level_count`]) until
/// it reports the end. Holds no lock: each level reads the graph it is
/// given, so writes can land between levels.
///
/// Each node is reported when first reached; its discoverer, a node of the
/// level before, is the `via` reported. The visited set is a `NodeSet`,
/// the frontier a `Frontier`. A `both` walk runs the two directions one
/// after the other, each with its own visited set, and reports a node once.
#[derive(Debug)]
pub struct Traversal {
    starts: Vec<NodeIdx>,
    phases: Vec<bool>,
    phase: usize,
    frontier: Frontier,
    visited: NodeSet,
    /// Nodes reported by the first phase (`both` only).
    reported: Option<NodeSet>,
    depth: u32,
    max_depth: u32,
    filter: KindFilter,
    started: bool,
    /// An all-zero bitmap for the next [`Frontier::Bits`].
    spare_bits: Vec<u64>,
}

impl Traversal {
    pub fn new(
        starts: Vec<NodeIdx>,
        dir: Direction,
        max_depth: Option<u32>,
        filter: KindFilter,
    ) -> Self {
        let phases = match dir {
            Direction::Upstream => vec![true],
            Direction::Downstream => vec![false],
            Direction::Both => vec![true, false],
        };
        let mut seen = hashbrown::HashSet::new();
        let starts = starts.into_iter().filter(|n| seen.insert(*n)).collect();
        Traversal {
            starts,
            phases,
            phase: 0,
            frontier: Frontier::List(Vec::new()),
            visited: NodeSet::default(),
            reported: None,
            depth: 0,
            max_depth: max_depth.unwrap_or(u32::MAX),
            filter,
            started: false,
            spare_bits: Vec::new(),
        }
    }

    /// Begin phase `self.phase`: the starts are the frontier and visited.
    fn restart_phase(&mut self, universe: usize) {
        let previous = std::mem::take(&mut self.visited);
        if self.phase == 1 {
            self.reported = Some(previous);
        }
        let mut starts = self.starts.clone();
        starts.sort_unstable();
        self.frontier = Frontier::List(starts);
        self.visited = NodeSet::with_room();
        for &n in &self.starts {
            self.visited.insert(n, universe);
        }
        self.depth = 0;
    }

    /// The steps of the next non-empty level, or `None` when done.
    pub fn next_level(&mut self, g: &Graph) -> Option<Vec<Step>> {
        let mut steps = Vec::new();
        while steps.is_empty() {
            if !self.next_level_into(g, &mut |s| steps.push(s)) {
                return None;
            }
        }
        Some(steps)
    }

    /// Report the steps of the next level to `sink`; false when done.
    pub fn next_level_into(&mut self, g: &Graph, sink: &mut dyn FnMut(Step)) -> bool {
        self.advance::<true>(g, sink).is_some()
    }

    /// Walk the next level and count the nodes it reports, without making
    /// steps (`count(*)`); `None` when done.
    pub fn next_level_count(&mut self, g: &Graph) -> Option<usize> {
        self.advance::<false>(g, &mut |_| {})
    }

    /// One level; with `REPORT` each step goes to `sink`. Returns the number
    /// of nodes the level reports, `None` when the walk is over.
    fn advance<const REPORT: bool>(
        &mut self,
        g: &Graph,
        sink: &mut dyn FnMut(Step),
    ) -> Option<usize> {
        if !self.started {
            self.started = true;
            self.restart_phase(g.node_count());
            if REPORT {
                for &n in &self.starts {
                    sink(Step {
                        node: n,
                        depth: 0,
                        kind: None,
                        via: None,
                    });
                }
            }
            return Some(self.starts.len());
        }
        loop {
            if self.phase >= self.phases.len() {
                return None;
            }
            if self.frontier.is_empty() || self.depth >= self.max_depth {
                self.phase += 1;
                if self.phase < self.phases.len() {
                    self.restart_phase(g.node_count());
                }
                continue;
            }
            return Some(self.expand::<REPORT>(g, sink));
        }
    }

    /// One level: each neighbour of the frontier not yet visited is marked,
    /// put on the next frontier and (with `REPORT`) reported. Returns the
    /// number of nodes reported.
    fn expand<const REPORT: bool>(&mut self, g: &Graph, sink: &mut dyn FnMut(Step)) -> usize {
        self.depth += 1;
        let universe = g.node_count();
        let frontier = std::mem::replace(&mut self.frontier, Frontier::List(Vec::new()));
        let mut visited = std::mem::take(&mut self.visited);
        let next = match &mut visited {
            NodeSet::Dense(bits) => self.dense_level::<REPORT>(g, frontier, bits, universe, sink),
            sparse => self.sparse_level::<REPORT>(g, frontier, sparse, universe, sink),
        };
        self.visited = visited;
        self.frontier = next;
        self.count_reported()
    }

    /// The nodes of the new frontier not reported by an earlier phase.
    fn count_reported(&self) -> usize {
        let reported = self.reported.as_ref();
        match &self.frontier {
            Frontier::List(v) => v
                .iter()
                .filter(|m| reported.is_none_or(|r| !r.contains(**m)))
                .count(),
            Frontier::Bits { words, span } => match reported {
                None => words[span.clone()]
                    .iter()
                    .map(|w| w.count_ones() as usize)
                    .sum(),
                Some(r) => {
                    let mut n = 0;
                    for (w, word) in words[span.clone()].iter().enumerate() {
                        let mut x = *word;
                        while x != 0 {
                            let m = ((span.start + w) * 64) as NodeIdx + x.trailing_zeros();
                            n += usize::from(!r.contains(m));
                            x &= x - 1;
                        }
                    }
                    n
                }
            },
        }
    }

    /// A level over a sparse visited set: new nodes are collected in a list
    /// and sorted.
    fn sparse_level<const REPORT: bool>(
        &mut self,
        g: &Graph,
        frontier: Frontier,
        visited: &mut NodeSet,
        universe: usize,
        sink: &mut dyn FnMut(Step),
    ) -> Frontier {
        let upstream = self.phases[self.phase];
        let (filter, depth, reported) = (&self.filter, self.depth, &self.reported);
        let mut next = Vec::new();
        let spare = frontier.drain(|n| {
            each_neighbour(g, n, upstream, filter, &mut |m, k| {
                if !visited.insert(m, universe) {
                    return;
                }
                next.push(m);
                if REPORT {
                    report(sink, reported, Step::reached(m, depth, k, n));
                }
            });
        });
        if let Some(bits) = spare {
            self.spare_bits = bits;
        }
        next.sort_unstable();
        Frontier::List(next)
    }

    /// A level over a dense visited set: new nodes are marked in a bitmap
    /// frontier, without a branch on whether a node is new (about half the
    /// time it is, which the CPU cannot predict) unless steps are reported.
    fn dense_level<const REPORT: bool>(
        &mut self,
        g: &Graph,
        frontier: Frontier,
        visited: &mut Vec<u64>,
        universe: usize,
        sink: &mut dyn FnMut(Step),
    ) -> Frontier {
        let upstream = self.phases[self.phase];
        let words_needed = universe.div_ceil(64);
        if visited.len() < words_needed {
            visited.resize(words_needed, 0);
        }
        let mut next = std::mem::take(&mut self.spare_bits);
        if next.len() < visited.len() {
            next.resize(visited.len(), 0);
        }
        let (filter, depth, reported) = (&self.filter, self.depth, &self.reported);
        let (mut lo, mut hi) = (usize::MAX, 0usize);
        let spare = frontier.drain(|n| {
            each_neighbour(g, n, upstream, filter, &mut |m, k| {
                let (word, bit) = (m as usize / 64, 1u64 << (m % 64));
                let (Some(v), Some(x)) = (visited.get_mut(word), next.get_mut(word)) else {
                    return;
                };
                let fresh = bit & !*v;
                *v |= bit;
                *x |= fresh;
                lo = lo.min(word);
                hi = hi.max(word);
                if REPORT && fresh != 0 {
                    report(sink, reported, Step::reached(m, depth, k, n));
                }
            });
        });
        if let Some(bits) = spare {
            self.spare_bits = bits;
        }
        let span = if lo <= hi { lo..hi + 1 } else { 0..0 };
        // Trim words the level touched without adding a node.
        let start = span.clone().find(|&w| next[w] != 0).unwrap_or(span.end);
        let end = (start..span.end)
            .rfind(|&w| next[w] != 0)
            .map_or(start, |w| w + 1);
        Frontier::Bits {
            words: next,
            span: start..end,
        }
    }
}

/// A shortest path from `from` to `to` over the given relations, searched
/// upstream first, then downstream. Each step names the relation followed
/// from the previous node. Empty when `to` is unreachable.
pub fn shortest_path(g: &Graph, from: NodeIdx, to: NodeIdx, filter: &KindFilter) -> Vec<Step> {
    for upstream in [true, false] {
        if let Some(path) = bfs_path(g, from, to, upstream, filter) {
            return path;
        }
    }
    Vec::new()
}

fn bfs_path(
    g: &Graph,
    from: NodeIdx,
    to: NodeIdx,
    upstream: bool,
    f: &KindFilter,
) -> Option<Vec<Step>> {
    let mut parent: HashMap<NodeIdx, (NodeIdx, KindId)> = HashMap::new();
    let universe = g.node_count();
    let mut visited = NodeSet::default();
    visited.insert(from, universe);
    let mut queue = VecDeque::from([from]);
    let mut scratch = Vec::new();
    while let Some(n) = queue.pop_front() {
        if n == to {
            break;
        }
        scratch.clear();
        neighbours(g, n, upstream, f, &mut scratch);
        for &(m, k) in &scratch {
            if visited.insert(m, universe) {
                parent.insert(m, (n, k));
                queue.push_back(m);
            }
        }
    }
    if !visited.contains(to) {
        return None;
    }
    let mut rev = vec![to];
    let mut cur = to;
    while cur != from {
        let (p, _) = parent.get(&cur)?;
        cur = *p;
        rev.push(cur);
    }
    rev.reverse();
    Some(
        rev.iter()
            .enumerate()
            .map(|(i, &n)| {
                let link = parent.get(&n).filter(|_| i > 0);
                Step {
                    node: n,
                    depth: i as u32,
                    kind: link.map(|l| l.1),
                    via: link.map(|l| l.0),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_frontiers_drain_in_id_order_and_come_back_zeroed() {
        let mut words = vec![0u64; 100];
        let nodes: Vec<NodeIdx> = (1000..3000).rev().step_by(3).collect();
        for &n in &nodes {
            words[n as usize / 64] |= 1u64 << (n % 64);
        }
        let f = Frontier::Bits {
            words,
            span: 1000 / 64..3000 / 64 + 1,
        };
        let mut got = Vec::new();
        let back = f.drain(|n| got.push(n)).expect("buffer back");
        let mut want = nodes;
        want.sort_unstable();
        assert_eq!(got, want);
        assert!(back.len() == 100 && back.iter().all(|w| *w == 0));
    }

    #[test]
    fn node_sets_turn_dense_and_keep_their_members() {
        let mut set = NodeSet::default();
        let universe = 100_000;
        for n in (0..universe as NodeIdx).step_by(7) {
            assert!(set.insert(n, universe));
            assert!(!set.insert(n, universe));
        }
        let NodeSet::Dense(bits) = &set else {
            panic!("still sparse");
        };
        let len: usize = bits.iter().map(|w| w.count_ones() as usize).sum();
        assert_eq!(len, universe.div_ceil(7));
        assert!(set.contains(700) && !set.contains(701));
        // The graph grew after the set was made dense.
        assert!(set.insert(250_000, universe) && set.contains(250_000));
    }
}
