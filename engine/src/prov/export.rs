//! Export: the PROV document of an execution, of every execution of a
//! dataflow, or of the lineage closure of nodes.
//!
//! The records come from the lineage graph (which nodes and relations are
//! in scope, the derived `wasDerivedFrom` shortcuts included) and their
//! attributes from the tables: DLProv rows, tasks, executions, scientists
//! and hardware, and the stored `prov.*` rows. Output is deterministic:
//! records sorted by id, anonymous relations numbered in that order, so
//! exporting twice gives the same document.

use std::collections::{BTreeSet, HashMap, HashSet};

use arrow::array::RecordBatch;
use provdb_storage::Storage;

use super::cells::{
    self, cell_value, column, columns, dlprov_time, int_at, live_batches, micros_to_datetime,
    str_at,
};
use super::json::attrs_from_text;
use super::model::{Attrs, Document, Element, Relation, RelationSpec, Value, relation_spec};
use super::namespace::{Registry, escape_local, split};
use crate::catalog::DEFAULT_SCHEMA;
use crate::error::{EngineError, Result};
use crate::lineage::graph::{Graph, kind};
use crate::lineage::ids::NodeKey;
use crate::lineage::schema::PROV_SCHEMA;
use crate::lineage::traverse::neighbours;
use crate::lineage::{Direction, KindFilter, Lineage, NodeIdx, NodeKind, Traversal};

/// What to export.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// One execution (by its tag): the execution, its tasks, the rows they
    /// used and generated, its plan and agents.
    Execution(String),
    /// Every execution of a dataflow (by its tag).
    Dataflow(String),
    /// Every node and relation in the database.
    All,
    /// The lineage closure of nodes (text ids).
    Closure {
        start: Vec<String>,
        direction: Direction,
        max_depth: Option<u32>,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    ProvN,
    Json,
    Dot,
    Svg,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "provn" | "prov-n" => Format::ProvN,
            "json" | "prov-json" | "provjson" => Format::Json,
            "dot" | "gv" => Format::Dot,
            "svg" => Format::Svg,
            other => {
                return Err(EngineError::Invalid(format!(
                    "unknown format '{other}' (use provn, json, dot or svg)"
                )));
            }
        })
    }

    /// The MIME type of the output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::ProvN => "text/provenance-notation; charset=utf-8",
            Format::Json => "application/json",
            Format::Dot => "text/vnd.graphviz; charset=utf-8",
            Format::Svg => "image/svg+xml",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::ProvN => "provn",
            Format::Json => "json",
            Format::Dot => "dot",
            Format::Svg => "svg",
        }
    }
}

/// Render a document.
pub fn render(doc: &Document, format: Format) -> Result<Vec<u8>> {
    Ok(match format {
        Format::ProvN => super::provn::to_provn(doc).into_bytes(),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&super::json::to_json(doc))
                .map_err(|e| EngineError::internal(format!("serializing PROV-JSON: {e}")))?;
            s.push('\n');
            s.into_bytes()
        }
        Format::Dot => super::dot::to_dot(doc).into_bytes(),
        Format::Svg => super::dot::to_svg(&super::dot::to_dot(doc))?,
    })
}

/// A node in scope, copied out of the graph.
struct Node {
    key: NodeKey,
    id: String,
    class: NodeKind,
}

/// An edge in scope: (subject, kind name, object).
type Edge = (NodeIdx, String, NodeIdx);

