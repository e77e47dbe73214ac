//! The lineage index against a brute-force oracle on random graphs (DAGs
//! and cyclic), kept current through inserts, updates and deletes, rebuilt
//! identically after a restart, and derived from the reference DLProv run.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use provdb_storage::{Storage, StorageOptions, WalOp};
use serde_json::Value as Json;

use super::graph::Graph;
use super::schema::{PROV_SCHEMA, RELATION_TABLE};
use super::{Direction, KindFilter, Lineage, NodeIdx, Traversal};
use crate::dlprov::Dlprov;
use crate::sequence::Sequences;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn open(dir: &std::path::Path) -> (Storage, Lineage) {
    let mut opts = StorageOptions::new(dir);
    opts.background = false;
    let storage = Storage::open(opts).await.expect("open");
    let lineage = Lineage::open(&storage).await.expect("lineage");
    (storage, lineage)
}

fn relation_batch(rows: &[(&str, String, String)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("subject", DataType::Utf8, false),
        Field::new("object", DataType::Utf8, false),
        Field::new("attributes", DataType::Utf8, true),
    ]));
    let col = |f: &dyn Fn(&(&str, String, String)) -> String| {
        Arc::new(StringArray::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    RecordBatch::try_new(
        schema,
        vec![
            col(&|r| r.0.to_string()),
            col(&|r| r.1.clone()),
            col(&|r| r.2.clone()),
            Arc::new(StringArray::from(vec![None::<&str>; rows.len()])),
        ],
    )
    .expect("batch")
}

async fn insert_relations(storage: &Storage, rows: &[(&str, String, String)]) {
    let def = storage
        .table_by_name(PROV_SCHEMA, RELATION_TABLE)
        .expect("prov.relation");
    storage
        .commit(vec![WalOp::Insert {
            table: def.id,
            batch: relation_batch(rows),
        }])
        .await
        .expect("insert");
}

/// Delete relations by key through the storage's own delete path.
async fn delete_relations(storage: &Storage, doomed: &BTreeSet<(String, String)>) {
    let def = storage
        .table_by_name(PROV_SCHEMA, RELATION_TABLE)
        .expect("prov.relation");
    let snap = storage.snapshot(def.id).expect("snapshot");
    let mut ops = Vec::new();
    for part in storage.read_live(&snap).await.expect("read") {
        let subj = part
            .batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("s");
        let obj = part
            .batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("o");
        let hit: Vec<usize> = (0..part.batch.num_rows())
            .filter(|&i| doomed.contains(&(subj.value(i).to_string(), obj.value(i).to_string())))
            .collect();
        if hit.is_empty() {
            continue;
        }
        let idx =
            arrow::array::UInt32Array::from(hit.iter().map(|&i| i as u32).collect::<Vec<_>>());
        let keys = arrow::compute::take_record_batch(&part.batch, &idx).expect("take");
        ops.push(WalOp::Delete {
            table: def.id,
            source: part.source,
            positions: hit.iter().map(|&i| part.positions[i]).collect(),
            keys: Some(keys.project(&[0, 1, 2]).expect("project")),
        });
    }
    storage.commit(ops).await.expect("delete");
}

/// Plain BFS over an edge list: node -> min depth.
fn oracle(
    edges: &[(u32, u32)],
    starts: &[u32],
    upstream: bool,
    max_depth: u32,
) -> HashMap<u32, u32> {
    let mut adj: HashMap<u32, Vec<u32>> = HashMap::new();
    for &(s, o) in edges {
        let (a, b) = if upstream { (s, o) } else { (o, s) };
        adj.entry(a).or_default().push(b);
    }
    let mut depth: HashMap<u32, u32> = starts.iter().map(|&s| (s, 0)).collect();
    let mut queue: VecDeque<u32> = starts.iter().copied().collect();
    while let Some(n) = queue.pop_front() {
        let d = depth[&n];
        if d >= max_depth {
            continue;
        }
        for &m in adj.get(&n).into_iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(slot) = depth.entry(m) {
                slot.insert(d + 1);
                queue.push_back(m);
            }
        }
    }
    depth
}

