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

use super::graph::{Graph, KindId, NodeIdx, Origin, kind};
use super::ids::NodeKey;

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

/// The nodes one hop from `n`, with the relation followed.
pub fn neighbours(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    f: &KindFilter,
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    let edges = if upstream {
        g.out_edges(n)
    } else {
        g.in_edges(n)
    };
    out.extend(
        edges
            .iter()
            .filter(|e| f.allows(e.kind))
            .map(|e| (e.node, e.kind)),
    );
    let key = g.key(n);
    if matches!(key, NodeKey::Row { .. }) && f.allows(kind::WAS_DERIVED_FROM) {
        // entity <-generated- task -used-> entity
        let (first, second) = if upstream {
            (kind::WAS_GENERATED_BY, kind::USED)
        } else {
            (kind::USED, kind::WAS_GENERATED_BY)
        };
        two_hops(g, n, upstream, first, second, kind::WAS_DERIVED_FROM, out);
    }
    if matches!(key, NodeKey::Task(_)) && f.allows(kind::WAS_INFORMED_BY) {
        // task -used-> entity -generated-> task
        let (first, second) = if upstream {
            (kind::USED, kind::WAS_GENERATED_BY)
        } else {
            (kind::WAS_GENERATED_BY, kind::USED)
        };
        two_hops(g, n, upstream, first, second, kind::WAS_INFORMED_BY, out);
    }
}

fn two_hops(
    g: &Graph,
    n: NodeIdx,
    upstream: bool,
    first: KindId,
    second: KindId,
    as_kind: KindId,
    out: &mut Vec<(NodeIdx, KindId)>,
) {
    let step = |x: NodeIdx| {
        if upstream {
            g.out_edges(x)
        } else {
            g.in_edges(x)
        }
    };
    for e1 in step(n) {
        if e1.kind != first || e1.origin != Origin::Derived {
            continue;
        }
        for e2 in step(e1.node) {
            if e2.kind == second && e2.origin == Origin::Derived && e2.node != n {
                out.push((e2.node, as_kind));
            }
        }
    }
}

/// A walk in progress; call [`Traversal::next_level`] until it returns
/// `None`. Holds no lock: each level reads the graph it is given, so writes
/// can land between levels.
#[derive(Debug)]
pub struct Traversal {
    starts: Vec<NodeIdx>,
    phases: Vec<bool>,
    phase: usize,
    frontier: Vec<NodeIdx>,
    visited: RoaringBitmap,
    emitted: RoaringBitmap,
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
            starts,
            phases,
            phase: 0,
            frontier: Vec::new(),
            visited: RoaringBitmap::new(),
            emitted: RoaringBitmap::new(),
            depth: 0,
            max_depth: max_depth.unwrap_or(u32::MAX),
            filter,
            started: false,
            scratch: Vec::new(),
        }
    }

    fn restart_phase(&mut self) {
        self.frontier = self.starts.clone();
        self.visited = self.starts.iter().copied().collect();
        self.depth = 0;
    }

    /// The steps of the next non-empty level, or `None` when done.
    pub fn next_level(&mut self, g: &Graph) -> Option<Vec<Step>> {
        if !self.started {
            self.started = true;
            self.restart_phase();
            let mut steps = Vec::new();
            for &n in &self.starts {
                if self.emitted.insert(n) {
                    steps.push(Step {
                        node: n,
                        depth: 0,
                        kind: None,
                        via: None,
                    });
                }
            }
            if !steps.is_empty() {
                return Some(steps);
            }
        }
        loop {
            if self.phase >= self.phases.len() {
                return None;
            }
            if self.frontier.is_empty() || self.depth >= self.max_depth {
                self.phase += 1;
                self.restart_phase();
                continue;
            }
            let steps = self.expand(g);
            if !steps.is_empty() {
                return Some(steps);
            }
        }
    }

    fn expand(&mut self, g: &Graph) -> Vec<Step> {
        let upstream = self.phases[self.phase];
        self.depth += 1;
        let mut next = Vec::new();
        let mut steps = Vec::new();
        let frontier = std::mem::take(&mut self.frontier);
        for n in frontier {
            self.scratch.clear();
            neighbours(g, n, upstream, &self.filter, &mut self.scratch);
            for &(m, k) in &self.scratch {
                if !self.visited.insert(m) {
                    continue;
                }
                next.push(m);
                if self.emitted.insert(m) {
                    steps.push(Step {
                        node: m,
                        depth: self.depth,
                        kind: Some(k),
                        via: Some(n),
                    });
                }
            }
        }
        self.frontier = next;
        steps
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
