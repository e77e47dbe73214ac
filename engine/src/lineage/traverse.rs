//! Breadth-first traversal over the graph, one frontier at a time, with
//! roaring bitmaps for the visited set: cost grows with the answer, not with
//! the graph.
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

use roaring::RoaringBitmap;

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

/// Call `f` for each edge of `n` in the walk's direction.
fn each_edge(g: &Graph, n: NodeIdx, upstream: bool, mut f: impl FnMut(Edge)) {
    if upstream {
        g.out_edges(n).for_each(&mut f);
    } else {
        g.in_edges(n).for_each(&mut f);
    }
}

/// The nodes one hop from `n`, with the relation followed.
pub fn neighbours(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    each_edge(g, n, upstream, |e| {
        if f.allows(e.kind) {
            out.push((e.node, e.kind));
        }
    });
    shortcuts(g, n, upstream, f, out);
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
    if g.is_row(n) && f.allows(kind::WAS_DERIVED_FROM) {
        // entity <-generated- task -used-> entity
        let (first, second) = if upstream {
            (kind::WAS_GENERATED_BY, kind::USED)
        } else {
            (kind::USED, kind::WAS_GENERATED_BY)
        };
        two_hops(g, n, upstream, (first, second), kind::WAS_DERIVED_FROM, out);
    }
    if g.is_task(n) && f.allows(kind::WAS_INFORMED_BY) {
        // task -used-> entity -generated-> task
        let (first, second) = if upstream {
            (kind::USED, kind::WAS_GENERATED_BY)
        } else {
            (kind::WAS_GENERATED_BY, kind::USED)
        };
        two_hops(g, n, upstream, (first, second), kind::WAS_INFORMED_BY, out);
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
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    each_edge(g, n, upstream, |e1| {
        if e1.kind != first || e1.origin != Origin::Derived {
            return;
        }
        each_edge(g, e1.node, upstream, |e2| {
            if e2.kind == second && e2.origin == Origin::Derived && e2.node != n {
                out.push((e2.node, as_kind));
            }
        });
    });
}

/// A walk in progress; call [`Traversal::next_level`] (or
/// [`Traversal::next_level_into`]) until it reports the end. Holds no lock:
/// each level reads the graph it is given, so writes can land between
/// levels.
///
/// The frontier is a roaring bitmap, so each level visits its nodes in id
/// order (sequential reads of the adjacency arrays); the visited set is one
/// too. A `both` walk runs the two directions one after the other, each
/// with its own visited set, and reports a node once.
#[derive(Debug)]
pub struct Traversal {
    starts: Vec<NodeIdx>,
    phases: Vec<bool>,
    phase: usize,
    frontier: RoaringBitmap,
    visited: RoaringBitmap,
    /// Nodes reported by earlier phases (`both` only).
    reported: Option<RoaringBitmap>,
    depth: u32,
    max_depth: u32,
    filter: KindFilter,
    started: bool,
    scratch: Vec<(NodeIdx, KindId)>,
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
        Traversal {
            reported: (phases.len() > 1).then(RoaringBitmap::new),
            starts,
            phases,
            phase: 0,
            frontier: RoaringBitmap::new(),
            visited: RoaringBitmap::new(),
            depth: 0,
            max_depth: max_depth.unwrap_or(u32::MAX),
            filter,
            started: false,
            scratch: Vec::new(),
        }
    }

    fn restart_phase(&mut self) {
        if let Some(r) = &mut self.reported {
            *r |= &self.visited;
        }
        self.frontier = self.starts.iter().copied().collect();
        self.visited = self.frontier.clone();
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
        if !self.started {
            self.started = true;
            self.restart_phase();
            let mut seen = RoaringBitmap::new();
            for &n in &self.starts {
                if seen.insert(n) {
                    sink(Step {
                        node: n,
                        depth: 0,
                        kind: None,
                        via: None,
                    });
                }
            }
            return true;
        }
        loop {
            if self.phase >= self.phases.len() {
                return false;
            }
            if self.frontier.is_empty() || self.depth >= self.max_depth {
                self.phase += 1;
                self.restart_phase();
                continue;
            }
            self.expand(g, sink);
            return true;
        }
    }

    /// One level: candidates are collected in a vector and checked against
    /// the visited set; the new nodes are then sorted once and added to the
    /// bitmaps in bulk (inserting one by one into roaring's sorted array
    /// containers shifts memory on every insert).
    fn expand(&mut self, g: &Graph, sink: &mut dyn FnMut(Step)) {
        let upstream = self.phases[self.phase];
        self.depth += 1;
        let frontier = std::mem::take(&mut self.frontier);
        let mut found: Vec<(NodeIdx, KindId, NodeIdx)> = Vec::new();
        for n in &frontier {
            self.scratch.clear();
            neighbours(g, n, upstream, &self.filter, &mut self.scratch);
            for &(m, k) in &self.scratch {
                if !self.visited.contains(m) {
                    found.push((m, k, n));
                }
            }
        }
        // One entry per new node (which discoverer is kept is arbitrary but
        // deterministic: any of them is a shortest-path predecessor).
        found.sort_unstable_by_key(|f| f.0);
        found.dedup_by_key(|f| f.0);
        let next = RoaringBitmap::from_sorted_iter(found.iter().map(|f| f.0)).unwrap_or_default();
        self.visited |= &next;
        for &(m, k, n) in &found {
            if self.reported.as_ref().is_some_and(|r| r.contains(m)) {
                continue;
            }
            sink(Step {
                node: m,
                depth: self.depth,
                kind: Some(k),
                via: Some(n),
            });
        }
        self.frontier = next;
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
    let mut visited = RoaringBitmap::new();
    visited.insert(from);
    let mut queue = VecDeque::from([from]);
    let mut scratch = Vec::new();
    while let Some(n) = queue.pop_front() {
        if n == to {
            break;
        }
        scratch.clear();
        neighbours(g, n, upstream, f, &mut scratch);
        for &(m, k) in &scratch {
            if visited.insert(m) {
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
