//! Registering a dataflow specification: the catalog rows (dataflow,
//! version, transformations, sets, attributes, dependencies), the per-set
//! tables, sequences and views, and the persisted record — all in one
//! commit. Re-posting a spec merges it into the stored one.

use std::collections::BTreeMap;

use provdb_storage::{Storage, WalOp};

use super::schema::{Catalog, dataflow_ddl};
use super::spec::DataflowSpec;
use super::state::{DataflowRecord, DependencyRow};
use crate::catalog::{DEFAULT_SCHEMA, sequence_key};
use crate::error::{EngineError, Result};
use crate::rows::{Row, Value, rows_to_batch};
use crate::sequence::Sequences;

/// The ops registering `spec` (merged into `existing`), and the new record.
pub fn plan(
    storage: &Storage,
    sequences: &Sequences,
    catalog: &Catalog,
    existing: Option<&DataflowRecord>,
    parsed: &DataflowSpec,
) -> Result<(Vec<WalOp>, DataflowRecord)> {
    let spec = match existing {
        Some(rec) => rec.spec.merge(parsed)?,
        None => parsed.clone(),
    };
    let mut pre = Vec::new();
    let next = |seq: &str, pre: &mut Vec<WalOp>| -> Result<i64> {
        sequences.next_in(storage, &sequence_key(DEFAULT_SCHEMA, seq), pre)
    };
    let mut rows: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
    let mut rec = match existing {
        Some(r) => r.clone(),
        None => {
            let id = next("df_id_seq", &mut pre)?;
            let version = next("version_id_seq", &mut pre)?;
            rows.entry("dataflow").or_default().push(vec![
                Value::Int(id),
                Value::Null,
                Value::text(&spec.tag),
            ]);
            rows.entry("dataflow_version")
                .or_default()
                .push(vec![Value::Int(version), Value::Int(id)]);
            DataflowRecord {
                spec: spec.clone(),
                id,
                version,
                transformations: BTreeMap::new(),
                sets: BTreeMap::new(),
                attributes: BTreeMap::new(),
                dependencies: Vec::new(),
            }
        }
    };
    rec.spec = spec.clone();
    let df = Value::Int(rec.id);
    for dt in &spec.transformations {
        if !rec.transformations.contains_key(&dt.tag) {
            let id = next("dt_id_seq", &mut pre)?;
            rec.transformations.insert(dt.tag.clone(), id);
            rows.entry("data_transformation").or_default().push(vec![
                Value::Int(id),
                df.clone(),
                Value::text(&dt.tag),
            ]);
        }
    }
    for set in &spec.sets {
        let ds = match rec.sets.get(&set.tag) {
            Some(id) => *id,
            None => {
                let id = next("ds_id_seq", &mut pre)?;
                rec.sets.insert(set.tag.clone(), id);
                rows.entry("data_set").or_default().push(vec![
                    Value::Int(id),
                    df.clone(),
                    Value::text(&set.tag),
                ]);
                id
            }
        };
        for a in &set.attributes {
            let key = format!("{}/{}", set.tag, a.name);
            if let std::collections::btree_map::Entry::Vacant(slot) = rec.attributes.entry(key) {
                let id = next("att_id_seq", &mut pre)?;
                slot.insert(id);
                rows.entry("attribute").or_default().push(vec![
                    Value::Int(id),
                    Value::Int(ds),
                    Value::Null,
                    Value::text(&a.name),
                    Value::text(a.ty.name()),
                ]);
            }
        }
    }
    let mut deletes = Vec::new();
    let wanted = wanted_dependencies(&spec);
    let mut kept = Vec::new();
    for d in std::mem::take(&mut rec.dependencies) {
        if wanted.contains(&(d.previous.clone(), d.next.clone(), d.set.clone())) {
            kept.push(d);
        } else {
            deletes.push(d);
        }
    }
    for (previous, next_dt, set) in wanted {
        if kept
            .iter()
            .any(|d| d.previous == previous && d.next == next_dt && d.set == set)
        {
            continue;
        }
        let id = next("dd_id_seq", &mut pre)?;
        let dt_id = |t: &Option<String>| {
            t.as_ref()
                .and_then(|t| rec.transformations.get(t))
                .map_or(Value::Null, |i| Value::Int(*i))
        };
        rows.entry("data_dependency").or_default().push(vec![
            Value::Int(id),
            dt_id(&previous),
            dt_id(&next_dt),
            Value::Int(rec.sets[&set]),
        ]);
        kept.push(DependencyRow {
            id,
            previous,
            next: next_dt,
            set,
        });
    }
    rec.dependencies = kept;

    let mut ops = pre;
    ops.extend(dataflow_ddl(storage, &spec)?);
    for d in &deletes {
        ops.push(delete_dependency(storage, catalog, d.id)?);
    }
    for (table, rows) in rows {
        let def = match table {
            "dataflow" => &catalog.dataflow,
            "dataflow_version" => &catalog.dataflow_version,
            "data_transformation" => &catalog.data_transformation,
            "data_set" => &catalog.data_set,
            "attribute" => &catalog.attribute,
            _ => &catalog.data_dependency,
        };
        ops.push(WalOp::Insert {
            table: def.id,
            batch: rows_to_batch(&def.schema, &rows)?,
        });
    }
    ops.push(WalOp::PutMeta {
        key: DataflowRecord::key(&spec.tag),
        value: serde_json::to_value(&rec).map_err(|e| EngineError::internal(e.to_string()))?,
    });
    Ok((ops, rec))
}

/// The dataset-level edges of `spec`: for each producer of a set, one row
/// per consumer fed by it (or one with no consumer), and one row per plain
/// input use. DfAnalyzer keeps only the last consumer of a set; every
/// consumer is kept here.
fn wanted_dependencies(spec: &DataflowSpec) -> Vec<(Option<String>, Option<String>, String)> {
    let mut out = Vec::new();
    for set in &spec.sets {
        for p in &set.producers {
            let consumers: Vec<&str> = spec
                .transformations
                .iter()
                .filter(|t| {
                    t.uses
                        .iter()
                        .any(|u| u.set == set.tag && u.dependency.as_deref() == Some(p.as_str()))
                })
                .map(|t| t.tag.as_str())
                .collect();
            if consumers.is_empty() {
                out.push((Some(p.clone()), None, set.tag.clone()));
            }
            for c in consumers {
                out.push((Some(p.clone()), Some(c.to_string()), set.tag.clone()));
            }
        }
        for t in &spec.transformations {
            if t.uses
                .iter()
                .any(|u| u.set == set.tag && !u.output && u.dependency.is_none())
            {
                out.push((None, Some(t.tag.clone()), set.tag.clone()));
            }
        }
    }
    out
}

fn delete_dependency(storage: &Storage, catalog: &Catalog, id: i64) -> Result<WalOp> {
    let def = &catalog.data_dependency;
    let schema = std::sync::Arc::new(def.schema.project(&def.primary_key)?);
    let key = rows_to_batch(&schema, &[vec![Value::Int(id)]])?;
    let addr = storage.lookup_pk(def.id, &key)?.ok_or_else(|| {
        EngineError::Conflict(format!(
            "public.data_dependency row {id} was removed outside the ingest"
        ))
    })?;
    let mut positions = roaring::RoaringBitmap::new();
    positions.insert(addr.pos);
    Ok(WalOp::Delete {
        table: def.id,
        source: addr.source,
        positions,
        keys: Some(key),
    })
}
