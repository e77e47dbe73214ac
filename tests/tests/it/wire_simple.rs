//! Simple query protocol, session isolation and server lifecycle.

use std::time::Duration;

use tokio_postgres::SimpleQueryMessage as M;

use crate::harness::{Server, count, simple_col, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_roundtrip() {
    let server = Server::start();
    let c = server.client().await;
    let msgs = within(
        60,
        "simple batch",
        c.simple_query(
            "CREATE TABLE people (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION);
             INSERT INTO people VALUES (1, 'ada', 9.5), (2, 'alan', NULL), (3, '', 1);
             SELECT id, name, score FROM people ORDER BY id",
        ),
    )
    .await
    .expect("batch");
    let completes: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            M::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    // CREATE TABLE (0), INSERT 0 3 (3), SELECT 3 (3)
    assert_eq!(completes, vec![0, 3, 3], "command completes: {msgs:?}");
    let rows: Vec<(String, Option<String>, Option<String>)> = msgs
        .iter()
        .filter_map(|m| match m {
            M::Row(r) => Some((
                r.get(0).unwrap().to_string(),
                r.get(1).map(str::to_string),
                r.get(2).map(str::to_string),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("1".into(), Some("ada".into()), Some("9.5".into())),
            ("2".into(), Some("alan".into()), None),
            ("3".into(), Some("".into()), Some("1".into())),
        ]
    );
    // column names come in RowDescription
    let names: Vec<String> = msgs
        .iter()
        .find_map(|m| match m {
            M::RowDescription(cols) => Some(cols.iter().map(|c| c.name().to_string()).collect()),
            _ => None,
        })
        .expect("row description");
    assert_eq!(names, ["id", "name", "score"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_and_comments() {
    let server = Server::start();
    let c = server.client().await;
    let msgs = c.simple_query("").await.expect("empty query");
    assert!(
        msgs.iter().all(|m| !matches!(m, M::Row(_))),
        "empty query returned rows: {msgs:?}"
    );
    let v = simple_col(&c, "-- a comment\nSELECT 41 + 1 /* inline */").await;
    assert_eq!(v, vec![Some("42".to_string())]);
    c.simple_query(";;").await.expect("only semicolons");
    assert_eq!(
        simple_col(&c, "SELECT 'still ok'").await,
        vec![Some("still ok".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_is_per_connection() {
    let server = Server::start();
    let a = server.client().await;
    let b = server.client().await;
    a.batch_execute(
        "CREATE SCHEMA s1; CREATE TABLE s1.t (v TEXT); INSERT INTO s1.t VALUES ('from s1');
         CREATE TABLE public.t (v TEXT); INSERT INTO public.t VALUES ('from public')",
    )
    .await
    .expect("setup");
    a.batch_execute("SET search_path TO s1").await.expect("SET");
    assert_eq!(
        simple_col(&a, "SELECT v FROM t").await,
        vec![Some("from s1".into())]
    );
    assert_eq!(
        simple_col(&b, "SELECT v FROM t").await,
        vec![Some("from public".into())]
    );
    assert_eq!(
        simple_col(&a, "SHOW search_path").await,
        vec![Some("s1".into())]
    );
    assert_eq!(
        simple_col(&b, "SHOW search_path").await,
        vec![Some("public".into())]
    );
    // MonetDB style on the other connection
    b.batch_execute("SET SCHEMA \"s1\"")
        .await
        .expect("SET SCHEMA");
    assert_eq!(
        simple_col(&b, "SELECT v FROM t").await,
        vec![Some("from s1".into())]
    );
    // a new connection starts from the default again
    let c = server.client().await;
    assert_eq!(
        simple_col(&c, "SELECT v FROM t").await,
        vec![Some("from public".into())]
    );
    // extended protocol resolves names through the same search_path
    let row = a.query_one("SELECT v FROM t", &[]).await.expect("extended");
    assert_eq!(row.get::<_, String>(0), "from s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_from_startup_options() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE SCHEMA opt; CREATE TABLE opt.t (x INT); INSERT INTO opt.t VALUES (5)")
        .await
        .expect("setup");
    // libpq's `options=-csearch_path=opt` arrives in the startup packet
    let with_opt = crate::harness::connect(&format!(
        "{} options='-c search_path=opt'",
        server.conn_str()
    ))
    .await
    .expect("connect with options");
    assert_eq!(
        simple_col(&with_opt, "SELECT x FROM t").await,
        vec![Some("5".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_visible_to_every_connection_at_once() {
    let server = Server::start();
    let w = server.client().await;
    let r = server.client().await;
    w.batch_execute("CREATE TABLE ev (k BIGINT PRIMARY KEY)")
        .await
        .unwrap();
    for k in 0..200i64 {
        w.execute("INSERT INTO ev VALUES ($1)", &[&k])
            .await
            .expect("insert");
        // no polling: the very next read on another connection sees it
        assert_eq!(
            count(&r, "ev").await,
            k + 1,
            "after acknowledged insert {k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections() {
    let server = Server::start();
    let setup = server.client().await;
    setup
        .batch_execute("CREATE TABLE cc (c INT, i INT)")
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..16i32 {
        let conn_str = server.conn_str();
        tasks.push(tokio::spawn(async move {
            let client = crate::harness::connect(&conn_str).await.expect("connect");
            for i in 0..25i32 {
                client
                    .execute("INSERT INTO cc VALUES ($1, $2)", &[&c, &i])
                    .await
                    .expect("insert");
            }
        }));
    }
    for t in tasks {
        within(120, "client task", t).await.expect("task panicked");
    }
    assert_eq!(count(&setup, "cc").await, 16 * 25);
    let distinct = setup
        .query_one("SELECT count(DISTINCT c) FROM cc", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(distinct, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_gracefully_and_data_survives() {
    let mut server = Server::start();
    {
        let c = server.client().await;
        c.batch_execute("CREATE TABLE keep (x INT); INSERT INTO keep VALUES (1), (2), (3)")
            .await
            .expect("setup");
    }
    let status = server
        .terminate(Duration::from_secs(30))
        .expect("provdb did not exit within 30 s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status}");
    server.restart();
    let c = server.client().await;
    assert_eq!(count(&c, "keep").await, 3);
}

#[test]
fn help_documents_every_serve_option() {
    let bin = crate::harness::provdb_bin();
    let out = std::process::Command::new(&bin)
        .args(["serve", "--help"])
        .output()
        .expect("run provdb serve --help");
    assert!(out.status.success(), "provdb serve --help failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--data-dir",
        "--listen",
        "--user",
        "--password",
        "--no-fsync",
        "--flush-threshold-mb",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(
            text.contains(opt),
            "`provdb serve --help` does not mention {opt}:\n{text}"
        );
    }
    let top = std::process::Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap();
    assert!(top.status.success());
    assert!(String::from_utf8_lossy(&top.stdout).contains("serve"));
}