fn walk(g: &Graph, starts: &[u32], dir: Direction, max_depth: Option<u32>) -> HashMap<u32, u32> {
    let ids: Vec<u32> = starts
        .iter()
        .map(|s| g.find(&format!("n{s}")).expect("start node"))
        .collect();
    let mut t = Traversal::new(ids, dir, max_depth, KindFilter::all());
    let mut out = HashMap::new();
    while let Some(level) = t.next_level(g) {
        for step in level {
            let name = g.node_text(step.node);
            let n: u32 = name[1..].parse().expect("node name");
            assert!(
                out.insert(n, step.depth).is_none(),
                "node {name} emitted twice"
            );
        }
    }
    out
}

fn check(g: &Graph, edges: &[(u32, u32)], starts: &[u32], depth: Option<u32>, what: &str) {
    let max = depth.unwrap_or(u32::MAX);
    for (dir, up) in [(Direction::Upstream, true), (Direction::Downstream, false)] {
        let got = walk(g, starts, dir, depth);
        let want = oracle(edges, starts, up, max);
        assert_eq!(got, want, "{what}: {dir:?} from {starts:?} depth {depth:?}");
    }
    // both = union of the two closures, each node at its first depth found.
    let got = walk(g, starts, Direction::Both, depth);
    // Counting without steps (count(*)) reaches the same number of nodes.
    for dir in [Direction::Upstream, Direction::Downstream, Direction::Both] {
        let ids = starts
            .iter()
            .map(|s| g.find(&format!("n{s}")).expect("start node"))
            .collect();
        let mut t = Traversal::new(ids, dir, depth, KindFilter::all());
        let mut counted = 0;
        while let Some(n) = t.next_level_count(g) {
            counted += n;
        }
        assert_eq!(
            counted,
            walk(g, starts, dir, depth).len(),
            "{what}: {dir:?} count"
        );
    }
    let up = oracle(edges, starts, true, max);
    let down = oracle(edges, starts, false, max);
    let nodes: BTreeSet<u32> = up.keys().chain(down.keys()).copied().collect();
    assert_eq!(
        got.keys().copied().collect::<BTreeSet<_>>(),
        nodes,
        "{what}: both"
    );
}

fn random_edges(rng: &mut Rng, nodes: u32, count: usize, acyclic: bool) -> Vec<(u32, u32)> {
    let mut set = BTreeSet::new();
    while set.len() < count {
        let a = rng.below(nodes as u64) as u32;
        let b = rng.below(nodes as u64) as u32;
        if a == b && acyclic {
            continue;
        }
        // In a DAG, edges point from later to earlier nodes (PROV style).
        set.insert(if acyclic {
            (a.max(b), a.min(b))
        } else {
            (a, b)
        });
    }
    set.into_iter().collect()
}

/// Insert a random graph of `nodes` nodes `n<base>..` and `count` edges as
/// `wasDerivedFrom` relations; returns its edges.
async fn insert_random_graph(
    storage: &Storage,
    rng: &mut Rng,
    base: u32,
    (nodes, count): (u32, usize),
    acyclic: bool,
) -> Vec<(u32, u32)> {
    let edges: Vec<(u32, u32)> = random_edges(rng, nodes, count, acyclic)
        .into_iter()
        .map(|(a, b)| (a + base, b + base))
        .collect();
    let rows: Vec<_> = edges
        .iter()
        .map(|(s, o)| ("wasDerivedFrom", format!("n{s}"), format!("n{o}")))
        .collect();
    insert_relations(storage, &rows).await;
    edges
}

#[tokio::test]
async fn traversal_matches_oracle_on_random_graphs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..12u32 {
        let acyclic = round % 2 == 0;
        let base = round * 1000;
        let edges = insert_random_graph(&storage, &mut rng, base, (60, 140), acyclic).await;
        let g = lineage.graph();
        for _ in 0..6 {
            let k = 1 + rng.below(3) as usize;
            let mut starts: Vec<u32> = (0..k).map(|_| base + rng.below(60) as u32).collect();
            starts.retain(|s| edges.iter().any(|(a, b)| a == s || b == s));
            starts.dedup();
            if starts.is_empty() {
                continue;
            }
            for depth in [None, Some(1), Some(3)] {
                check(&g, &edges, &starts, depth, &format!("round {round}"));
            }
        }
    }
}

