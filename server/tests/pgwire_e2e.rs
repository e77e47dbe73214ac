//! End to end: a real server on an ephemeral port, driven by tokio-postgres.

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use provdb_server::{ServerConfig, run_server_with_listener};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

struct TestServer {
    port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(password: Option<&str>) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        password: password.map(str::to_string),
        shutdown_grace: Duration::from_secs(1),
        http_listen: None,
        ..ServerConfig::default()
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run_server_with_listener(listener, config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestServer {
        port,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

impl TestServer {
    async fn connect(&self, password: Option<&str>) -> Result<Client, tokio_postgres::Error> {
        let mut conf = format!(
            "host=127.0.0.1 port={} user=tester dbname=provdb",
            self.port
        );
        if let Some(pw) = password {
            conf.push_str(&format!(" password={pw}"));
        }
        let (client, conn) = tokio_postgres::connect(&conf, NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_extended_copy_and_errors() {
    let server = start(None).await;
    let client = server.connect(None).await.unwrap();

    client
        .batch_execute("CREATE TABLE t (id BIGINT, name TEXT)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        .await
        .unwrap();
    let msgs = client
        .simple_query("SELECT id, name FROM t ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows(&msgs),
        vec![
            vec![Some("1".into()), Some("a".into())],
            vec![Some("2".into()), Some("b".into())]
        ]
    );

    // Extended protocol, binary parameters and results.
    let r = client
        .query("SELECT name FROM t WHERE id = $1", &[&2i64])
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].get::<_, String>(0), "b");

    // Errors carry the SQLSTATE and the connection keeps working.
    let err = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"));
    let err = client
        .query("SELECT * FROM no_such_table", &[])
        .await
        .unwrap_err();
    assert!(err.code().is_some());
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );

    // COPY FROM STDIN.
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"3\tc\n4\t")).await.unwrap();
    sink.send(Bytes::from_static(b"d\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        4
    );

    // A bad COPY row fails the COPY and stores nothing.
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from_static(b"5\te\nnot_a_number\tf\n"))
        .await
        .unwrap();
    assert!(sink.finish().await.is_err());
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        4
    );

    // Transactions: status survives an error inside the block.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    let err = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("25P02"));
    client.batch_execute("ROLLBACK").await.unwrap();
    client.batch_execute("SELECT 1").await.unwrap();

    // Portal with a row limit (tokio-postgres query_raw streams via portals).
    let stmt = client
        .prepare("SELECT id FROM t ORDER BY id")
        .await
        .unwrap();
    let txn_rows = client.query(&stmt, &[]).await.unwrap();
    assert_eq!(txn_rows.len(), 4);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn scram_password_is_required_when_configured() {
    let server = start(Some("s3cret")).await;
    assert!(server.connect(None).await.is_err());
    assert!(server.connect(Some("wrong")).await.is_err());
    let client = server.connect(Some("s3cret")).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn client_vanishing_mid_copy_stores_nothing() {
    let server = start(None).await;
    let client = server.connect(None).await.unwrap();
    client
        .batch_execute("CREATE TABLE c (id BIGINT)")
        .await
        .unwrap();
    {
        let other = server.connect(None).await.unwrap();
        let sink = other.copy_in("COPY c FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(Bytes::from_static(b"1\n2\n")).await.unwrap();
        // Dropped without finish: the connection closes mid-COPY.
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client
            .query_one("SELECT count(*) FROM c", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    drop(client);
    server.stop().await;
}
