//! Import: a PROV-JSON document into the `prov` tables (and, for yProv4ML
//! documents, the `ml` tables), in one atomic commit.
//!
//! Steps: parse leniently ([`super::read`]); map the document's prefixes
//! to provdb's ([`super::namespace`]); merge records with the same id;
//! check that every relation's two ends are declared in the document or
//! already stored; recognise yProv4ML runs ([`super::yprov`]); then upsert
//! rows by primary key. Importing the same document again stores the same
//! rows (metric series are appended only past what an earlier import
//! stored), so re-imports change nothing. Any error leaves the database as
//! it was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::DataType;
use provdb_storage::{SourceId, StagedRows, Storage, TableDef, WalOp};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use super::cells::{columns, datetime_to_micros, int_at, live_batches, str_at};
use super::json::attrs_to_json;
use super::ml::ML_SCHEMA;
use super::model::{Attrs, Value};
use super::namespace::{Registry, split, unescape_local, valid_prefix};
use super::read::{RawContainer, RawDoc, Section, read_document};
use super::series::InlineSeries;
use super::spill::{Parked, Spill};
use super::yprov::{self, ElementRow, MlRows};
use crate::error::{EngineError, Result};
use crate::lineage::schema::PROV_SCHEMA;
use crate::lineage::{Lineage, NodeKind};
use crate::rows::{Row, Value as Cell, rows_to_batch};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// A name for the document (its file name), kept in `ml.run`.
    pub name: String,
    /// Directory to look for metric side files in (the document's own).
    pub base_dir: Option<PathBuf>,
    /// Accept relations whose ends are neither declared nor stored (they
    /// become nodes of the class the relation implies).
    pub allow_dangling: bool,
}

/// What an import stored.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportReport {
    pub document: String,
    pub entities: usize,
    pub activities: usize,
    pub agents: usize,
    pub relations: usize,
    pub bundles: usize,
    /// Namespaces registered by this import (prefix -> IRI).
    pub new_namespaces: BTreeMap<String, String>,
    /// The yProv4ML run, when the document is one.
    pub run: Option<String>,
    pub layout: Option<String>,
    pub params: usize,
    pub series: usize,
    /// Metric points stored by this import (0 when all were stored before).
    pub metric_points: usize,
    pub artifacts: usize,
}

/// Imports run one at a time (they register namespaces and append series).
static IMPORT_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long an import waits for a table another writer holds.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Import one PROV-JSON document.
pub async fn import(
    storage: &Storage,
    lineage: &Lineage,
    reader: impl Read,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    // Parsing is CPU work of up to seconds for big documents: keep it off
    // the async worker's other tasks when the runtime allows.
    let read = || read_document(reader, Some(spill_dir(storage)));
    let raw = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read)?,
        _ => read()?,
    };
    import_document(storage, lineage, raw, opts).await
}

/// Where the metric series of a large document wait while it is imported
/// (see [`super::spill`]): `tmp/` in the data directory.
pub fn spill_dir(storage: &Storage) -> PathBuf {
    storage.options().data_dir.join("tmp")
}

/// Import a document parsed with [`read_document`] (a caller that streams
/// the document from elsewhere parses it on a thread of its own).
pub async fn import_document(
    storage: &Storage,
    lineage: &Lineage,
    raw: RawDoc,
    opts: &ImportOptions,
) -> Result<ImportReport> {
    let _guard = IMPORT_LOCK.lock().await;
    let mut registry = Registry::ensure(storage).await?;
    let before = registry.prefixes.clone();
    let mut doc = resolve(raw, &mut registry, lineage)?;
    check_dangling(&doc, lineage, opts.allow_dangling)?;
    let associated: HashMap<String, String> = doc
        .relations
        .values()
        .filter(|r| r.kind == "wasAssociatedWith")
        .map(|r| (r.subject.clone(), split(&r.object).1.to_string()))
        .collect();
    let ml = yprov::extract(
        &doc.elements,
        &mut doc.inline,
        &mut doc.spill,
        &associated,
        opts.base_dir.as_deref(),
    )?;

    let mut report = ImportReport {
        document: opts.name.clone(),
        bundles: doc.bundles,
        relations: doc.relations.len(),
        ..Default::default()
    };
    for e in &doc.elements {
        match e.class {
            NodeKind::Entity => report.entities += 1,
            NodeKind::Activity => report.activities += 1,
            NodeKind::Agent => report.agents += 1,
        }
    }
    report.new_namespaces = registry
        .prefixes
        .iter()
        .filter(|(p, _)| !before.contains_key(*p))
        .map(|(p, i)| (p.clone(), i.clone()))
        .collect();

    let mut w = Writer::default();
    if !report.new_namespaces.is_empty() {
        w.ops.push(registry.op());
    }
    w.prov_rows(storage, &doc).await?;
    if let Some(ml) = ml {
        w.ml_rows(storage, ml, &mut doc.spill, opts, &mut report)
            .await?;
    }
    let committed = storage.commit(std::mem::take(&mut w.ops)).await;
    if let Some(staged) = w.staged.take() {
        staged.keep();
    }
    committed.map_err(|e| EngineError::from(e).context("storing the imported document"))?;
    Ok(report)
}