/// Walks over thousands of nodes switch the visited set from a hash set to
/// a bitmap over the whole graph; the answers must not change.
#[tokio::test]
async fn large_walks_match_the_oracle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let mut rng = Rng(7);
    for (round, acyclic) in [(0u32, true), (1, false)] {
        let base = round * 100_000;
        let edges = insert_random_graph(&storage, &mut rng, base, (12_000, 90_000), acyclic).await;
        let g = lineage.graph();
        let starts = [base + 11_999, base + 11_000];
        let closure = oracle(&edges, &starts, true, u32::MAX).len();
        assert!(
            closure > 4096 && closure > g.node_count() / 1024,
            "round {round}: closure of {closure} nodes is too small to need a dense set"
        );
        for depth in [None, Some(2), Some(6)] {
            check(&g, &edges, &starts, depth, &format!("large round {round}"));
        }
        // Each step's `via` is a node one level closer, linked to it.
        let linked: BTreeSet<(u32, u32)> = edges.iter().copied().collect();
        let name = |n: NodeIdx| -> u32 { g.node_text(n)[1..].parse().expect("node name") };
        let ids = starts
            .iter()
            .map(|s| g.find(&format!("n{s}")).expect("start"))
            .collect();
        let mut t = Traversal::new(ids, Direction::Upstream, None, KindFilter::all());
        let mut depth_of = HashMap::new();
        while let Some(level) = t.next_level(&g) {
            for step in level {
                depth_of.insert(step.node, step.depth);
                if let Some(via) = step.via {
                    assert_eq!(depth_of.get(&via), Some(&(step.depth - 1)), "via depth");
                    assert!(linked.contains(&(name(via), name(step.node))), "via edge");
                }
            }
        }
        assert_eq!(depth_of.len(), closure);
    }
}

/// Edges written live wait in the overflow map until a compaction; once
/// writes pause the index compacts itself, and walks answer the same.
#[tokio::test]
async fn the_index_compacts_once_writes_pause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let mut rng = Rng(11);
    let edges = random_edges(&mut rng, 3_000, 10_000, true);
    for chunk in edges.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(s, o)| ("wasDerivedFrom", format!("n{s}"), format!("n{o}")))
            .collect();
        insert_relations(&storage, &rows).await;
    }
    let before = lineage.graph().pending_edges();
    assert!(before >= 1024, "{before} edges pending after the writes");
    let starts = [2_999, 2_500];
    check(&lineage.graph(), &edges, &starts, None, "before compaction");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lineage.graph().pending_edges() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        lineage.graph().pending_edges(),
        0,
        "no compaction after writes paused"
    );
    check(&lineage.graph(), &edges, &starts, None, "after compaction");
}

#[tokio::test]
async fn deletes_and_restart_keep_the_index_equal_to_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(42);
    let edges = random_edges(&mut rng, 40, 90, false);
    let doomed: BTreeSet<(String, String)> = edges
        .iter()
        .filter(|_| rng.below(3) == 0)
        .map(|(a, b)| (format!("n{a}"), format!("n{b}")))
        .collect();
    let kept: Vec<(u32, u32)> = edges
        .iter()
        .copied()
        .filter(|(a, b)| !doomed.contains(&(format!("n{a}"), format!("n{b}"))))
        .collect();
    {
        let (storage, lineage) = open(dir.path()).await;
        let rows: Vec<_> = edges
            .iter()
            .map(|(s, o)| ("used", format!("n{s}"), format!("n{o}")))
            .collect();
        insert_relations(&storage, &rows).await;
        assert_eq!(lineage.graph().edge_count(), edges.len() as u64);
        delete_relations(&storage, &doomed).await;
        assert_eq!(lineage.graph().edge_count(), kept.len() as u64);
        check(&lineage.graph(), &kept, &[kept[0].0], None, "after delete");
        storage.close().await.expect("close");
    }
    let (_storage, lineage) = open(dir.path()).await;
    let g = lineage.graph();
    assert_eq!(g.edge_count(), kept.len() as u64, "rebuilt after restart");
    check(&g, &kept, &[kept[0].0, kept[1].1], None, "after restart");
}

