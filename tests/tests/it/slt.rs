//! sqllogictest: every `tests/slt/*.slt` file runs twice, in-process over
//! `provdb_sql::Session` and over the wire (simple query protocol through
//! tokio-postgres) against the real binary. Each run gets a fresh database.
//!
//! Values are printed the PostgreSQL way in both modes: NULL as `NULL`, the
//! empty string as `(empty)`, booleans `t`/`f`, timestamps with a space.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use futures::StreamExt;
use provdb_sql::{Database, DatabaseOptions, QueryOutput, Session};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

use crate::harness::{self, Server};

/// Error shown to the runner: the message alone (so `statement error <regex>`
/// matches the same text in both modes) plus the SQLSTATE for `error(XXXXX)`.
#[derive(Debug)]
pub struct SltError {
    pub code: Option<String>,
    pub message: String,
}

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SltError {}

fn normalize_cell(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

// ---------------------------------------------------------------- in-process

pub struct InProcess {
    session: Session,
}

fn column_type(dt: &DataType) -> DefaultColumnType {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DefaultColumnType::Integer,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => DefaultColumnType::FloatingPoint,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

/// Format one Arrow value as PostgreSQL's text output would.
fn format_value(array: &ArrayRef, fmt: &ArrayFormatter<'_>, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".to_string();
    }
    match array.data_type() {
        DataType::Boolean => {
            let b = array
                .as_any()
                .downcast_ref::<arrow::array::BooleanArray>()
                .expect("bool")
                .value(row);
            if b { "t" } else { "f" }.to_string()
        }
        DataType::Float64 => {
            let v = array
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .expect("f64")
                .value(row);
            pg_float(v)
        }
        DataType::Float32 => {
            let v = array
                .as_any()
                .downcast_ref::<arrow::array::Float32Array>()
                .expect("f32")
                .value(row);
            pg_float(v)
        }
        DataType::Timestamp(_, _) | DataType::Date64 => {
            normalize_cell(Some(&fmt.value(row).to_string().replacen('T', " ", 1)))
        }
        _ => normalize_cell(Some(&fmt.value(row).to_string())),
    }
}

/// A float as PostgreSQL writes it: `Infinity`, `-Infinity`, `NaN`, or
/// the shortest decimal that reads back.
fn pg_float(v: impl Into<f64> + std::fmt::Display + Copy) -> String {
    match v.into() {
        f64::INFINITY => "Infinity".to_string(),
        f64::NEG_INFINITY => "-Infinity".to_string(),
        _ => format!("{v}"),
    }
}

fn sql_error(e: provdb_sql::SqlError) -> SltError {
    SltError {
        code: Some(e.code.to_string()),
        message: e.message,
    }
}

#[async_trait]
impl AsyncDB for InProcess {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        let (outputs, err) = self.session.execute(sql).await;
        if let Some(e) = err {
            return Err(sql_error(e));
        }
        let Some(last) = outputs.into_iter().last() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        match last {
            QueryOutput::Rows { schema, mut stream } => {
                let types = schema
                    .fields()
                    .iter()
                    .map(|f| column_type(f.data_type()))
                    .collect();
                let mut rows = Vec::new();
                let opts = FormatOptions::default().with_null("NULL");
                while let Some(batch) = stream.next().await {
                    // Errors raised while streaming get their SQLSTATE the
                    // way the server maps them.
                    let batch =
                        batch.map_err(|e| sql_error(provdb_sql::error::from_datafusion(e)))?;
                    let fmts: Vec<ArrayFormatter<'_>> = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter"))
                        .collect();
                    for r in 0..batch.num_rows() {
                        rows.push(
                            batch
                                .columns()
                                .iter()
                                .zip(&fmts)
                                .map(|(c, f)| format_value(c, f, r))
                                .collect(),
                        );
                    }
                }
                Ok(DBOutput::Rows { types, rows })
            }
            QueryOutput::Command(tag) => Ok(DBOutput::StatementComplete(tag.rows.unwrap_or(0))),
            QueryOutput::Empty => Ok(DBOutput::StatementComplete(0)),
            QueryOutput::CopyIn(c) => {
                self.session.copy_abort(c);
                Err(SltError {
                    code: None,
                    message: "COPY FROM STDIN is not supported in .slt files".into(),
                })
            }
        }
    }

    async fn shutdown(&mut self) {
        self.session.close();
    }

    fn engine_name(&self) -> &str {
        "provdb-inprocess"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.code.clone()
    }
}