/// The nodes and edges of `scope`, read under the graph lock.
fn select(g: &Graph, scope: &Scope) -> Result<(HashMap<NodeIdx, Node>, Vec<Edge>)> {
    let nodes: Vec<NodeIdx> = match scope {
        Scope::Execution(tag) => {
            execution_nodes(g, find(g, &format!("execution:{tag}"), "execution", tag)?)
        }
        Scope::Dataflow(tag) => {
            let df = find(g, &format!("dataflow:{tag}"), "dataflow", tag)?;
            let mut all = vec![df];
            for e in g.in_edges(df).filter(|e| e.kind == kind::HAD_PLAN) {
                all.extend(execution_nodes(g, e.node));
            }
            all
        }
        Scope::All => (0..g.node_count() as NodeIdx)
            .filter(|&n| {
                g.declared(n) || g.out_edges(n).next().is_some() || g.in_edges(n).next().is_some()
            })
            .collect(),
        Scope::Closure {
            start,
            direction,
            max_depth,
        } => {
            let starts = start
                .iter()
                .map(|s| {
                    g.find(s)
                        .ok_or_else(|| EngineError::NotFound(format!("no PROV node has id '{s}'")))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut walk = Traversal::new(starts, *direction, *max_depth, KindFilter::all());
            let mut out = Vec::new();
            while walk.next_level_into(g, &mut |s| out.push(s.node)) {}
            out
        }
    };
    let set: HashSet<NodeIdx> = nodes.iter().copied().collect();
    // The relations a walk follows upstream (stored and derived edges and
    // the shortcuts), kept when both ends are in scope.
    let mut edges = HashSet::new();
    let mut found = Vec::new();
    for &n in &set {
        found.clear();
        neighbours(g, n, true, &KindFilter::all(), &mut found);
        edges.extend(
            found
                .iter()
                .filter(|(m, _)| set.contains(m))
                .map(|&(m, k)| (n, g.kinds.name(k).to_string(), m)),
        );
    }
    let nodes = set
        .into_iter()
        .map(|n| {
            let node = Node {
                key: g.key(n),
                id: g.node_text(n),
                class: g.class(n),
            };
            (n, node)
        })
        .collect();
    Ok((nodes, edges.into_iter().collect()))
}

fn find(g: &Graph, id: &str, what: &str, tag: &str) -> Result<NodeIdx> {
    g.find(id)
        .ok_or_else(|| EngineError::NotFound(format!("no {what} has tag '{tag}'")))
}

/// An execution, its tasks, the rows they used or generated, and what the
/// execution itself points to (plan, agents).
fn execution_nodes(g: &Graph, exec: NodeIdx) -> Vec<NodeIdx> {
    let mut out = vec![exec];
    out.extend(g.out_edges(exec).map(|e| e.node));
    for t in g.in_edges(exec).filter(|e| e.kind == kind::WAS_INFORMED_BY) {
        out.push(t.node);
        out.extend(
            g.out_edges(t.node)
                .filter(|e| e.kind == kind::USED)
                .map(|e| e.node),
        );
        out.extend(
            g.in_edges(t.node)
                .filter(|e| e.kind == kind::WAS_GENERATED_BY)
                .map(|e| e.node),
        );
    }
    out
}

/// Export `scope` as a document.
pub async fn export(storage: &Storage, lineage: &Lineage, scope: &Scope) -> Result<Document> {
    let (nodes, edges) = {
        let g = lineage.graph();
        select(&g, scope)?
    };
    let mut facts = Facts::load(storage, &nodes).await?;
    let registry = Registry::ensure(storage).await?;
    let mut names = Names::new(&registry);

    let mut elements: Vec<Element> = nodes
        .values()
        .map(|n| facts.element(n, &mut names))
        .collect();
    elements.sort_by(|a, b| (a.class as u8, &a.id).cmp(&(b.class as u8, &b.id)));

    let mut relations: Vec<Relation> = edges
        .iter()
        .map(|(s, k, o)| {
            let (s, o) = (&nodes[s].id, &nodes[o].id);
            let stored = facts.relations.remove(&(k.clone(), s.clone(), o.clone()));
            relation(k, s, o, stored, &mut names)
        })
        .collect();
    relations.sort_by(|a, b| (a.spec.name, &a.args).cmp(&(b.spec.name, &b.args)));

    Ok(Document {
        namespaces: names.declarations(),
        default_namespace: names.default_used.then(|| registry.iri("")),
        elements,
        relations,
    })
}

/// Turns provdb ids into exported qualified names and remembers which
/// prefixes the document must declare.
struct Names<'a> {
    registry: &'a Registry,
    used: BTreeSet<String>,
    default_used: bool,
}

impl<'a> Names<'a> {
    fn new(registry: &'a Registry) -> Self {
        Names {
            registry,
            used: BTreeSet::new(),
            default_used: false,
        }
    }

    fn qname(&mut self, id: &str) -> String {
        let (p, local) = split(id);
        if p.is_empty() {
            self.default_used = true;
            return escape_local(local);
        }
        if p != "prov" && p != "xsd" {
            self.used.insert(p.to_string());
        }
        format!("{p}:{}", escape_local(local))
    }

    fn value(&mut self, v: Value) -> Value {
        match v {
            Value::QName(q) => Value::QName(self.qname(&q)),
            Value::Typed { lexical, datatype } => {
                let datatype = self.qname(&datatype);
                Value::Typed { lexical, datatype }
            }
            other => other,
        }
    }

    fn attrs(&mut self, attrs: Attrs) -> Attrs {
        attrs
            .into_iter()
            .map(|(k, v)| (self.qname(&k), self.value(v)))
            .collect()
    }

    fn declarations(&self) -> Vec<(String, String)> {
        self.used
            .iter()
            .map(|p| (p.clone(), self.registry.iri(p)))
            .collect()
    }
}

/// A relation of the graph as a PROV record. provdb's `hadPlan` (execution
/// to dataflow) is written as `used`, as DLProv does; kinds PROV does not
/// define become `wasInfluencedBy` typed `provdb:<kind>`.
fn relation(kind: &str, s: &str, o: &str, stored: Option<Attrs>, names: &mut Names) -> Relation {
    let (spec, extra_type): (&'static RelationSpec, Option<String>) = match relation_spec(kind) {
        Some(spec) => (spec, None),
        None if kind == "hadPlan" => (
            relation_spec("used").expect("used is a PROV relation"),
            None,
        ),
        None => (
            relation_spec("wasInfluencedBy").expect("wasInfluencedBy is a PROV relation"),
            Some(format!("provdb:{kind}")),
        ),
    };
    let mut r = Relation::new(spec, &names.qname(s), &names.qname(o));
    let mut attrs = Attrs::new();
    for (k, v) in stored.unwrap_or_default() {
        if k == "@id" {
            r.id = Some(names.qname(&v.text()));
        } else if let Some(i) = spec.args.iter().skip(2).position(|a| *a == k) {
            let slot = i + 2;
            r.args[slot] = Some(if Some(slot) == spec.time_arg {
                v.text()
            } else {
                names.qname(&v.text())
            });
        } else {
            attrs.push((k, v));
        }
    }
    if let Some(t) = extra_type {
        attrs.push(("prov:type".into(), Value::QName(t)));
    }
    r.attrs = names.attrs(attrs);
    r
}

/// Times of a task or execution (xsd:dateTime text).
#[derive(Debug, Default, Clone)]
struct Span {
    start: Option<String>,
    end: Option<String>,
}

impl Span {
    fn widen(&mut self, start: Option<String>, end: Option<String>) {
        if let Some(s) = start.filter(|s| self.start.as_ref().is_none_or(|c| s < c)) {
            self.start = Some(s);
        }
        if let Some(e) = end.filter(|e| self.end.as_ref().is_none_or(|c| e > c)) {
            self.end = Some(e);
        }
    }
}

/// The attributes of the nodes in scope, read from the tables.
#[derive(Default)]
struct Facts {
    /// DLProv-derived attributes and times by node id.
    dlprov: HashMap<String, (Attrs, Span)>,
    /// Stored `prov.*` rows by id: attributes and times.
    stored: HashMap<String, (Attrs, Span)>,
    /// Stored relation attributes by (kind, subject, object).
    relations: HashMap<(String, String, String), Attrs>,
}

impl Facts {
    async fn load(storage: &Storage, nodes: &HashMap<NodeIdx, Node>) -> Result<Facts> {
        let mut f = Facts::default();
        let ids: HashSet<&str> = nodes.values().map(|n| n.id.as_str()).collect();
        f.load_stored(storage, &ids).await?;
        f.load_dlprov(storage, nodes).await?;
        Ok(f)
    }

    fn element(&mut self, n: &Node, names: &mut Names) -> Element {
        let mut e = Element::new(n.class, names.qname(&n.id));
        let mut attrs = Attrs::new();
        let mut span = Span::default();
        for source in [self.dlprov.remove(&n.id), self.stored.remove(&n.id)]
            .into_iter()
            .flatten()
        {
            attrs.extend(source.0);
            span.widen(source.1.start, source.1.end);
        }
        if n.class == NodeKind::Activity {
            e.start = span.start;
            e.end = span.end;
        }
        e.attrs = names.attrs(attrs);
        e
    }

    async fn load_stored(&mut self, storage: &Storage, ids: &HashSet<&str>) -> Result<()> {
        for table in ["entity", "activity", "agent"] {
            for batch in live_batches(storage, PROV_SCHEMA, table).await? {
                let Some([id, ty, label, attrs]) =
                    columns(&batch, ["id", "type", "label", "attributes"])
                else {
                    continue;
                };
                for row in 0..batch.num_rows() {
                    let Some(node) = str_at(id, row).filter(|s| ids.contains(s)) else {
                        continue;
                    };
                    let mut a = parse_attrs(str_at(attrs, row), node)?;
                    if let Some(t) =
                        str_at(ty, row).filter(|_| !a.iter().any(|(k, _)| k == "prov:type"))
                    {
                        let is_qname = !split(t).0.is_empty();
                        a.push((
                            "prov:type".into(),
                            if is_qname {
                                Value::QName(t.into())
                            } else {
                                Value::Str(t.into())
                            },
                        ));
                    }
                    if let Some(l) =
                        str_at(label, row).filter(|_| !a.iter().any(|(k, _)| k == "prov:label"))
                    {
                        a.push(("prov:label".into(), Value::Str(l.into())));
                    }
                    let span = Span {
                        start: stored_time(
                            &mut a,
                            "prov:startTime",
                            column(&batch, "start_time"),
                            row,
                        ),
                        end: stored_time(&mut a, "prov:endTime", column(&batch, "end_time"), row),
                    };
                    self.stored.insert(node.to_string(), (a, span));
                }
            }
        }
        for batch in live_batches(storage, PROV_SCHEMA, "relation").await? {
            let Some([k, s, o, attrs]) =
                columns(&batch, ["kind", "subject", "object", "attributes"])
            else {
                continue;
            };
            for row in 0..batch.num_rows() {
                let (Some(kind), Some(subject), Some(object)) =
                    (str_at(k, row), str_at(s, row), str_at(o, row))
                else {
                    continue;
                };
                if !ids.contains(subject) || !ids.contains(object) {
                    continue;
                }
                let a = parse_attrs(str_at(attrs, row), subject)?;
                // The graph stores known kinds in canonical spelling.
                let kind = crate::lineage::graph::KNOWN_KINDS
                    .iter()
                    .find(|k| k.0.eq_ignore_ascii_case(kind))
                    .map_or(kind, |k| k.0);
                self.relations.insert(
                    (kind.to_string(), subject.to_string(), object.to_string()),
                    a,
                );
            }
        }
        Ok(())
    }

    async fn load_dlprov(
        &mut self,
        storage: &Storage,
        nodes: &HashMap<NodeIdx, Node>,
    ) -> Result<()> {
        let mut rows: HashMap<String, HashMap<i64, &str>> = HashMap::new();
        let mut any_task_or_exec = false;
        let mut wanted: HashSet<&str> = HashSet::new();
        for n in nodes.values() {
            match n.key {
                NodeKey::Row { id, .. } => {
                    let (dataset, _) = split(&n.id);
                    rows.entry(dataset.to_string())
                        .or_default()
                        .insert(id, n.id.as_str());
                }
                NodeKey::Task(_) | NodeKey::Execution(_) => any_task_or_exec = true,
                _ => {}
            }
            wanted.insert(n.id.as_str());
        }
        for (dataset, ids) in rows {
            self.load_rows(storage, &dataset, &ids).await?;
        }
        if any_task_or_exec {
            self.load_tasks(storage, &wanted).await?;
        }
        self.load_simple(storage, "dataflow", "dataflow", &wanted, |b, r| {
            let mut a = vec![("prov:type".to_string(), Value::QName("prov:Plan".into()))];
            push_text(&mut a, b, r, "tag", "dlprov:df_tag");
            a
        })
        .await?;
        self.load_simple(storage, "data_scientist", "scientist", &wanted, |b, r| {
            let mut a = vec![("prov:type".to_string(), Value::QName("prov:Person".into()))];
            push_text(&mut a, b, r, "email", "dlprov:email");
            a
        })
        .await?;
        self.load_simple(storage, "hardware_info", "hardware", &wanted, |b, r| {
            let mut a = vec![(
                "prov:type".to_string(),
                Value::QName("dlprov:Hardware".into()),
            )];
            for c in [
                "hostname",
                "os",
                "platform",
                "architecture",
                "processor",
                "gpus",
                "in_container",
            ] {
                if let Some(v) = column(b, c).and_then(|col| cell_value(col, r)) {
                    a.push((format!("dlprov:{c}"), v));
                }
            }
            a
        })
        .await?;
        Ok(())
    }

    /// Rows of `<tag>.ds_<set>`: every column but the task-id links.
    async fn load_rows(
        &mut self,
        storage: &Storage,
        dataset: &str,
        ids: &HashMap<i64, &str>,
    ) -> Result<()> {
        let Some((tag, set)) = dataset.split_once('.') else {
            return Ok(());
        };
        for batch in live_batches(storage, tag, &format!("ds_{set}")).await? {
            let Some(id_col) = column(&batch, "id") else {
                continue;
            };
            let schema = batch.schema();
            for row in 0..batch.num_rows() {
                let Some(node) = int_at(id_col, row).and_then(|i| ids.get(&i)) else {
                    continue;
                };
                let mut a: Attrs = vec![
                    ("dlprov:ds_tag".into(), Value::Str(set.to_string())),
                    (
                        "dlprov:id".into(),
                        Value::long(int_at(id_col, row).unwrap_or_default()),
                    ),
                ];
                for (i, field) in schema.fields().iter().enumerate() {
                    let name = field.name();
                    if name == "id" || name.ends_with("_task_id") {
                        continue;
                    }
                    if let Some(v) = cell_value(batch.column(i), row) {
                        a.push((format!("dlprov:{name}"), v));
                    }
                }
                self.dlprov.insert(node.to_string(), (a, Span::default()));
            }
        }
        Ok(())
    }

    /// Tasks (transformation, identifier, status, times from their
    /// performance rows) and executions (times spanning their tasks).
    async fn load_tasks(&mut self, storage: &Storage, wanted: &HashSet<&str>) -> Result<()> {
        let mut dt_tags: HashMap<i64, String> = HashMap::new();
        for b in live_batches(storage, DEFAULT_SCHEMA, "data_transformation").await? {
            let Some([id, tag]) = columns(&b, ["id", "tag"]) else {
                continue;
            };
            for r in 0..b.num_rows() {
                if let (Some(i), Some(t)) = (int_at(id, r), str_at(tag, r)) {
                    dt_tags.insert(i, t.to_string());
                }
            }
        }
        let mut spans: HashMap<i64, Span> = HashMap::new();
        for b in live_batches(storage, DEFAULT_SCHEMA, "performance").await? {
            let Some([task, st, et]) = columns(&b, ["task_id", "starttime", "endtime"]) else {
                continue;
            };
            for r in 0..b.num_rows() {
                if let Some(t) = int_at(task, r) {
                    spans.entry(t).or_default().widen(
                        str_at(st, r).and_then(dlprov_time),
                        str_at(et, r).and_then(dlprov_time),
                    );
                }
            }
        }
        let mut exec_spans: HashMap<String, Span> = HashMap::new();
        for b in live_batches(storage, DEFAULT_SCHEMA, "task").await? {
            let Some([id, ident, exec, dt, status]) =
                columns(&b, ["id", "identifier", "df_exec", "dt_id", "status"])
            else {
                continue;
            };
            for r in 0..b.num_rows() {
                let Some(task) = int_at(id, r) else { continue };
                let span = spans.remove(&task).unwrap_or_default();
                if let Some(e) = str_at(exec, r) {
                    exec_spans
                        .entry(e.to_string())
                        .or_default()
                        .widen(span.start.clone(), span.end.clone());
                }
                let node = format!("task:{task}");
                if !wanted.contains(node.as_str()) {
                    continue;
                }
                let mut a = Attrs::new();
                if let Some(t) = int_at(dt, r).and_then(|d| dt_tags.get(&d)) {
                    a.push(("dlprov:dt_tag".into(), Value::Str(t.clone())));
                }
                if let Some(i) = int_at(ident, r) {
                    a.push(("dlprov:task_id".into(), Value::long(i)));
                }
                if let Some(s) = str_at(status, r) {
                    a.push(("dlprov:status".into(), Value::Str(s.to_string())));
                }
                self.dlprov.insert(node, (a, span));
            }
        }
        for b in live_batches(storage, DEFAULT_SCHEMA, "dataflow_execution").await? {
            let Some(tag) = column(&b, "tag") else {
                continue;
            };
            for r in 0..b.num_rows() {
                let Some(t) = str_at(tag, r) else { continue };
                let node = format!("execution:{t}");
                if wanted.contains(node.as_str()) {
                    let a = vec![("dlprov:exec_tag".to_string(), Value::Str(t.to_string()))];
                    self.dlprov
                        .insert(node, (a, exec_spans.remove(t).unwrap_or_default()));
                }
            }
        }
        Ok(())
    }

    /// Catalog rows whose node id is `<prefix>:<id column>` (scientists,
    /// hardware) or `dataflow:<tag>`.
    async fn load_simple(
        &mut self,
        storage: &Storage,
        table: &str,
        prefix: &str,
        wanted: &HashSet<&str>,
        attrs: impl Fn(&RecordBatch, usize) -> Attrs,
    ) -> Result<()> {
        if !wanted
            .iter()
            .any(|w| w.starts_with(prefix) && w[prefix.len()..].starts_with(':'))
        {
            return Ok(());
        }
        let key_col = if prefix == "dataflow" { "tag" } else { "id" };
        for b in live_batches(storage, DEFAULT_SCHEMA, table).await? {
            let Some(key) = column(&b, key_col) else {
                continue;
            };
            for r in 0..b.num_rows() {
                let local = match (int_at(key, r), str_at(key, r)) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(s)) => s.to_string(),
                    _ => continue,
                };
                let node = format!("{prefix}:{local}");
                if wanted.contains(node.as_str()) {
                    self.dlprov.insert(node, (attrs(&b, r), Span::default()));
                }
            }
        }
        Ok(())
    }
}

