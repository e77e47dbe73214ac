//! The embeddable API: `Database` opened in-process, no server.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use provdb_sql::{Database, DatabaseOptions, QueryOutput, Session, TxnStatus};

async fn open(dir: &std::path::Path) -> Arc<Database> {
    Database::open(DatabaseOptions {
        data_dir: dir.to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

/// Run `sql`, fail on error, return the batches of the last statement.
async fn run(s: &mut Session, sql: &str) -> Vec<RecordBatch> {
    let (outs, err) = s.execute(sql).await;
    if let Some(e) = err {
        panic!("{sql}: {e}");
    }
    match outs.into_iter().last() {
        Some(QueryOutput::Rows { stream, .. }) => stream.try_collect().await.expect("stream"),
        _ => Vec::new(),
    }
}

fn i64_col(batches: &[RecordBatch], col: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(col)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap_or_else(|| {
                    panic!("column {col} is {:?}, not Int64", b.column(col).data_type())
                })
                .clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_write_close_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    {
        let db = open(&dir).await;
        let mut s = db.session();
        let (outs, err) = s
            .execute("CREATE TABLE e (id BIGINT PRIMARY KEY, name TEXT); INSERT INTO e VALUES (1, 'a'), (2, 'b')")
            .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(outs.len(), 2);
        match &outs[1] {
            QueryOutput::Command(tag) => {
                assert_eq!(tag.command, "INSERT");
                assert_eq!(tag.rows, Some(2));
            }
            other => panic!("INSERT gave {other:?}"),
        }
        // a second session sees the acknowledged rows at once
        let mut s2 = db.session();
        let b = run(&mut s2, "SELECT id FROM e ORDER BY id").await;
        assert_eq!(i64_col(&b, 0), vec![1, 2]);
        db.close().await.expect("close");
    }
    let db = open(&dir).await;
    let mut s = db.session();
    let b = run(&mut s, "SELECT id, name FROM e ORDER BY id").await;
    assert_eq!(i64_col(&b, 0), vec![1, 2]);
    let names: Vec<String> = b
        .iter()
        .flat_map(|b| {
            let a = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8).unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect();
    assert_eq!(names, vec!["a", "b"]);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_and_stop_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).await;
    let mut s = db.session();
    run(&mut s, "CREATE TABLE k (id BIGINT PRIMARY KEY)").await;
    let (outs, err) = s
        .execute("INSERT INTO k VALUES (1); INSERT INTO k VALUES (1); INSERT INTO k VALUES (2)")
        .await;
    let err = err.expect("duplicate key must fail");
    assert_eq!(err.code, "23505", "{err}");
    assert!(outs.len() <= 1, "statements after the error ran: {outs:?}");
    // implicit transaction: the whole string is undone
    let b = run(&mut s, "SELECT count(*) FROM k").await;
    assert_eq!(i64_col(&b, 0), vec![0]);
    let (_, err) = s.execute("SELEC").await;
    assert_eq!(err.expect("syntax").code, "42601");
    let (_, err) = s.execute("SELECT * FROM nope").await;
    assert_eq!(err.expect("unknown").code, "42P01");
    assert_eq!(s.transaction_status(), TxnStatus::Idle);
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_status_and_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).await;
    let mut s = db.session();
    let mut other = db.session();
    assert_eq!(s.transaction_status(), TxnStatus::Idle);
    run(&mut s, "BEGIN").await;
    assert_eq!(s.transaction_status(), TxnStatus::InBlock);
    let (_, err) = s.execute("SELECT * FROM nope").await;
    assert!(err.is_some());
    assert_eq!(s.transaction_status(), TxnStatus::Failed);
    let (_, err) = s.execute("SELECT 1").await;
    assert_eq!(err.expect("25P02").code, "25P02");
    run(&mut s, "ROLLBACK").await;
    assert_eq!(s.transaction_status(), TxnStatus::Idle);

    s.set_variable("search_path", "lab").expect("set_variable");
    assert_eq!(s.variable("search_path").as_deref(), Some("lab"));
    assert_eq!(other.variable("search_path").as_deref(), Some("public"));
    run(&mut other, "SET search_path TO other_schema").await;
    assert_eq!(
        other.variable("search_path").as_deref(),
        Some("other_schema")
    );
    assert_eq!(s.variable("search_path").as_deref(), Some("lab"));
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_with_parameters() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::scalar::ScalarValue;
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).await;
    let mut s = db.session();
    run(&mut s, "CREATE TABLE p (id BIGINT PRIMARY KEY, name TEXT)").await;
    let ins = s
        .prepare("INSERT INTO p VALUES ($1, $2)", &[])
        .await
        .expect("prepare");
    assert_eq!(ins.param_types.len(), 2);
    assert_eq!(ins.param_types[0], DataType::Int64);
    assert!(ins.result_schema.is_none());
    for i in 0..10i64 {
        let out = s
            .execute_prepared(
                &ins,
                vec![
                    ScalarValue::Int64(Some(i)),
                    ScalarValue::Utf8(Some(format!("n{i}"))),
                ],
            )
            .await
            .expect("execute_prepared");
        assert!(
            matches!(out, QueryOutput::Command(ref t) if t.rows == Some(1)),
            "{out:?}"
        );
    }
    let sel = s
        .prepare(
            "SELECT id FROM p WHERE id >= $1 ORDER BY id",
            &[Some(DataType::Int64)],
        )
        .await
        .expect("prepare select");
    assert_eq!(
        sel.result_schema.as_ref().expect("schema").fields().len(),
        1
    );
    match s
        .execute_prepared(&sel, vec![ScalarValue::Int64(Some(7))])
        .await
        .unwrap()
    {
        QueryOutput::Rows { stream, .. } => {
            let b: Vec<RecordBatch> = stream.try_collect().await.unwrap();
            assert_eq!(i64_col(&b, 0), vec![7, 8, 9]);
        }
        other => panic!("{other:?}"),
    }
    db.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let db = open(tmp.path()).await;
    let mut s = db.session();
    run(&mut s, "CREATE TABLE c (id BIGINT, name TEXT)").await;
    let (mut outs, err) = s.execute("COPY c FROM STDIN WITH (FORMAT csv)").await;
    assert!(err.is_none(), "{err:?}");
    let Some(QueryOutput::CopyIn(mut copy)) = outs.pop() else {
        panic!("COPY did not return CopyIn")
    };
    assert_eq!(copy.column_count(), 2);
    assert!(copy.is_csv());
    // a row split across two pushes
    copy.push(b"1,one\n2,tw").unwrap();
    copy.push(b"o\n3,\"th,ree\"\n").unwrap();
    let tag = s.copy_finish(copy).await.expect("copy_finish");
    assert_eq!((tag.command.as_str(), tag.rows), ("COPY", Some(3)));
    let b = run(
        &mut s,
        "SELECT count(*) FROM c WHERE name IN ('one', 'two', 'th,ree')",
    )
    .await;
    assert_eq!(i64_col(&b, 0), vec![3]);

    // an aborted COPY stores nothing
    let (mut outs, _) = s.execute("COPY c FROM STDIN").await;
    let Some(QueryOutput::CopyIn(mut copy)) = outs.pop() else {
        panic!("COPY did not return CopyIn")
    };
    copy.push(b"10\tten\n").unwrap();
    s.copy_abort(copy);
    let b = run(&mut s, "SELECT count(*) FROM c").await;
    assert_eq!(i64_col(&b, 0), vec![3]);
    db.close().await.unwrap();
}