const SPEC: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-spec.json");
const RUN: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-run.jsonl");

fn text_triples(g: &Graph) -> BTreeSet<(String, String, String)> {
    g.triples()
        .map(|(s, k, o, _)| (g.node_text(s), g.kinds.name(k).to_string(), g.node_text(o)))
        .collect()
}

#[tokio::test]
async fn reference_run_gives_the_expected_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = {
        let (storage, lineage) = open(dir.path()).await;
        let dl = Dlprov::start(storage.clone(), Arc::new(Sequences::default()));
        let spec: Json = serde_json::from_str(SPEC).expect("spec");
        dl.register_dataflow(&spec).await.expect("register");
        for line in RUN.lines().filter(|l| !l.trim().is_empty()) {
            let m: Json = serde_json::from_str(line).expect("line");
            dl.ingest(&[m]).await.expect("message");
        }
        let live = text_triples(&lineage.graph());
        drop(dl);
        storage.close().await.expect("close");
        live
    };
    let has = |s: &str, k: &str, o: &str| live.contains(&(s.into(), k.into(), o.into()));
    // Every task belongs to the execution; the execution to bob, host1 and the plan.
    let exec = "execution:alexnet-2025-07-10 21:00:00.123456";
    let tasks: Vec<&(String, String, String)> =
        live.iter().filter(|t| t.1 == "wasInformedBy").collect();
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.2 == exec));
    assert!(has(exec, "hadPlan", "dataflow:alexnet"));
    assert_eq!(
        live.iter()
            .filter(|t| t.0 == exec && t.1 == "wasAssociatedWith")
            .count(),
        2
    );
    // The chain loaddata -> applyfilter -> splitdata -> train -> test, by rows.
    let generated = |set: &str| -> Vec<String> {
        live.iter()
            .filter(|t| t.0.starts_with(&format!("alexnet.{set}:")) && t.1 == "wasGeneratedBy")
            .map(|t| t.2.clone())
            .collect()
    };
    let used_by = |set: &str| -> Vec<String> {
        live.iter()
            .filter(|t| t.2.starts_with(&format!("alexnet.{set}:")) && t.1 == "used")
            .map(|t| t.0.clone())
            .collect()
    };
    assert_eq!(generated("oloaddata").len(), 1);
    assert_eq!(
        used_by("oloaddata"),
        used_by("ifilter"),
        "applyfilter used both"
    );
    assert_eq!(
        used_by("ofilter"),
        used_by("isplitconfig"),
        "splitdata used both"
    );
    assert_eq!(
        generated("ofilter"),
        used_by("ifilter"),
        "applyfilter generated ofilter"
    );
    assert_eq!(
        used_by("otrainset"),
        used_by("itrain"),
        "train used the split"
    );
    assert_eq!(
        generated("otrain").len(),
        live.iter()
            .filter(|t| t.0.starts_with("alexnet.otrain:"))
            .count()
    );
    assert_eq!(
        used_by("otrainedmodel"),
        generated("otest")[..1].to_vec(),
        "test used the model"
    );

    // Rebuilding from the tables gives the same graph.
    let (_storage, lineage) = open(dir.path()).await;
    assert_eq!(text_triples(&lineage.graph()), live);

    // Upstream of the test output reaches the raw input, the plan and bob.
    let g = lineage.graph();
    let model = live
        .iter()
        .find(|t| t.0.starts_with("alexnet.otest:"))
        .map(|t| t.0.clone())
        .expect("otest row");
    let start = g.find(&model).expect("node");
    let mut t = Traversal::new(vec![start], Direction::Upstream, None, KindFilter::all());
    let mut reached = BTreeSet::new();
    while let Some(level) = t.next_level(&g) {
        reached.extend(level.iter().map(|s| g.node_text(s.node)));
    }
    assert!(
        reached
            .iter()
            .any(|n| n.starts_with("alexnet.iinputdataset:"))
    );
    assert!(reached.contains("dataflow:alexnet"));
    assert!(reached.iter().any(|n| n.starts_with("scientist:")));
    assert!(reached.iter().any(|n| n.starts_with("hardware:")));
}

