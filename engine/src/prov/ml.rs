//! Schema `ml`: the parameters, metric series and artifacts of imported
//! training runs (yProv4ML documents), as ordinary tables.
//!
//! - `ml.run(id, experiment, source, layout, document, user_name,
//!   start_time, end_time)`: one row per run; `id` is the run activity's
//!   PROV id, so runs join `prov.activity` and `lineage()`;
//! - `ml.param(run, name, context, value)`;
//! - `ml.series(run, name, context, source, file, points, digest)`: one row
//!   per metric series, what re-imports check against;
//! - `ml.metric(run, name, context, epoch, value, time)`: the points, one
//!   row each, stored columnar;
//! - `ml.artifact(run, name, context, path, role, type, size)`.

use arrow::datatypes::{DataType, Field};
use provdb_storage::Storage;

use crate::error::Result;
use crate::lineage::schema::{ensure_schema, text, time};

pub const ML_SCHEMA: &str = "ml";

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn key3() -> Vec<Field> {
    vec![
        text("run", false),
        text("name", false),
        text("context", false),
    ]
}

fn tables() -> Vec<(&'static str, Vec<Field>, Vec<usize>)> {
    let with = |extra: Vec<Field>| {
        let mut f = key3();
        f.extend(extra);
        f
    };
    vec![
        (
            "run",
            vec![
                text("id", false),
                text("experiment", true),
                text("source", true),
                text("layout", true),
                text("document", true),
                text("user_name", true),
                time("start_time"),
                time("end_time"),
            ],
            vec![0],
        ),
        ("param", with(vec![text("value", true)]), vec![0, 1, 2]),
        (
            "series",
            with(vec![
                text("source", true),
                text("file", true),
                int("points"),
                text("digest", true),
            ]),
            vec![0, 1, 2],
        ),
        (
            "metric",
            with(vec![
                int("epoch"),
                Field::new("value", DataType::Float64, true),
                time("time"),
            ]),
            vec![],
        ),
        (
            "artifact",
            with(vec![
                text("path", true),
                text("role", true),
                text("type", true),
                int("size"),
            ]),
            vec![0, 1, 2],
        ),
    ]
}

/// Create schema `ml` and its tables if missing.
pub async fn ensure_tables(storage: &Storage) -> Result<()> {
    ensure_schema(storage, ML_SCHEMA, tables()).await
}
