//! Transactions over the wire: visibility between connections, rollback,
//! failed blocks (25P02) and the ReadyForQuery status byte.

use crate::harness::{Server, assert_sqlstate, count};
use crate::raw::RawConn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_is_visible_to_other_connections_rollback_is_not() {
    let server = Server::start();
    let mut a = server.client().await;
    let b = server.client().await;
    a.batch_execute("CREATE TABLE tx (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();

    let t = a.transaction().await.unwrap();
    t.execute("INSERT INTO tx VALUES (1, 'one'), (2, 'two')", &[])
        .await
        .unwrap();
    t.execute("UPDATE tx SET v = 'uno' WHERE id = 1", &[])
        .await
        .unwrap();
    let own: i64 = t
        .query_one("SELECT count(*) FROM tx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 2, "own uncommitted writes are visible");
    assert_eq!(
        count(&b, "tx").await,
        0,
        "uncommitted writes leaked to another connection"
    );
    t.commit().await.expect("commit");
    assert_eq!(count(&b, "tx").await, 2);
    let v: String = b
        .query_one("SELECT v FROM tx WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "uno");

    let t = a.transaction().await.unwrap();
    t.execute("INSERT INTO tx VALUES (3, 'three')", &[])
        .await
        .unwrap();
    t.execute("DELETE FROM tx WHERE id = 1", &[]).await.unwrap();
    t.rollback().await.expect("rollback");
    assert_eq!(count(&b, "tx").await, 2);
    assert_eq!(count(&a, "tx").await, 2);
    let ids: Vec<i32> = b
        .query("SELECT id FROM tx ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2]);

    // a dropped Transaction (client-side) rolls back too
    {
        let t = a.transaction().await.unwrap();
        t.execute("INSERT INTO tx VALUES (4, 'four')", &[])
            .await
            .unwrap();
    }
    assert_eq!(count(&b, "tx").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statement_in_block_requires_rollback() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE fb (id INT PRIMARY KEY)")
        .await
        .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.execute("INSERT INTO fb VALUES (1)", &[]).await.unwrap();
    assert_sqlstate(c.execute("INSERT INTO fb VALUES (1)", &[]).await, "23505");
    // everything but ROLLBACK is refused, in both protocols
    assert_sqlstate(c.simple_query("SELECT 1").await, "25P02");
    assert_sqlstate(c.query("SELECT count(*) FROM fb", &[]).await, "25P02");
    assert_sqlstate(c.execute("INSERT INTO fb VALUES (2)", &[]).await, "25P02");
    c.batch_execute("ROLLBACK")
        .await
        .expect("rollback accepted");
    assert_eq!(
        count(&c, "fb").await,
        0,
        "the block's first insert must be gone"
    );
    // and the connection is back to normal
    c.execute("INSERT INTO fb VALUES (5)", &[]).await.unwrap();
    assert_eq!(count(&c, "fb").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_for_query_reports_transaction_status() {
    let server = Server::start();
    let mut raw = RawConn::connect(server.port).await.expect("raw connect");
    assert_eq!(
        raw.simple("CREATE TABLE rs (x INT)").await.unwrap(),
        (b'I', None)
    );
    assert_eq!(raw.simple("BEGIN").await.unwrap(), (b'T', None));
    assert_eq!(
        raw.simple("INSERT INTO rs VALUES (1)").await.unwrap(),
        (b'T', None)
    );
    let (status, err) = raw.simple("SELECT * FROM nope").await.unwrap();
    assert_eq!((status, err.as_deref()), (b'E', Some("42P01")));
    let (status, err) = raw.simple("SELECT 1").await.unwrap();
    assert_eq!((status, err.as_deref()), (b'E', Some("25P02")));
    assert_eq!(raw.simple("ROLLBACK").await.unwrap(), (b'I', None));
    // an error outside a block leaves the connection idle
    let (status, err) = raw.simple("SELEC 1").await.unwrap();
    assert_eq!((status, err.as_deref()), (b'I', Some("42601")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_query_string_is_one_implicit_transaction() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE imp (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // the 2nd statement fails, so the 1st (same query string) is rolled back too
    let r = c
        .batch_execute(
            "INSERT INTO imp VALUES (1); INSERT INTO imp VALUES (1); INSERT INTO imp VALUES (2)",
        )
        .await;
    assert_sqlstate(r, "23505");
    assert_eq!(count(&c, "imp").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_inside_a_block_rolls_back() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE dc (x INT)").await.unwrap();
    {
        let mut raw = RawConn::connect(server.port).await.unwrap();
        assert_eq!(raw.simple("BEGIN").await.unwrap(), (b'T', None));
        assert_eq!(
            raw.simple("INSERT INTO dc VALUES (1)").await.unwrap(),
            (b'T', None)
        );
    } // socket closed without COMMIT
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(count(&c, "dc").await, 0);
}
