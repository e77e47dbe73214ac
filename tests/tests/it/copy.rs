//! COPY ... FROM STDIN in text and CSV, atomicity, and a 1M-row load.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use tokio_postgres::Client;

use crate::harness::{Server, assert_sqlstate, count, sqlstate, within};
use crate::raw::RawConn;

/// COPY `data` in chunks of `chunk` bytes (rows deliberately split across
/// CopyData messages). Returns the row count the server reported.
pub async fn copy_bytes(
    c: &Client,
    stmt: &str,
    data: &[u8],
    chunk: usize,
) -> Result<u64, tokio_postgres::Error> {
    let sink = c.copy_in(stmt).await?;
    futures::pin_mut!(sink);
    for part in data.chunks(chunk.max(1)) {
        sink.send(Bytes::copy_from_slice(part)).await?;
    }
    sink.finish().await
}

/// (id, name, score, ok) as read back.
type TextRow = (i32, Option<String>, Option<f64>, Option<bool>);
/// (id, a, b, score) as read back.
type CsvRow = (i32, Option<String>, Option<String>, Option<f64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_text_format_with_escapes_and_nulls() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE ct (id INT, name TEXT, score DOUBLE PRECISION, ok BOOLEAN)")
        .await
        .unwrap();
    let data = "1\tplain\t1.5\tt\n\
                2\ttab\\there\t\\N\tf\n\
                3\tnew\\nline and back\\\\slash\t-2\ttrue\n\
                4\t\\N\t0\tfalse\n\
                5\t\t3.25\t\\N\n";
    let n = copy_bytes(&c, "COPY ct FROM STDIN", data.as_bytes(), 7)
        .await
        .expect("COPY text");
    assert_eq!(n, 5);
    let rows = c
        .query("SELECT id, name, score, ok FROM ct ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<TextRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Some("plain".into()), Some(1.5), Some(true)),
            (2, Some("tab\there".into()), None, Some(false)),
            (
                3,
                Some("new\nline and back\\slash".into()),
                Some(-2.0),
                Some(true)
            ),
            (4, None, Some(0.0), Some(false)),
            (5, Some("".into()), Some(3.25), None),
        ]
    );

    // An unqualified table name is looked up through the whole search path,
    // as in a query: the first schema (where a CREATE would go) lacks it.
    c.batch_execute("CREATE SCHEMA elsewhere; SET search_path TO elsewhere, public")
        .await
        .unwrap();
    let n = copy_bytes(&c, "COPY ct (id) FROM STDIN", b"6\n", 64)
        .await
        .expect("COPY through the search path");
    assert_eq!(n, 1);
    assert_eq!(count(&c, "public.ct").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_csv_with_header_quotes_and_column_list() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE cv (id INT PRIMARY KEY, label TEXT, note TEXT DEFAULT 'dflt', v DOUBLE PRECISION)")
        .await
        .unwrap();
    let data = "id,label,v\n\
                1,simple,1\n\
                2,\"with, comma\",2.5\n\
                3,\"say \"\"hi\"\"\",\n\
                4,\"multi\nline\",4\n\
                5,\"\",5\n\
                6,,6\n";
    let n = copy_bytes(
        &c,
        "COPY cv (id, label, v) FROM STDIN WITH (FORMAT csv, HEADER true)",
        data.as_bytes(),
        5,
    )
    .await
    .expect("COPY csv");
    assert_eq!(n, 6);
    let rows = c
        .query("SELECT id, label, note, v FROM cv ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<CsvRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let d = Some("dflt".to_string());
    assert_eq!(
        got,
        vec![
            (1, Some("simple".into()), d.clone(), Some(1.0)),
            (2, Some("with, comma".into()), d.clone(), Some(2.5)),
            (3, Some("say \"hi\"".into()), d.clone(), None),
            (4, Some("multi\nline".into()), d.clone(), Some(4.0)),
            // quoted empty string is '', unquoted empty is NULL
            (5, Some("".into()), d.clone(), Some(5.0)),
            (6, None, d.clone(), Some(6.0)),
        ]
    );
    // the old-style option spelling works too
    let n = copy_bytes(&c, "COPY cv (id, label) FROM STDIN CSV", b"7,seven\n", 100)
        .await
        .expect("COPY ... CSV");
    assert_eq!(n, 1);
    // and a custom delimiter in text format
    let n = copy_bytes(
        &c,
        "COPY cv (id, label) FROM STDIN WITH (DELIMITER '|')",
        b"8|eight\n",
        100,
    )
    .await
    .expect("COPY text with delimiter");
    assert_eq!(n, 1);
    assert_eq!(count(&c, "cv").await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_copy_data_is_rejected_whole() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE cb (id INT PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();
    copy_bytes(&c, "COPY cb FROM STDIN", b"1\ta\n", 100)
        .await
        .expect("first copy");

    // a bad integer on the 3rd line: nothing of this COPY is stored
    let e = copy_bytes(&c, "COPY cb FROM STDIN", b"2\tb\n3\tc\nxx\td\n4\te\n", 3)
        .await
        .expect_err("bad integer");
    assert_eq!(sqlstate(&e).as_deref(), Some("22P02"), "{e:?}");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
        + &e.as_db_error()
            .and_then(|d| d.where_().map(str::to_string))
            .unwrap_or_default();
    assert!(
        msg.contains("xx") || msg.contains("line 3"),
        "error should locate the bad value: {e:?}"
    );
    assert_eq!(count(&c, "cb").await, 1);

    // too few columns
    let e = copy_bytes(&c, "COPY cb FROM STDIN", b"5\n", 100)
        .await
        .expect_err("missing column");
    assert!(
        matches!(sqlstate(&e).as_deref(), Some("22P04") | Some("22P02")),
        "{e:?}"
    );
    // NULL into NOT NULL
    let e = copy_bytes(&c, "COPY cb FROM STDIN", b"6\t\\N\n", 100)
        .await
        .expect_err("null");
    assert_eq!(sqlstate(&e).as_deref(), Some("23502"), "{e:?}");
    // duplicate key, within the COPY and against existing rows
    let e = copy_bytes(&c, "COPY cb FROM STDIN", b"7\tx\n1\ty\n", 100)
        .await
        .expect_err("dup");
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e:?}");
    let e = copy_bytes(&c, "COPY cb FROM STDIN", b"8\tx\n8\ty\n", 100)
        .await
        .expect_err("dup in copy");
    assert_eq!(sqlstate(&e).as_deref(), Some("23505"), "{e:?}");
    assert_eq!(count(&c, "cb").await, 1);
    // unknown table
    assert_sqlstate(
        copy_bytes(&c, "COPY nope FROM STDIN", b"", 1).await,
        "42P01",
    );
    // the connection still works
    copy_bytes(&c, "COPY cb FROM STDIN", b"9\tz\n", 100)
        .await
        .expect("copy after errors");
    assert_eq!(count(&c, "cb").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_transaction_rolls_back() {
    let server = Server::start();
    let mut c = server.client().await;
    c.batch_execute("CREATE TABLE ctx (x INT)").await.unwrap();
    let tx = c.transaction().await.unwrap();
    let sink = tx
        .copy_in("COPY ctx FROM STDIN")
        .await
        .expect("copy in txn");
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n2\n3\n")).await.unwrap();
    assert_eq!(sink.finish().await.expect("finish"), 3);
    let n: i64 = tx
        .query_one("SELECT count(*) FROM ctx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3, "own COPY visible inside the transaction");
    tx.rollback().await.unwrap();
    assert_eq!(count(&c, "ctx").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_one_million_rows_then_count() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute(
        "CREATE TABLE million (id BIGINT, label TEXT, v DOUBLE PRECISION, flag BOOLEAN)",
    )
    .await
    .unwrap();
    const N: i64 = 1_000_000;
    let mut data = Vec::with_capacity(40 * N as usize);
    for i in 0..N {
        use std::io::Write;
        writeln!(
            data,
            "{i}\tlabel-{}\t{}\t{}",
            i % 1000,
            i as f64 * 0.5,
            if i % 2 == 0 { 't' } else { 'f' }
        )
        .unwrap();
    }
    let t0 = Instant::now();
    let n = within(
        600,
        "1M-row COPY",
        copy_bytes(&c, "COPY million FROM STDIN", &data, 256 * 1024),
    )
    .await
    .expect("COPY 1M rows");
    let took = t0.elapsed();
    eprintln!("COPY of {N} rows took {took:?}");
    assert_eq!(n, N as u64);
    let row = within(
        120,
        "aggregate",
        c.query_one(
            "SELECT count(*), sum(id), count(DISTINCT label), sum(CASE WHEN flag THEN 1 ELSE 0 END) FROM million",
            &[],
        ),
    )
    .await
    .expect("aggregate");
    assert_eq!(row.get::<_, i64>(0), N);
    assert_eq!(row.get::<_, i64>(1), N * (N - 1) / 2);
    assert_eq!(row.get::<_, i64>(2), 1000);
    assert_eq!(row.get::<_, i64>(3), N / 2);
    let v: f64 = c
        .query_one("SELECT v FROM million WHERE id = 999999", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 499_999.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_copy_stores_nothing_and_others_are_served() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE vanish (x INT)")
        .await
        .unwrap();
    // another client keeps working during the whole test
    let other = server.client().await;
    for round in 0..3 {
        let mut raw = RawConn::connect(server.port).await.expect("raw connect");
        raw.query("COPY vanish FROM STDIN").await.unwrap();
        let m = raw.read_msg().await.expect("CopyInResponse");
        assert_eq!(m.tag, b'G', "expected CopyInResponse, got {m:?}");
        let mut rows = Vec::new();
        for i in 0..10_000 {
            rows.extend_from_slice(format!("{i}\n").as_bytes());
        }
        // end the data mid-row, then vanish without CopyDone
        rows.extend_from_slice(b"12");
        raw.send(b'd', &rows).await.unwrap();
        drop(raw);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            count(&other, "vanish").await,
            0,
            "round {round}: half a COPY became visible"
        );
    }
    // CopyFail from a well-behaved client also stores nothing
    let mut raw = RawConn::connect(server.port).await.expect("raw connect");
    raw.query("COPY vanish FROM STDIN").await.unwrap();
    assert_eq!(raw.read_msg().await.unwrap().tag, b'G');
    raw.send(b'd', b"1\n2\n").await.unwrap();
    raw.send(b'f', b"client gave up\0").await.unwrap();
    let msgs = raw.read_until_ready().await.expect("after CopyFail");
    assert!(
        msgs.iter().any(|m| m.tag == b'E'),
        "CopyFail must end in an error: {msgs:?}"
    );
    let (status, err) = raw.simple("SELECT 1").await.unwrap();
    assert_eq!(
        (status, err),
        (b'I', None),
        "connection usable after CopyFail"
    );
    assert_eq!(count(&other, "vanish").await, 0);
    copy_bytes(&c, "COPY vanish FROM STDIN", b"1\n", 10)
        .await
        .expect("copy still works");
    assert_eq!(count(&other, "vanish").await, 1);
}

/// Files under the server's local segment store.
fn segment_files(server: &Server) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(&server.data_dir.join("segments").join("tables"), &mut out);
    out
}

/// A COPY past one batch (65,536 rows) into a table without a primary key
/// streams its rows to a staged Parquet segment while it is parsed. A
/// client that vanishes after the stager started leaves no rows and, once
/// the server restarts, no file; an acknowledged staged COPY survives a
/// kill -9.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_copies_vanish_whole_or_survive_a_kill() {
    let mut server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE big (id BIGINT, v DOUBLE PRECISION, tag TEXT)")
        .await
        .unwrap();
    const N: u64 = 200_000;
    let mut data = Vec::new();
    for i in 0..N {
        data.extend_from_slice(format!("{i}\t{}.{:02}\tt{}\n", i / 100, i % 100, i % 5).as_bytes());
    }
    let mut raw = RawConn::connect(server.port).await.expect("raw connect");
    raw.query("COPY big FROM STDIN").await.unwrap();
    assert_eq!(raw.read_msg().await.unwrap().tag, b'G');
    for part in data.chunks(256 << 10) {
        raw.send(b'd', part).await.unwrap();
    }
    // Let the server parse what it was sent, then vanish without CopyDone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(raw);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count(&c, "big").await, 0, "half a COPY became visible");
    server.restart();
    assert!(
        segment_files(&server).is_empty(),
        "{:?}",
        segment_files(&server)
    );
    let c = server.client().await;
    assert_eq!(count(&c, "big").await, 0);
    // The whole COPY, acknowledged, then kill -9.
    let n = within(
        120,
        "staged COPY",
        copy_bytes(&c, "COPY big FROM STDIN", &data, 128 << 10),
    )
    .await
    .expect("COPY");
    assert_eq!(n, N);
    assert!(
        !segment_files(&server).is_empty(),
        "the rows were staged to a segment"
    );
    server.restart();
    let c = server.client().await;
    let row = c
        .query_one(
            "SELECT count(*), sum(id), sum(v), count(DISTINCT tag) FROM big",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), N as i64);
    assert_eq!(row.get::<_, i64>(1), (N * (N - 1) / 2) as i64);
    let want: f64 = (0..N)
        .map(|i| {
            format!("{}.{:02}", i / 100, i % 100)
                .parse::<f64>()
                .unwrap()
        })
        .sum();
    assert!((row.get::<_, f64>(2) - want).abs() <= want * 1e-9, "sum(v)");
    assert_eq!(row.get::<_, i64>(3), 5);
}