/// An activity time: the column's value, written as the imported document
/// wrote it when the `key` attribute still says the same instant. The
/// attribute is taken out of `attrs` (it is the formal argument).
fn stored_time(
    attrs: &mut Attrs,
    key: &str,
    col: Option<&arrow::array::ArrayRef>,
    row: usize,
) -> Option<String> {
    let written = attrs
        .iter()
        .position(|(k, _)| k == key)
        .map(|i| attrs.remove(i).1.text());
    let Some(micros) = col.and_then(|c| cells::micros_at(c, row)) else {
        return written;
    };
    match written {
        Some(w) if cells::datetime_to_micros(&w) == Some(micros) => Some(w),
        _ => Some(micros_to_datetime(micros)),
    }
}

fn push_text(a: &mut Attrs, b: &RecordBatch, r: usize, col: &str, key: &str) {
    if let Some(v) = column(b, col).and_then(|c| str_at(c, r)) {
        a.push((key.to_string(), Value::Str(v.to_string())));
    }
}

fn parse_attrs(text: Option<&str>, node: &str) -> Result<Attrs> {
    match text {
        None | Some("") => Ok(Attrs::new()),
        Some(t) => attrs_from_text(t)
            .map_err(|e| EngineError::Invalid(format!("stored attributes of '{node}': {e}"))),
    }
}
