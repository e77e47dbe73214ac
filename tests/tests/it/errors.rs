//! Bad input over the wire: every error has its SQLSTATE, nothing is half
//! applied, and other clients keep being served.

use std::time::Duration;

use crate::harness::{Server, assert_sqlstate, count, sqlstate, within};
use crate::raw::RawConn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlstates_of_common_errors() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE er (id INT PRIMARY KEY, name TEXT NOT NULL, n INT)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO er VALUES (1, 'a', 1)")
        .await
        .unwrap();

    assert_sqlstate(
        c.batch_execute("INSERT INTO er VALUES (1, 'b', 2)").await,
        "23505",
    );
    assert_sqlstate(
        c.batch_execute("INSERT INTO er (id, n) VALUES (2, 2)")
            .await,
        "23502",
    );
    assert_sqlstate(
        c.batch_execute("INSERT INTO er VALUES (3, NULL, 3)").await,
        "23502",
    );
    assert_sqlstate(c.batch_execute("SELEC * FROM er").await, "42601");
    assert_sqlstate(c.batch_execute("SELECT * FROM er WHERE").await, "42601");
    assert_sqlstate(c.batch_execute("SELECT * FROM nowhere").await, "42P01");
    assert_sqlstate(
        c.batch_execute("INSERT INTO nowhere VALUES (1)").await,
        "42P01",
    );
    assert_sqlstate(c.batch_execute("SELECT missing_col FROM er").await, "42703");
    // the same through the extended protocol
    assert_sqlstate(c.query("SELECT * FROM nowhere", &[]).await, "42P01");
    assert_sqlstate(
        c.execute("INSERT INTO er VALUES (1, 'b', 2)", &[]).await,
        "23505",
    );

    // the duplicate-key message names the key or the constraint
    let e = c
        .batch_execute("INSERT INTO er VALUES (1, 'x', 0)")
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("db error");
    assert!(
        db.message().contains("duplicate key"),
        "message: {}",
        db.message()
    );

    // nothing of the failed statements was applied
    let rows = c.query("SELECT id, name, n FROM er", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_mismatches_are_errors_not_coercions() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE tm (i INT, t TEXT)")
        .await
        .unwrap();
    // a non-numeric string into an INT column
    let e = c
        .batch_execute("INSERT INTO tm VALUES ('abc', 'x')")
        .await
        .expect_err("text into int");
    let code = sqlstate(&e).unwrap_or_default();
    assert!(
        code.starts_with("22") || code.starts_with("42"),
        "type mismatch should be a data or syntax/access error class, got {code}: {e:?}"
    );
    // comparing int and boolean
    let e = c
        .batch_execute("SELECT * FROM tm WHERE i = true")
        .await
        .expect_err("int = bool");
    let code = sqlstate(&e).unwrap_or_default();
    assert!(code.starts_with("42"), "int = bool: {code} {e:?}");
    // a parameter of the wrong type in the extended protocol is refused by
    // tokio-postgres or by the server; either way nothing is inserted
    let r = c
        .execute("INSERT INTO tm VALUES ($1, $2)", &[&"seven", &"x"])
        .await;
    assert!(r.is_err(), "text parameter for INT column was accepted");
    // overflow of INT
    let e = c
        .batch_execute("INSERT INTO tm VALUES (99999999999, 'big')")
        .await
        .expect_err("int overflow");
    assert_eq!(sqlstate(&e).as_deref(), Some("22003"), "{e:?}");
    assert_eq!(count(&c, "tm").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_and_server_keeps_serving() {
    let server = Server::start();
    let other = server.client().await;
    other
        .batch_execute("CREATE TABLE os (x INT); INSERT INTO os VALUES (1)")
        .await
        .unwrap();

    // 1. a Query message that announces ~2 GiB: the server must not try to
    //    buffer it; it answers with an error and/or closes the connection.
    let mut raw = RawConn::connect(server.port).await.expect("raw connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hdr = vec![b'Q'];
    hdr.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
    hdr.extend_from_slice(b"SELECT ");
    raw.stream.write_all(&hdr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let closed = within(30, "server reaction to an oversized message", async {
        loop {
            match raw.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed, "connection should be closed");
    if let Some(&tag) = got.first() {
        assert_eq!(
            tag, b'E',
            "expected ErrorResponse before close, got {got:?}"
        );
    }

    // 2. a real 64 MiB query string: refused or answered, never a crash
    let mut raw = RawConn::connect(server.port).await.expect("raw connect 2");
    let mut body = b"SELECT '".to_vec();
    body.extend(std::iter::repeat_n(b'a', 64 << 20));
    body.extend_from_slice(b"' AS x\0");
    let _ = raw.send(b'Q', &body).await;
    let _ = within(60, "64 MiB query", raw.read_until_ready()).await;

    // the other connection and new connections are still served
    assert_eq!(count(&other, "os").await, 1);
    let fresh = server.client().await;
    assert_eq!(count(&fresh, "os").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_does_not_disturb_others() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute(
        "CREATE TABLE mq (n BIGINT); INSERT INTO mq SELECT value FROM generate_series(1, 300000)",
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let mut raw = RawConn::connect(server.port).await.expect("raw connect");
        // a query with a large result; read a little of it, then vanish
        raw.query("SELECT a.n, b.n FROM mq a CROSS JOIN (SELECT n FROM mq LIMIT 50) b")
            .await
            .unwrap();
        let first = raw.read_msg().await.expect("first message");
        assert!(
            matches!(first.tag, b'T' | b'D' | b'E'),
            "unexpected {first:?}"
        );
        drop(raw);
        // meanwhile another client is served promptly
        let n: i64 = within(
            30,
            "query while a client vanished",
            c.query_one("SELECT count(*) FROM mq", &[]),
        )
        .await
        .unwrap()
        .get(0);
        assert_eq!(n, 300_000);
    }
    // the server is still alive and healthy
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = server.client().await;
    assert_eq!(count(&fresh, "mq").await, 300_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packet_does_not_kill_server() {
    let server = Server::start();
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let _ = s.write_all(&[0xff; 1024]).await;
    }
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        // a startup packet length of 2 GiB
        let _ = s.write_all(&0x7fff_ffffu32.to_be_bytes()).await;
        let _ = s.write_all(&196608u32.to_be_bytes()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = server.client().await;
    assert_eq!(
        crate::harness::simple_col(&c, "SELECT 1").await,
        vec![Some("1".to_string())]
    );
}
