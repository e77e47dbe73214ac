//! The DLProv relational layout: the static catalog in schema `public`
//! (DfAnalyzer 2.0's `database-script.sql`: tables, sequences, column order)
//! and, per dataflow, a schema holding `ds_<set>` tables, their `<set>_id_seq`
//! sequences and `<set>` views.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use provdb_storage::{Storage, TableDef, WalOp};

use super::spec::{AttrType, DataflowSpec, SetSpec};
use crate::catalog::{
    DEFAULT_SCHEMA, ViewDef, defaults_property, nextval_default, quote_ident, schema_key,
    sequence_key, view_key,
};
use crate::error::{EngineError, Result};
use crate::sequence::{self, SequenceDef};

/// Column types used by the catalog.
#[derive(Clone, Copy)]
enum Ty {
    Int,
    Text,
    Bool,
}

struct Col(&'static str, Ty, bool);

const NN: bool = false;
const NULL: bool = true;

/// A catalog table: columns, primary key, and the sequence feeding `id`.
struct CatalogTable {
    name: &'static str,
    columns: &'static [Col],
    primary_key: &'static [&'static str],
    sequence: Option<(&'static str, &'static str)>,
}

use Ty::{Bool, Int, Text};

const CATALOG: &[CatalogTable] = &[
    CatalogTable {
        name: "dataflow",
        columns: &[
            Col("id", Int, NN),
            Col("uuid", Text, NULL),
            Col("tag", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "df_id_seq")),
    },
    CatalogTable {
        name: "dataflow_version",
        columns: &[Col("version", Int, NN), Col("df_id", Int, NN)],
        primary_key: &["version"],
        sequence: Some(("version", "version_id_seq")),
    },
    CatalogTable {
        name: "data_transformation",
        columns: &[
            Col("id", Int, NN),
            Col("df_id", Int, NN),
            Col("tag", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "dt_id_seq")),
    },
    CatalogTable {
        name: "program",
        columns: &[
            Col("id", Int, NN),
            Col("df_id", Int, NN),
            Col("name", Text, NN),
            Col("path", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "program_id_seq")),
    },
    CatalogTable {
        name: "use_program",
        columns: &[Col("dt_id", Int, NN), Col("program_id", Int, NN)],
        primary_key: &["dt_id", "program_id"],
        sequence: None,
    },
    CatalogTable {
        name: "data_set",
        columns: &[
            Col("id", Int, NN),
            Col("df_id", Int, NN),
            Col("tag", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "ds_id_seq")),
    },
    CatalogTable {
        name: "data_dependency",
        columns: &[
            Col("id", Int, NN),
            Col("previous_dt_id", Int, NULL),
            Col("next_dt_id", Int, NULL),
            Col("ds_id", Int, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "dd_id_seq")),
    },
    CatalogTable {
        name: "extractor",
        columns: &[
            Col("id", Int, NN),
            Col("ds_id", Int, NN),
            Col("tag", Text, NN),
            Col("cartridge", Text, NN),
            Col("extension", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "extractor_id_seq")),
    },
    CatalogTable {
        name: "extractor_combination",
        columns: &[
            Col("id", Int, NN),
            Col("ds_id", Int, NN),
            Col("outer_ext_id", Int, NN),
            Col("inner_ext_id", Int, NN),
            Col("keys", Text, NN),
            Col("key_types", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "ecombination_id_seq")),
    },
    CatalogTable {
        name: "attribute",
        columns: &[
            Col("id", Int, NN),
            Col("ds_id", Int, NN),
            Col("extractor_id", Int, NULL),
            Col("name", Text, NULL),
            Col("type", Text, NULL),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "att_id_seq")),
    },
    CatalogTable {
        name: "data_scientist",
        columns: &[
            Col("id", Int, NN),
            Col("uuid", Text, NULL),
            Col("email", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "user_id_seq")),
    },
    CatalogTable {
        name: "hardware_info",
        columns: &[
            Col("id", Int, NN),
            Col("uuid", Text, NULL),
            Col("hostname", Text, NN),
            Col("os", Text, NULL),
            Col("platform", Text, NULL),
            Col("architecture", Text, NULL),
            Col("processor", Text, NULL),
            Col("gpus", Text, NULL),
            Col("in_container", Bool, NULL),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "hardware_id_seq")),
    },
    CatalogTable {
        name: "dataflow_execution",
        columns: &[
            Col("id", Int, NN),
            Col("uuid", Text, NULL),
            Col("tag", Text, NN),
            Col("df_id", Int, NN),
            Col("scientist_id", Int, NULL),
            Col("hardware_id", Int, NULL),
        ],
        primary_key: &["tag"],
        sequence: Some(("id", "exec_id_seq")),
    },
    CatalogTable {
        name: "task",
        columns: &[
            Col("id", Int, NN),
            Col("uuid", Text, NULL),
            Col("identifier", Int, NN),
            Col("df_version", Int, NN),
            Col("df_exec", Text, NN),
            Col("dt_id", Int, NN),
            Col("status", Text, NULL),
            Col("workspace", Text, NULL),
            Col("computing_resource", Text, NULL),
            Col("output_msg", Text, NULL),
            Col("error_msg", Text, NULL),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "task_id_seq")),
    },
    CatalogTable {
        name: "file",
        columns: &[
            Col("id", Int, NN),
            Col("task_id", Int, NN),
            Col("name", Text, NN),
            Col("path", Text, NN),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "file_id_seq")),
    },
    CatalogTable {
        name: "performance",
        columns: &[
            Col("id", Int, NN),
            Col("task_id", Int, NN),
            Col("subtask_id", Int, NULL),
            // NOT NULL in DfAnalyzer, which stores the string 'null' when the
            // client sends nothing; provdb stores SQL NULL.
            Col("method", Text, NULL),
            Col("description", Text, NULL),
            Col("starttime", Text, NULL),
            Col("endtime", Text, NULL),
            Col("invocation", Text, NULL),
        ],
        primary_key: &["id"],
        sequence: Some(("id", "performance_id_seq")),
    },
];