// ---------------------------------------------------------------------- wire

pub struct Wire {
    client: tokio_postgres::Client,
}

fn wire_error(e: tokio_postgres::Error) -> SltError {
    match e.as_db_error() {
        Some(db) => SltError {
            code: Some(db.code().code().to_string()),
            message: db.message().to_string(),
        },
        None => SltError {
            code: None,
            message: e.to_string(),
        },
    }
}

#[async_trait]
impl AsyncDB for Wire {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Self::ColumnType>, Self::Error> {
        use tokio_postgres::SimpleQueryMessage as M;
        let msgs = harness::within(120, sql, self.client.simple_query(sql))
            .await
            .map_err(wire_error)?;
        let mut rows: Option<(usize, Vec<Vec<String>>)> = None;
        let mut count = 0;
        for m in msgs {
            match m {
                M::RowDescription(cols) => rows = Some((cols.len(), Vec::new())),
                M::Row(r) => {
                    let ncols = r.len();
                    let entry = rows.get_or_insert((ncols, Vec::new()));
                    entry
                        .1
                        .push((0..ncols).map(|i| normalize_cell(r.get(i))).collect());
                }
                M::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        match rows {
            Some((ncols, rows)) => Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; ncols],
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(count)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "provdb-wire"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.code.clone()
    }
}

// -------------------------------------------------------------------- runner

pub fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("slt")
}

/// Run one file in-process on a fresh database.
pub async fn run_in_process(name: &str) {
    let path = slt_dir().join(format!("{name}.slt"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let db: Arc<Database> = Database::open(DatabaseOptions {
        data_dir: tmp.path().join("data"),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("Database::open: {e}"));
    let db2 = db.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let db = db2.clone();
        async move {
            Ok::<_, SltError>(InProcess {
                session: db.session(),
            })
        }
    });
    runner.add_label("inprocess");
    runner.with_hash_threshold(0);
    let res = runner.run_file_async(&path).await;
    runner.shutdown_async().await;
    drop(runner);
    let _ = db.close().await;
    if let Err(e) = res {
        panic!(
            "{}: in-process run failed:\n{}",
            path.display(),
            e.display(false)
        );
    }
}

/// Run one file over the wire against a fresh server.
pub async fn run_wire(name: &str) {
    let path = slt_dir().join(format!("{name}.slt"));
    let server = Server::start();
    let conn_str = server.conn_str();
    let mut runner = sqllogictest::Runner::new(move || {
        let conn_str = conn_str.clone();
        async move {
            let client = harness::connect(&conn_str).await.map_err(wire_error)?;
            Ok::<_, SltError>(Wire { client })
        }
    });
    runner.add_label("wire");
    let res = runner.run_file_async(&path).await;
    runner.shutdown_async().await;
    drop(runner);
    if let Err(e) = res {
        panic!("{}: wire run failed:\n{}", path.display(), e.display(false));
    }
    drop(server);
}

macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        /// Every file listed here; `all_slt_files_are_listed` keeps this honest.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn in_process() {
                    super::run_in_process(stringify!($name)).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn wire() {
                    super::run_wire(stringify!($name)).await;
                }
            }
        )*
    };
}

slt_files!(
    ddl,
    dml,
    views,
    sequences,
    search_path,
    transactions,
    types_nulls,
    errors,
    explain,
    aggregates_joins,
    eager_aggregate,
    filter_aggregate,
    run_aggregate,
    min_max,
    catalog,
    lineage,
    prov_export,
);

#[test]
fn all_slt_files_are_listed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(slt_dir())
        .expect("tests/slt")
        .filter_map(|e| {
            let p = e.ok()?.path();
            if p.extension()? != "slt" {
                return None;
            }
            Some(p.file_stem()?.to_string_lossy().into_owned())
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "tests/slt/*.slt and slt_files!() differ");
}