/// A relation after name resolution.
#[derive(Debug, Clone)]
pub struct RelationRow {
    pub kind: &'static str,
    pub subject: String,
    pub object: String,
    /// Secondary formal arguments (under their formal names), `@id` for a
    /// named relation, then the other attributes.
    pub attrs: Attrs,
    pub place: String,
}

/// A document with provdb names, records merged by id.
#[derive(Debug, Default)]
struct Resolved {
    elements: Vec<ElementRow>,
    relations: BTreeMap<(&'static str, String, String), RelationRow>,
    inline: HashMap<String, Parked>,
    spill: Spill,
    bundles: usize,
}

/// How one container's qualified names map to provdb's.
struct Names {
    prefixes: HashMap<String, String>,
    default: Option<String>,
}

impl Names {
    fn resolve(&self, q: &str) -> String {
        let join = |p: &str, l: &str| {
            let l = unescape_local(l);
            if p.is_empty() { l } else { format!("{p}:{l}") }
        };
        if let Some((p, l)) = q.split_once(':') {
            if let Some(pp) = self.prefixes.get(p) {
                return join(pp, l);
            }
            if p == "prov" || p == "xsd" || (valid_prefix(p) && self.default.is_none()) {
                return join(p, l);
            }
            if valid_prefix(p) && !l.starts_with('/') {
                // An undeclared prefix: kept as written.
                return join(p, l);
            }
        }
        match &self.default {
            Some(d) => join(d, q),
            None => unescape_local(q),
        }
    }

    fn value(&self, v: Value) -> Value {
        match v {
            Value::QName(q) => Value::QName(self.resolve(&q)),
            Value::Typed { lexical, datatype } => Value::Typed {
                lexical,
                datatype: self.resolve(&datatype),
            },
            other => other,
        }
    }