fn arrow_type(t: Ty) -> DataType {
    match t {
        Int => DataType::Int32,
        Text => DataType::Utf8,
        Bool => DataType::Boolean,
    }
}

/// The catalog tables the ingest writes, resolved to their definitions.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub dataflow: TableDef,
    pub dataflow_version: TableDef,
    pub data_transformation: TableDef,
    pub data_set: TableDef,
    pub data_dependency: TableDef,
    pub attribute: TableDef,
    pub data_scientist: TableDef,
    pub hardware_info: TableDef,
    pub dataflow_execution: TableDef,
    pub task: TableDef,
    pub performance: TableDef,
}

impl Catalog {
    /// Resolve the catalog tables; `None` if they were never created.
    pub fn resolve(storage: &Storage) -> Result<Option<Catalog>> {
        if storage.table_by_name(DEFAULT_SCHEMA, "task").is_none() {
            return Ok(None);
        }
        let get = |name: &str| -> Result<TableDef> {
            let def = storage.table_by_name(DEFAULT_SCHEMA, name).ok_or_else(|| {
                EngineError::Conflict(format!(
                    "the DLProv catalog is incomplete: table public.{name} is missing"
                ))
            })?;
            check_shape(&def, name)?;
            Ok(def)
        };
        Ok(Some(Catalog {
            dataflow: get("dataflow")?,
            dataflow_version: get("dataflow_version")?,
            data_transformation: get("data_transformation")?,
            data_set: get("data_set")?,
            data_dependency: get("data_dependency")?,
            attribute: get("attribute")?,
            data_scientist: get("data_scientist")?,
            hardware_info: get("hardware_info")?,
            dataflow_execution: get("dataflow_execution")?,
            task: get("task")?,
            performance: get("performance")?,
        }))
    }

    /// Ops creating every missing catalog table and sequence. Fails if a
    /// table of that name exists with another shape.
    pub fn create_ops(storage: &Storage) -> Result<Vec<WalOp>> {
        let mut ops = Vec::new();
        for t in CATALOG {
            if let Some((_, seq)) = t.sequence {
                let key = sequence_key(DEFAULT_SCHEMA, seq);
                if storage.meta_get(&key).is_none() {
                    ops.push(sequence::put(&key, &SequenceDef::ascending())?);
                }
            }
            match storage.table_by_name(DEFAULT_SCHEMA, t.name) {
                Some(def) => check_shape(&def, t.name)?,
                None => {
                    let (id, source) = storage.allocate_table_ids();
                    let fields: Vec<Field> = t
                        .columns
                        .iter()
                        .map(|c| Field::new(c.0, arrow_type(c.1), c.2))
                        .collect();
                    let schema = Arc::new(Schema::new(fields));
                    let primary_key = t
                        .primary_key
                        .iter()
                        .map(|k| schema.index_of(k))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    let defaults: Vec<(String, String)> = t
                        .sequence
                        .iter()
                        .map(|(col, seq)| (col.to_string(), nextval_default(DEFAULT_SCHEMA, seq)))
                        .collect();
                    let def = TableDef {
                        id,
                        namespace: DEFAULT_SCHEMA.to_string(),
                        name: t.name.to_string(),
                        schema,
                        primary_key,
                        properties: defaults_property(&defaults),
                    };
                    ops.push(WalOp::CreateTable { def, source });
                }
            }
        }
        Ok(ops)
    }
}

