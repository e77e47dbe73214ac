//! The DfAnalyzer protocol applied to storage directly: the reference DLProv
//! run, re-posted specs, bad input, and restart.

use std::sync::Arc;

use provdb_storage::{Storage, StorageOptions};
use serde_json::{Value as Json, json};

use super::Dlprov;
use crate::error::EngineError;
use crate::rows::{Row, Value, batch_row};
use crate::sequence::Sequences;

const SPEC: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-spec.json");
const RUN: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-run.jsonl");

fn run_messages() -> Vec<Json> {
    RUN.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line"))
        .collect()
}

async fn open(dir: &std::path::Path) -> (Storage, Dlprov) {
    let mut opts = StorageOptions::new(dir);
    opts.background = false;
    let storage = Storage::open(opts).await.expect("open");
    let dl = Dlprov::start(storage.clone(), Arc::new(Sequences::default()));
    (storage, dl)
}

async fn rows(storage: &Storage, schema: &str, table: &str) -> Vec<Row> {
    let def = storage
        .table_by_name(schema, table)
        .unwrap_or_else(|| panic!("{schema}.{table} missing"));
    let snap = storage.snapshot(def.id).expect("snapshot");
    let mut out = Vec::new();
    for src in storage.read_live(&snap).await.expect("read") {
        for i in 0..src.batch.num_rows() {
            out.push(batch_row(&src.batch, i).expect("row"));
        }
    }
    out.sort_by_key(|r| r[0].as_int());
    out
}

fn columns(storage: &Storage, schema: &str, table: &str) -> Vec<String> {
    let def = storage.table_by_name(schema, table).expect("table");
    def.schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn int(v: i64) -> Value {
    Value::Int(v)
}

fn text(s: &str) -> Value {
    Value::text(s)
}

#[tokio::test]
async fn reference_run_produces_the_dlprov_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (st, dl) = open(dir.path()).await;
    let spec: Json = serde_json::from_str(SPEC).expect("spec");
    let reg = dl.register_dataflow(&spec).await.expect("register");
    assert_eq!(reg.tag, "alexnet");
    assert_eq!(reg.sets.len(), 13);
    for m in run_messages() {
        dl.ingest(&[m]).await.expect("message");
    }
    // Column order of the generated tables (reference 2.6.1).
    assert_eq!(
        columns(&st, "alexnet", "ds_oloaddata"),
        [
            "id",
            "loaddata_task_id",
            "applyfilter_task_id",
            "dataset_dir"
        ]
    );
    assert_eq!(
        columns(&st, "alexnet", "ds_otrain"),
        [
            "id",
            "train_task_id",
            "timestamp",
            "elapsed_time",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "epoch"
        ]
    );
    assert_eq!(
        columns(&st, "alexnet", "ds_otrainedmodel"),
        [
            "id",
            "train_task_id",
            "test_task_id",
            "model_name",
            "model_dir"
        ]
    );
    // Tasks: one per identifier, all FINISHED, ids 1..5.
    let tasks = rows(&st, "public", "task").await;
    assert_eq!(tasks.len(), 5);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t[0], int(i as i64 + 1));
        assert_eq!(t[2], int(i as i64 + 1), "identifier");
        assert_eq!(t[6], text("FINISHED"));
        assert_eq!(t[7], Value::Null, "workspace is NULL, not 'null'");
    }
    let execs = rows(&st, "public", "dataflow_execution").await;
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0][2], text("alexnet-2025-07-10 21:00:00.123456"));
    assert_eq!(execs[0][4], int(1), "scientist");
    assert_eq!(execs[0][5], int(1), "hardware");
    let sci = rows(&st, "public", "data_scientist").await;
    assert_eq!(
        sci,
        vec![vec![int(1), Value::Null, text("bob@fictional.com")]]
    );
    let hw = rows(&st, "public", "hardware_info").await;
    assert_eq!(hw.len(), 1);
    assert_eq!(hw[0][2], text("host1"));
    assert_eq!(hw[0][7], text("NVIDIA H100"));
    assert_eq!(hw[0][8], Value::Bool(true));
    assert_eq!(rows(&st, "public", "performance").await.len(), 5);
    // Element rows, typed, with consumer links.
    let otrain = rows(&st, "alexnet", "ds_otrain").await;
    assert_eq!(otrain.len(), 2);
    assert_eq!(otrain[0][1], int(4));
    assert_eq!(otrain[0][4], Value::Float(2.1));
    assert_eq!(otrain[1][8], Value::Float(2.0));
    let oloaddata = rows(&st, "alexnet", "ds_oloaddata").await;
    assert_eq!(
        oloaddata,
        vec![vec![
            int(1),
            int(1),
            int(2),
            text("alexnet_x/data/raw_images.npy")
        ]]
    );
    let otrainset = rows(&st, "alexnet", "ds_otrainset").await;
    assert_eq!(otrainset[0][1..3], [int(3), int(4)]);
    // The two-parent test task links both inputs (DfAnalyzer 1.0 does not).
    let otestset = rows(&st, "alexnet", "ds_otestset").await;
    assert_eq!(otestset[0][1..3], [int(3), int(5)]);
    let model = rows(&st, "alexnet", "ds_otrainedmodel").await;
    assert_eq!(model[0][1..3], [int(4), int(5)]);
    let itrain = rows(&st, "alexnet", "ds_itrain").await;
    assert_eq!(
        itrain,
        vec![vec![
            int(1),
            int(4),
            text("adam"),
            Value::Float(0.002),
            Value::Float(2.0),
            Value::Float(32.0),
            Value::Float(17.0)
        ]]
    );
    // Dataset-level dependencies: every consumer of a set is recorded.
    let deps = rows(&st, "public", "data_dependency").await;
    assert!(deps.len() >= 13, "{deps:?}");
    let views = st.meta_scan("view/alexnet/");
    assert_eq!(views.len(), 13);
}