    fn attrs(&self, attrs: Attrs) -> Attrs {
        attrs
            .into_iter()
            .map(|(k, v)| (self.resolve(&k), self.value(v)))
            .collect()
    }
}

/// Map each container's prefixes to provdb's, registering new IRIs.
fn names_for(
    c: &RawContainer,
    outer: &[(String, String)],
    registry: &mut Registry,
    lineage: &Lineage,
) -> Names {
    let reserved = |p: &str| lineage.graph().symbols.dataset(p).is_some();
    let mut names = Names {
        prefixes: HashMap::new(),
        default: None,
    };
    for (p, iri) in outer.iter().chain(&c.prefixes) {
        let mapped = match registry.prefix_of(iri) {
            Some(m) => m,
            None if p == "default" => {
                let wanted = super::namespace::prefix_from_iri(iri);
                registry.register(&wanted, iri, &reserved)
            }
            None => registry.register(p, iri, &reserved),
        };
        if p == "default" {
            names.default = Some(mapped);
        } else {
            names.prefixes.insert(p.clone(), mapped);
        }
    }
    names
}

fn resolve(raw: RawDoc, registry: &mut Registry, lineage: &Lineage) -> Result<Resolved> {
    let mut out = Resolved {
        spill: raw.spill,
        ..Default::default()
    };
    let mut index: HashMap<(NodeKind, String), usize> = HashMap::new();
    let outer = raw
        .containers
        .first()
        .map(|c| c.prefixes.clone())
        .unwrap_or_default();
    let doc_names = names_for(&RawContainer::default(), &outer, registry, lineage);
    for (ci, c) in raw.containers.into_iter().enumerate() {
        let names = if ci == 0 {
            None
        } else {
            Some(names_for(&c, &outer, registry, lineage))
        };
        let names = names.as_ref().unwrap_or(&doc_names);
        let bundle = c.bundle.as_ref().map(|b| doc_names.resolve(b));
        if let Some(b) = &bundle {
            out.bundles += 1;
            let e = ElementRow {
                class: NodeKind::Entity,
                id: b.clone(),
                attrs: vec![("prov:type".into(), Value::QName("prov:Bundle".into()))],
                start: None,
                end: None,
            };
            merge_element(&mut out, &mut index, e);
        }
        for rec in c.records {
            let place = rec.place(c.bundle.as_deref());
            let mut attrs = names.attrs(rec.attrs);
            if let Some(b) = &bundle {
                attrs.push(("provdb:bundle".into(), Value::QName(b.clone())));
            }
            match rec.section {
                Section::Element(class) => {
                    let id = names.resolve(&rec.id);
                    let (start, end, attrs) = element_times(class, attrs, &place)?;
                    if let Some(s) = rec.series {
                        out.inline.insert(id.clone(), s);
                    }
                    merge_element(
                        &mut out,
                        &mut index,
                        ElementRow {
                            class,
                            id,
                            attrs,
                            start,
                            end,
                        },
                    );
                }
                Section::Relation(spec) => {
                    let mut args: Vec<Option<String>> = vec![None; spec.args.len()];
                    let mut rest = Attrs::new();
                    for (k, v) in attrs {
                        match spec.args.iter().position(|a| *a == k) {
                            Some(i) if Some(i) == spec.time_arg => args[i] = Some(v.text()),
                            Some(i) => args[i] = Some(names.resolve(&v.text())),
                            None => rest.push((k, v)),
                        }
                    }
                    let (Some(subject), Some(object)) = (args[0].clone(), args[1].clone()) else {
                        let missing = if args[0].is_none() {
                            spec.args[0]
                        } else {
                            spec.args[1]
                        };
                        return Err(EngineError::Invalid(format!(
                            "{place}: {missing} is missing (provdb stores relations with both ends)"
                        )));
                    };
                    let mut stored = Attrs::new();
                    if !rec.id.starts_with("_:") {
                        stored.push(("@id".into(), Value::Str(names.resolve(&rec.id))));
                    }
                    for (i, a) in args.into_iter().enumerate().skip(2) {
                        if let Some(a) = a {
                            stored.push((spec.args[i].to_string(), Value::Str(a)));
                        }
                    }
                    stored.extend(rest);
                    let key = (spec.name, subject.clone(), object.clone());
                    match out.relations.get_mut(&key) {
                        Some(r) => extend_unique(&mut r.attrs, stored),
                        None => {
                            out.relations.insert(
                                key,
                                RelationRow {
                                    kind: spec.name,
                                    subject,
                                    object,
                                    attrs: stored,
                                    place,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn extend_unique(into: &mut Attrs, more: Attrs) {
    for a in more {
        if !into.contains(&a) {
            into.push(a);
        }
    }
}

fn merge_element(
    out: &mut Resolved,
    index: &mut HashMap<(NodeKind, String), usize>,
    e: ElementRow,
) {
    match index.get(&(e.class, e.id.clone())) {
        Some(&i) => {
            let prev = &mut out.elements[i];
            prev.start = prev.start.or(e.start);
            prev.end = prev.end.or(e.end);
            extend_unique(&mut prev.attrs, e.attrs);
        }
        None => {
            index.insert((e.class, e.id.clone()), out.elements.len());
            out.elements.push(e);
        }
    }
}

/// An activity's formal start and end times, as microseconds (for the
/// `start_time` and `end_time` columns).
fn element_times(
    class: NodeKind,
    attrs: Attrs,
    place: &str,
) -> Result<(Option<i64>, Option<i64>, Attrs)> {
    if class != NodeKind::Activity {
        return Ok((None, None, attrs));
    }
    let (mut start, mut end, mut rest) = (None, None, Attrs::new());
    for (k, v) in attrs {
        let slot = match k.as_str() {
            "prov:startTime" => &mut start,
            "prov:endTime" => &mut end,
            _ => {
                rest.push((k, v));
                continue;
            }
        };
        let t = v.text();
        *slot = Some(datetime_to_micros(&t).ok_or_else(|| {
            EngineError::Invalid(format!("{place}: {k} '{t}' is not an xsd:dateTime"))
        })?);
        // The lexical form stays among the attributes, so an export gives
        // the time back as written (with or without a zone).
        rest.push((k, v));
    }
    Ok((start, end, rest))
}

fn check_dangling(doc: &Resolved, lineage: &Lineage, allow: bool) -> Result<()> {
    if allow {
        return Ok(());
    }
    let declared: HashSet<&str> = doc.elements.iter().map(|e| e.id.as_str()).collect();
    let g = lineage.graph();
    let mut problems = Vec::new();
    for r in doc.relations.values() {
        let spec = super::model::relation_spec(r.kind).expect("resolved relations have a spec");
        for (end, name) in [(&r.subject, spec.args[0]), (&r.object, spec.args[1])] {
            if !declared.contains(end.as_str()) && g.find(end).is_none() {
                problems.push(format!("{}: {name} '{end}'", r.place));
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let n = problems.len();
    problems.truncate(5);
    Err(EngineError::Invalid(format!(
        "{n} dangling reference(s), neither declared in the document nor stored in provdb: {}{} \
         (declare them, or import with allow_dangling to accept them)",
        problems.join("; "),
        if n > 5 { "; ..." } else { "" }
    )))
}

/// Collects the commit's ops, holding the write locks of the tables it
/// changes until the commit.
#[derive(Default)]
struct Writer {
    ops: Vec<WalOp>,
    locks: HashMap<provdb_storage::TableId, OwnedMutexGuard<()>>,
    /// The Parquet segments metric points are streamed to once a document
    /// has more than a chunk of them (see [`METRIC_CHUNK_ROWS`]); their
    /// files are deleted if the writer is dropped before the commit is
    /// tried.
    staged: Option<StagedRows>,
}

impl Writer {
    async fn table(&mut self, storage: &Storage, schema: &str, name: &str) -> Result<TableDef> {
        let def = storage
            .table_by_name(schema, name)
            .ok_or_else(|| EngineError::internal(format!("table {schema}.{name} is missing")))?;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.locks.entry(def.id) {
            let guard = tokio::time::timeout(LOCK_TIMEOUT, storage.write_lock(def.id).lock_owned())
                .await
                .map_err(|_| {
                    EngineError::Conflict(format!(
                        "table {schema}.{name} is locked by another writer"
                    ))
                })?;
            slot.insert(guard);
        }
        Ok(def)
    }

    /// Insert `rows`, replacing stored rows with the same primary key.
    async fn upsert(
        &mut self,
        storage: &Storage,
        schema: &str,
        name: &str,
        rows: &[Row],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let def = self.table(storage, schema, name).await?;
        let batch = rows_to_batch(&def.schema, rows)?;
        let keys = batch.project(&def.primary_key)?;
        let mut deletes: BTreeMap<SourceId, (RoaringBitmap, Vec<u32>)> = BTreeMap::new();
        for i in 0..keys.num_rows() {
            if let Some(addr) = storage.lookup_pk(def.id, &keys.slice(i, 1))? {
                let e = deletes.entry(addr.source).or_default();
                e.0.insert(addr.pos);
                e.1.push(i as u32);
            }
        }
        for (source, (positions, idx)) in deletes {
            let taken =
                arrow::compute::take_record_batch(&keys, &arrow::array::UInt32Array::from(idx))?;
            self.ops.push(WalOp::Delete {
                table: def.id,
                source,
                positions,
                keys: Some(taken),
            });
        }
        self.ops.push(WalOp::Insert {
            table: def.id,
            batch,
        });
        Ok(())
    }

    async fn prov_rows(&mut self, storage: &Storage, doc: &Resolved) -> Result<()> {
        let mut by_class: HashMap<NodeKind, Vec<Row>> = HashMap::new();
        for e in &doc.elements {
            let first = |local: &str| {
                e.attrs
                    .iter()
                    .find(|(k, _)| k == local)
                    .map(|(_, v)| Cell::Text(v.text()))
                    .unwrap_or(Cell::Null)
            };
            let mut row = vec![
                Cell::text(e.id.clone()),
                first("prov:type"),
                first("prov:label"),
            ];
            if e.class == NodeKind::Activity {
                row.push(Cell::opt_int(e.start));
                row.push(Cell::opt_int(e.end));
            }
            row.push(attrs_cell(&e.attrs));
            by_class.entry(e.class).or_default().push(row);
        }
        for class in [NodeKind::Entity, NodeKind::Activity, NodeKind::Agent] {
            if let Some(rows) = by_class.get(&class) {
                self.upsert(storage, PROV_SCHEMA, class.name(), rows)
                    .await?;
            }
        }
        let rels: Vec<Row> = doc
            .relations
            .values()
            .map(|r| {
                vec![
                    Cell::text(r.kind),
                    Cell::text(r.subject.clone()),
                    Cell::text(r.object.clone()),
                    attrs_cell(&r.attrs),
                ]
            })
            .collect();
        self.upsert(storage, PROV_SCHEMA, "relation", &rels).await
    }

    async fn ml_rows(
        &mut self,
        storage: &Storage,
        ml: MlRows,
        spill: &mut Spill,
        opts: &ImportOptions,
        report: &mut ImportReport,
    ) -> Result<()> {
        report.run = Some(ml.run.clone());
        report.layout = Some(ml.layout.to_string());
        let run = Cell::text(ml.run.clone());
        self.upsert(
            storage,
            ML_SCHEMA,
            "run",
            &[vec![
                run.clone(),
                Cell::opt_text(ml.experiment.as_deref()),
                Cell::text("yprov4ml"),
                Cell::text(ml.layout),
                Cell::text(opts.name.clone()),
                Cell::opt_text(ml.user.as_deref()),
                Cell::opt_int(ml.start),
                Cell::opt_int(ml.end),
            ]],
        )
        .await?;
        let params: Vec<Row> = ml
            .params
            .into_iter()
            .map(|(n, c, v)| ((n, c), v))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|((n, c), v)| vec![run.clone(), Cell::text(n), Cell::text(c), Cell::text(v)])
            .collect();
        report.params = params.len();
        self.upsert(storage, ML_SCHEMA, "param", &params).await?;
        let artifacts: Vec<Row> = ml
            .artifacts
            .into_iter()
            .map(|a| ((a.name.clone(), a.context.clone()), a))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .map(|((n, c), a)| {
                vec![
                    run.clone(),
                    Cell::text(n),
                    Cell::text(c),
                    Cell::text(a.path),
                    Cell::opt_text(a.role.as_deref()),
                    Cell::opt_text(a.kind.as_deref()),
                    Cell::opt_int(a.size),
                ]
            })
            .collect();
        report.artifacts = artifacts.len();
        self.upsert(storage, ML_SCHEMA, "artifact", &artifacts)
            .await?;
        self.series(storage, &ml.run, ml.series, spill, report)
            .await
    }

    /// Metric series: new points are appended; a series imported before
    /// must start with the points stored then.
    async fn series(
        &mut self,
        storage: &Storage,
        run: &str,
        series: Vec<yprov::Series>,
        spill: &mut Spill,
        report: &mut ImportReport,
    ) -> Result<()> {
        let stored = stored_series(storage, run).await?;
        let mut headers = Vec::new();
        let mut points = MetricColumns::default();
        for s in series {
            let data = spill.load(s.data).map_err(|e| {
                EngineError::internal(format!(
                    "reading back the points of metric '{}': {e}",
                    s.name
                ))
            })?;
            let n = data.len();
            let key = (s.name.clone(), s.context.clone());
            let from = match stored.get(&key) {
                None => 0,
                Some(&(m, ref digest)) => {
                    let m = m as usize;
                    if n < m || format!("{:016x}", data.digest(m)) != *digest {
                        return Err(EngineError::Conflict(format!(
                            "metric '{}' (context '{}') of run '{run}' was imported before with other points; \
                             delete its rows from ml.series and ml.metric to import it again",
                            s.name, s.context
                        )));
                    }
                    m
                }
            };
            report.series += 1;
            if from == n && stored.contains_key(&key) {
                continue;
            }
            let mut start = from;
            while start < n {
                let end = n.min(start + METRIC_CHUNK_ROWS - points.len);
                points.push([run, &s.name, &s.context], &data, start..end);
                start = end;
                if points.len == METRIC_CHUNK_ROWS {
                    self.metric_chunk(storage, &mut points, false).await?;
                }
            }
            report.metric_points += n - from;
            headers.push(vec![
                Cell::text(run),
                Cell::text(s.name.clone()),
                Cell::text(s.context.clone()),
                Cell::opt_text(s.source.as_deref()),
                Cell::opt_text(s.file.as_deref()),
                Cell::Int(n as i64),
                Cell::text(format!("{:016x}", data.digest(n))),
            ]);
        }
        self.upsert(storage, ML_SCHEMA, "series", &headers).await?;
        self.metric_chunk(storage, &mut points, true).await
    }

    /// Move the points gathered so far out of memory. A document with no
    /// more than one chunk of points logs them in an insert op; past that,
    /// chunks are written to a staged segment (a new one every
    /// [`STAGED_SEGMENT_ROWS`]) that the commit attaches, so the points are
    /// never all in memory, nor in the log. `last`: no more points follow.
    async fn metric_chunk(
        &mut self,
        storage: &Storage,
        points: &mut MetricColumns,
        last: bool,
    ) -> Result<()> {
        if points.len > 0 {
            let def = self.table(storage, ML_SCHEMA, "metric").await?;
            let batch = std::mem::take(points).finish(&def)?;
            if last && !self.staged.as_ref().is_some_and(StagedRows::is_open) {
                self.ops.push(WalOp::Insert {
                    table: def.id,
                    batch,
                });
            } else {
                let staged = match &mut self.staged {
                    Some(staged) => staged,
                    None => {
                        self.staged
                            .insert(StagedRows::new(storage, def.id, STAGED_SEGMENT_ROWS)?)
                    }
                };
                staged.write(&batch).await?;
            }
        }
        if last && let Some(staged) = &mut self.staged {
            self.ops.extend(staged.finish().await?);
        }
        Ok(())
    }
}

/// Metric points per piece: an insert op when a document has no more, a
/// write to a staged segment otherwise.
pub(crate) const METRIC_CHUNK_ROWS: usize = 65_536;

/// Rows per staged segment of metric points: two chunks in unit tests, so
/// that they see segments finished before the commit.
pub(crate) const STAGED_SEGMENT_ROWS: u64 = if cfg!(test) {
    2 * METRIC_CHUNK_ROWS as u64
} else {
    provdb_storage::staged::SEGMENT_ROWS
};

fn attrs_cell(attrs: &Attrs) -> Cell {
    if attrs.is_empty() {
        return Cell::Null;
    }
    Cell::Text(serde_json::Value::Object(attrs_to_json(attrs)).to_string())
}

/// (points, digest) of the series of `run` stored before.
async fn stored_series(
    storage: &Storage,
    run: &str,
) -> Result<HashMap<(String, String), (i64, String)>> {
    let mut out = HashMap::new();
    for b in live_batches(storage, ML_SCHEMA, "series").await? {
        let Some([r, n, c, p, d]) = columns(&b, ["run", "name", "context", "points", "digest"])
        else {
            continue;
        };
        for i in 0..b.num_rows() {
            if str_at(r, i) != Some(run) {
                continue;
            }
            if let (Some(n), Some(c), Some(p), Some(d)) =
                (str_at(n, i), str_at(c, i), int_at(p, i), str_at(d, i))
            {
                out.insert((n.to_string(), c.to_string()), (p, d.to_string()));
            }
        }
    }
    Ok(out)
}

/// Builders of `ml.metric` columns.
#[derive(Default)]
struct MetricColumns {
    run: StringBuilder,
    name: StringBuilder,
    context: StringBuilder,
    epoch: Int64Builder,
    value: Float64Builder,
    time: TimestampMicrosecondBuilder,
    len: usize,
}

impl MetricColumns {
    /// Points `points` of a series of (run, name, context) `key`.
    fn push(&mut self, key: [&str; 3], data: &InlineSeries, points: std::ops::Range<usize>) {
        let [run, name, context] = key;
        for i in points {
            self.run.append_value(run);
            self.name.append_value(name);
            self.context.append_value(context);
            self.epoch.append_value(data.epochs[i]);
            self.value.append_value(data.values[i]);
            self.time
                .append_option(data.timestamps_ms[i].map(|ms| ms * 1000));
            self.len += 1;
        }
    }

    fn finish(mut self, def: &TableDef) -> Result<RecordBatch> {
        let tz = match def
            .schema
            .field_with_name("time")
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::Timestamp(_, tz)) => tz,
            _ => None,
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.run.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.context.finish()),
            Arc::new(self.epoch.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.time.finish().with_timezone_opt(tz)),
        ];
        Ok(RecordBatch::try_new(Arc::clone(&def.schema), columns)?)
    }
}