#[test]
fn adjacency_survives_compactions_with_adds_and_removes() {
    use super::graph::{Graph, Origin};
    use super::ids::NodeKey;
    use std::collections::BTreeMap;

    let mut g = Graph::default();
    let mut rng = Rng(7);
    let nodes: Vec<u32> = (0..500)
        .map(|i| g.node_for_text(&format!("n{i}")))
        .collect();
    let kinds = [
        g.kinds.intern("used"),
        g.kinds.intern("wasDerivedFrom"),
        g.kinds.intern("myRelation"),
    ];
    // The model: a multiset of (subject, kind, object, origin).
    let mut model: BTreeMap<(u32, u8, u32, bool), usize> = BTreeMap::new();
    for step in 0..60_000u32 {
        let s = nodes[rng.below(500) as usize];
        let o = nodes[rng.below(500) as usize];
        let k = kinds[rng.below(3) as usize];
        let user = rng.below(2) == 0;
        let origin = if user { Origin::User } else { Origin::Derived };
        if rng.below(3) == 0 {
            let had = model.get(&(s, k, o, user)).copied().unwrap_or(0) > 0;
            assert_eq!(g.remove_edge(s, k, o, origin), had, "step {step}");
            if had {
                *model.get_mut(&(s, k, o, user)).expect("present") -= 1;
            }
        } else {
            g.add_edge(s, k, o, origin);
            *model.entry((s, k, o, user)).or_default() += 1;
        }
    }
    let expect_out = |n: u32| {
        let mut v: Vec<(u8, u32, bool)> = model
            .iter()
            .filter(|((s, ..), c)| *s == n && **c > 0)
            .flat_map(|((_, k, o, u), c)| std::iter::repeat_n((*k, *o, *u), *c))
            .collect();
        v.sort();
        v
    };
    let total: usize = model.values().sum();
    assert_eq!(g.edge_count() as usize, total);
    for &n in &nodes {
        let mut got: Vec<(u8, u32, bool)> = g
            .out_edges(n)
            .map(|e| (e.kind, e.node, e.origin == Origin::User))
            .collect();
        got.sort();
        assert_eq!(got, expect_out(n), "out edges of node {n}");
        let ins = g.in_edges(n).count();
        let want_in: usize = model
            .iter()
            .filter(|((_, _, o, _), _)| *o == n)
            .map(|(_, c)| *c)
            .sum();
        assert_eq!(ins, want_in, "in edges of node {n}");
    }
    // Unusual keys round-trip or fall back to their text.
    for key in [
        NodeKey::Task(-5),
        NodeKey::Task(i64::MAX),
        NodeKey::Scientist(0),
    ] {
        let n = g.node(key);
        let text = g.node_text(n);
        assert_eq!(g.find(&text), Some(n), "{text}");
    }
    assert_eq!(
        g.node_text(g.find("task:-5").expect("negative id")),
        "task:-5"
    );
}

#[test]
fn bulk_loading_places_every_edge() {
    use super::graph::{Graph, Origin};
    let mut rng = Rng(11);
    let mut g = Graph::default();
    let nodes: Vec<u32> = (0..300)
        .map(|i| g.node_for_text(&format!("b{i}")))
        .collect();
    let used = g.kinds.intern("used");
    // A first batch compacted normally, then a bulk batch on top.
    let mut edges = Vec::new();
    for phase in 0..2 {
        g.set_bulk(phase == 1);
        for _ in 0..5000 {
            let (s, o) = (
                nodes[rng.below(300) as usize],
                nodes[rng.below(300) as usize],
            );
            g.add_edge(s, used, o, Origin::User);
            edges.push((s, o));
        }
    }
    g.set_bulk(false);
    g.compact();
    assert_eq!(g.edge_count(), 10_000);
    for &n in &nodes {
        let mut want: Vec<u32> = edges.iter().filter(|e| e.0 == n).map(|e| e.1).collect();
        let mut got: Vec<u32> = g.out_edges(n).map(|e| e.node).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "out of {n}");
        let mut want: Vec<u32> = edges.iter().filter(|e| e.1 == n).map(|e| e.0).collect();
        let mut got: Vec<u32> = g.in_edges(n).map(|e| e.node).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "in of {n}");
    }
}