#[tokio::test]
async fn batches_are_atomic_and_errors_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (st, dl) = open(dir.path()).await;
    let spec: Json = serde_json::from_str(SPEC).expect("spec");
    dl.register_dataflow(&spec).await.expect("register");
    let msgs = run_messages();
    // The whole run in one batch.
    assert_eq!(dl.ingest(&msgs[..5]).await.expect("batch"), 5);
    let before = rows(&st, "public", "task").await;
    // A batch whose last message is bad stores nothing of the batch.
    let mut bad = msgs[5].clone();
    bad["sets"] = json!([{"tag": "otrainset", "elements": [["a"]]}]);
    let err = dl
        .ingest(&[msgs[5].clone(), bad])
        .await
        .expect_err("wrong count");
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("message 1"), "{err}");
    assert_eq!(rows(&st, "public", "task").await, before);
    assert!(rows(&st, "alexnet", "ds_otrainset").await.is_empty());
    // Non-numeric NUMERIC.
    let mut m = msgs[4].clone();
    m["sets"] = json!([{"tag": "isplitconfig", "elements": [["1", "x", "3"]]}]);
    let err = dl.ingest(&[m]).await.expect_err("numeric");
    assert!(err.to_string().contains("val_size"), "{err}");
    // Unknown dataflow, transformation, set.
    let mut m = msgs[0].clone();
    m["dataflow"] = json!("nope");
    assert!(matches!(
        dl.ingest(&[m]).await,
        Err(EngineError::NotFound(_))
    ));
    let mut m = msgs[0].clone();
    m["transformation"] = json!("nope");
    assert!(matches!(
        dl.ingest(&[m]).await,
        Err(EngineError::NotFound(_))
    ));
    let mut m = msgs[0].clone();
    m["sets"] = json!([{"tag": "nope", "elements": [["a"]]}]);
    assert!(matches!(
        dl.ingest(&[m]).await,
        Err(EngineError::NotFound(_))
    ));
    assert_eq!(rows(&st, "public", "task").await, before);
    // Several element lists: several rows.
    let mut m = msgs[9].clone();
    m["sets"] = json!([{"tag": "otrain", "elements": [
        ["t", "1", "1", "0.1", "1", "0.1", "1"],
        ["t", "1", "0.5", "0.2", "1", "0.2", "2"],
        ["t", "1", "0.2", "0.3", null, "nan", "3"]]}]);
    dl.ingest(&msgs[5..9]).await.expect("up to train begin");
    dl.ingest(&[m]).await.expect("three epochs");
    let otrain = rows(&st, "alexnet", "ds_otrain").await;
    assert_eq!(otrain.len(), 3);
    assert_eq!(otrain[2][6], Value::Null);
    assert!(matches!(otrain[2][7], Value::Float(f) if f.is_nan()));
}

#[tokio::test]
async fn respec_evolves_schema_and_state_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let msgs = run_messages();
    {
        let (st, dl) = open(dir.path()).await;
        let spec: Json = serde_json::from_str(SPEC).expect("spec");
        dl.register_dataflow(&spec).await.expect("register");
        let again = dl.register_dataflow(&spec).await.expect("re-register");
        assert!(!again.changed);
        dl.ingest(&msgs[..10]).await.expect("first part");
        st.close().await.expect("close");
    }
    let (st, dl) = open(dir.path()).await;
    // No re-POST of the spec: the rest of the run continues.
    dl.ingest(&msgs[10..]).await.expect("rest after restart");
    let tasks = rows(&st, "public", "task").await;
    assert_eq!(tasks.len(), 5, "{tasks:?}");
    assert!(tasks.iter().all(|t| t[6] == text("FINISHED")));
    // Evolve: a new attribute on otrain and a new set.
    let mut spec: Json = serde_json::from_str(SPEC).expect("spec");
    let train = &mut spec["transformations"][3]["sets"];
    train[3]["attributes"]
        .as_array_mut()
        .expect("attrs")
        .push(json!({"name": "LR_NOW", "type": "NUMERIC"}));
    train
        .as_array_mut()
        .expect("sets")
        .push(json!({"tag": "ogradients", "attributes": [{"name": "NORM", "type": "NUMERIC"}], "type": "OUTPUT"}));
    let reg = dl.register_dataflow(&spec).await.expect("evolve");
    assert!(reg.changed);
    assert_eq!(
        columns(&st, "alexnet", "ds_otrain")
            .last()
            .map(String::as_str),
        Some("lr_now")
    );
    let otrain = rows(&st, "alexnet", "ds_otrain").await;
    assert_eq!(otrain[0].last(), Some(&Value::Null), "old rows read NULL");
    let mut m = msgs[9].clone();
    m["sets"] = json!([{"tag": "ogradients", "elements": [["0.5"]]}]);
    dl.ingest(&[m]).await.expect("new set");
    assert_eq!(rows(&st, "alexnet", "ds_ogradients").await.len(), 1);
    // A type change is refused.
    let mut bad = spec.clone();
    bad["transformations"][3]["sets"][3]["attributes"][2]["type"] = json!("TEXT");
    assert!(matches!(
        dl.register_dataflow(&bad).await,
        Err(EngineError::Conflict(_))
    ));
}