/// A table in the catalog's place must have at least the catalog's columns
/// with the same types, in order.
fn check_shape(def: &TableDef, name: &str) -> Result<()> {
    let Some(t) = CATALOG.iter().find(|t| t.name == name) else {
        return Ok(());
    };
    let ok = t.columns.iter().enumerate().all(|(i, c)| {
        def.schema
            .fields()
            .get(i)
            .is_some_and(|f| f.name() == c.0 && *f.data_type() == arrow_type(c.1))
    });
    if ok {
        Ok(())
    } else {
        Err(EngineError::Conflict(format!(
            "table public.{name} exists but is not the DLProv catalog table (columns differ); rename or drop it to use DLProv ingest"
        )))
    }
}

/// Name of the table holding a set's rows.
pub fn set_table_name(set: &str) -> String {
    format!("ds_{set}")
}

fn set_sequence_name(set: &str) -> String {
    format!("{set}_id_seq")
}

/// Key of the sequence numbering a set's rows.
pub fn set_sequence_key(dataflow: &str, set: &str) -> String {
    sequence_key(dataflow, &set_sequence_name(set))
}

fn attr_type(t: AttrType) -> DataType {
    match t {
        AttrType::Numeric => DataType::Float64,
        AttrType::Text | AttrType::File | AttrType::LongText => DataType::Utf8,
    }
}

/// The columns of `ds_<set>` in DfAnalyzer's order: id, task-id columns,
/// attributes.
pub fn set_fields(set: &SetSpec) -> Vec<Field> {
    let mut fields = vec![Field::new("id", DataType::Int32, false)];
    for c in set.task_columns() {
        fields.push(Field::new(c, DataType::Int32, true));
    }
    for a in &set.attributes {
        fields.push(Field::new(&a.name, attr_type(a.ty), true));
    }
    fields
}

/// DDL ops that make storage hold `spec`'s schema: the dataflow schema,
/// new set tables (or existing ones with new columns appended), sequences
/// and views. Views list columns in DfAnalyzer's order whatever the table's
/// physical order after evolution.
pub fn dataflow_ddl(storage: &Storage, spec: &DataflowSpec) -> Result<Vec<WalOp>> {
    let df = &spec.tag;
    let mut ops = Vec::new();
    if storage.meta_get(&schema_key(df)).is_none() {
        ops.push(WalOp::PutMeta {
            key: schema_key(df),
            value: serde_json::json!({}),
        });
    }
    for set in &spec.sets {
        let table = set_table_name(&set.tag);
        let wanted = set_fields(set);
        match storage.table_by_name(df, &table) {
            None => {
                let seq = set_sequence_key(df, &set.tag);
                if storage.meta_get(&seq).is_none() {
                    ops.push(sequence::put(&seq, &SequenceDef::ascending())?);
                }
                let (id, source) = storage.allocate_table_ids();
                let def = TableDef {
                    id,
                    namespace: df.clone(),
                    name: table.clone(),
                    schema: Arc::new(Schema::new(wanted)),
                    primary_key: vec![0],
                    properties: defaults_property(&[(
                        "id".to_string(),
                        nextval_default(df, &set_sequence_name(&set.tag)),
                    )]),
                };
                ops.push(WalOp::CreateTable { def, source });
            }
            Some(mut def) => {
                let mut fields: Vec<Field> = def
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let mut changed = false;
                for f in wanted {
                    match fields.iter().find(|x| x.name() == f.name()) {
                        Some(x) if x.data_type() != f.data_type() => {
                            return Err(EngineError::Conflict(format!(
                                "{df}.{table}.{} has type {} but the specification needs {}",
                                f.name(),
                                x.data_type(),
                                f.data_type()
                            )));
                        }
                        Some(_) => {}
                        None => {
                            fields.push(f);
                            changed = true;
                        }
                    }
                }
                if changed {
                    def.schema = Arc::new(Schema::new(fields));
                    ops.push(WalOp::AlterTable { def });
                }
            }
        }
        let view = set_view(df, set);
        let key = view_key(df, &set.tag);
        let value =
            serde_json::to_value(&view).map_err(|e| EngineError::internal(e.to_string()))?;
        if storage.meta_get(&key).as_ref() != Some(&value) {
            ops.push(WalOp::PutMeta { key, value });
        }
    }
    Ok(ops)
}

/// `CREATE VIEW <set> AS SELECT ds.id, ds.<task cols>, ds.<attrs> FROM ds_<set> AS ds`.
fn set_view(df: &str, set: &SetSpec) -> ViewDef {
    let cols: Vec<String> = set_fields(set)
        .iter()
        .map(|f| format!("ds.{}", quote_ident(f.name())))
        .collect();
    ViewDef {
        sql: format!(
            "SELECT {} FROM {}.{} AS ds",
            cols.join(", "),
            quote_ident(df),
            quote_ident(&set_table_name(&set.tag))
        ),
        schema: df.to_string(),
    }
}
