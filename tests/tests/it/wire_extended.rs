//! Extended query protocol: parameters, prepared statements, binary results,
//! portals with row limits.

use futures::TryStreamExt;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::types::{ToSql, Type};

use crate::harness::{Server, count, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_of_several_types_roundtrip_in_binary() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute(
        "CREATE TABLE p (i INT PRIMARY KEY, b BIGINT, s SMALLINT, r REAL, d DOUBLE PRECISION, t TEXT, f BOOLEAN)",
    )
    .await
    .expect("create");
    let n = c
        .execute(
            "INSERT INTO p VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &7i32,
                &(1i64 << 40),
                &(-3i16),
                &1.25f32,
                &-2.5e10f64,
                &"héllo 'q'",
                &true,
            ],
        )
        .await
        .expect("insert with parameters");
    assert_eq!(n, 1);
    let none_i64: Option<i64> = None;
    let none_text: Option<&str> = None;
    c.execute(
        "INSERT INTO p (i, b, t, f) VALUES ($1, $2, $3, $4)",
        &[&8i32, &none_i64, &none_text, &false],
    )
    .await
    .expect("insert NULL parameters");

    // tokio-postgres asks for binary results: the typed gets check the encoding
    let row = c
        .query_one("SELECT i, b, s, r, d, t, f FROM p WHERE i = $1", &[&7i32])
        .await
        .expect("select by parameter");
    assert_eq!(row.get::<_, i32>(0), 7);
    assert_eq!(row.get::<_, i64>(1), 1i64 << 40);
    assert_eq!(row.get::<_, i16>(2), -3);
    assert_eq!(row.get::<_, f32>(3), 1.25);
    assert_eq!(row.get::<_, f64>(4), -2.5e10);
    assert_eq!(row.get::<_, String>(5), "héllo 'q'");
    assert!(row.get::<_, bool>(6));

    let row = c
        .query_one("SELECT b, t, f FROM p WHERE i = $1", &[&8i32])
        .await
        .expect("select NULLs");
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    assert_eq!(row.get::<_, Option<String>>(1), None);
    assert!(!row.get::<_, bool>(2));

    // parameters in expressions and comparisons of every type
    let rows = c
        .query(
            "SELECT i FROM p WHERE b > $1 AND t LIKE $2 AND f = $3 AND d < $4",
            &[&0i64, &"h%", &true, &0.0f64],
        )
        .await
        .expect("filter by parameters");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_metadata_and_reuse() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE kv (k INT PRIMARY KEY, v TEXT NOT NULL)")
        .await
        .unwrap();
    let ins = c
        .prepare("INSERT INTO kv VALUES ($1, $2)")
        .await
        .expect("prepare insert");
    assert_eq!(
        ins.params(),
        &[Type::INT4, Type::TEXT],
        "inferred parameter types"
    );
    for k in 0..500i32 {
        let v = format!("v{k}");
        assert_eq!(c.execute(&ins, &[&k, &v]).await.expect("reuse insert"), 1);
    }
    let sel = c
        .prepare("SELECT k, v FROM kv WHERE k = $1")
        .await
        .expect("prepare select");
    let cols: Vec<(&str, Type)> = sel
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_().clone()))
        .collect();
    assert_eq!(cols, vec![("k", Type::INT4), ("v", Type::TEXT)]);
    // Repeated result names are allowed and reported as written, in the
    // prepared statement's description and in a simple query's.
    let twice = c
        .prepare("SELECT v, v, k AS v, upper(v) FROM kv WHERE k = $1")
        .await
        .expect("prepare repeated names");
    let names: Vec<&str> = twice.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["v", "v", "v", "upper"]);
    // Unaliased expressions are named as PostgreSQL names them, prepared
    // or not (DataFusion would say `count(*)`, `kv.k + Int64(1)`).
    let exprs = "SELECT count(*), max(k), k + 1, CAST(k AS TEXT), min(k) AS m \
                 FROM kv WHERE k = $1 GROUP BY k";
    let named = c.prepare(exprs).await.expect("prepare expressions");
    let names: Vec<&str> = named.columns().iter().map(|c| c.name()).collect();
    let want = vec!["count", "max", "?column?", "k", "m"];
    assert_eq!(names, want);
    let row = c
        .query_one(&named, &[&9i32])
        .await
        .expect("named expressions");
    assert_eq!(row.get::<_, String>("k"), "9");
    let simple = c
        .simple_query(&exprs.replace("$1", "9"))
        .await
        .expect("simple expressions");
    let SimpleQueryMessage::RowDescription(desc) = &simple[0] else {
        panic!("expected a row description first: {simple:?}");
    };
    let names: Vec<&str> = desc.iter().map(|c| c.name()).collect();
    assert_eq!(names, want);
    for _ in 0..3 {
        let row = c.query_one(&twice, &[&7i32]).await.expect("repeated names");
        assert_eq!(row.get::<_, String>(1), "v7");
        assert_eq!(row.get::<_, i32>(2), 7);
    }
    let simple = c
        .simple_query("SELECT v, v FROM kv WHERE k = 8")
        .await
        .expect("simple repeated names");
    let SimpleQueryMessage::RowDescription(desc) = &simple[0] else {
        panic!("expected a row description first: {simple:?}");
    };
    let names: Vec<&str> = desc.iter().map(|c| c.name()).collect();
    assert_eq!(names, vec!["v", "v"]);
    for k in (0..500i32).step_by(7) {
        let row = c.query_one(&sel, &[&k]).await.expect("reuse select");
        assert_eq!(row.get::<_, String>(1), format!("v{k}"));
    }
    // explicitly typed parameters
    let typed = c
        .prepare_typed("SELECT count(*) FROM kv WHERE k < $1", &[Type::INT8])
        .await
        .expect("prepare_typed");
    let n: i64 = c.query_one(&typed, &[&100i64]).await.expect("typed").get(0);
    assert_eq!(n, 100);
    // unnamed statements with declared types
    let rows = c
        .query_typed("SELECT v FROM kv WHERE k = $1", &[(&3i32, Type::INT4)])
        .await
        .expect("query_typed");
    assert_eq!(rows[0].get::<_, String>(0), "v3");
    // statements that return nothing report no columns
    let del = c
        .prepare("DELETE FROM kv WHERE k >= $1")
        .await
        .expect("prepare delete");
    assert!(del.columns().is_empty());
    assert_eq!(c.execute(&del, &[&250i32]).await.expect("delete"), 250);
    assert_eq!(count(&c, "kv").await, 250);
    // errors from the one-row INSERT path carry their SQLSTATE
    let dup = c.execute(&ins, &[&3i32, &"again"]).await.unwrap_err();
    assert_eq!(dup.code().map(|c| c.code()), Some("23505"), "{dup}");
    let none: Option<&str> = None;
    let null = c.execute(&ins, &[&900i32, &none]).await.unwrap_err();
    assert_eq!(null.code().map(|c| c.code()), Some("23502"), "{null}");
    // DDL after Parse: the statements are planned again and keep working;
    // one whose result columns changed is refused as PostgreSQL does
    let star = c.prepare("SELECT * FROM kv WHERE k = $1").await.unwrap();
    c.batch_execute("ALTER TABLE kv ADD COLUMN extra INT")
        .await
        .unwrap();
    assert_eq!(
        c.execute(&ins, &[&1000i32, &"late"])
            .await
            .expect("insert after DDL"),
        1
    );
    let row = c
        .query_one(&sel, &[&1000i32])
        .await
        .expect("select after DDL");
    assert_eq!(row.get::<_, String>(1), "late");
    let changed = c.query(&star, &[&3i32]).await.unwrap_err();
    assert_eq!(changed.code().map(|c| c.code()), Some("0A000"), "{changed}");
    assert_eq!(count(&c, "kv").await, 251);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_row_limits() {
    let server = Server::start();
    let mut c = server.client().await;
    c.batch_execute(
        "CREATE TABLE big (n BIGINT); INSERT INTO big SELECT value FROM generate_series(1, 1000)",
    )
    .await
    .expect("setup");
    let tx = c.transaction().await.expect("begin");
    let portal = tx
        .bind("SELECT n FROM big WHERE n > $1 ORDER BY n", &[&100i64])
        .await
        .expect("bind portal");
    let mut seen = Vec::new();
    let mut chunks = 0;
    loop {
        let rows = within(30, "query_portal", tx.query_portal(&portal, 64))
            .await
            .expect("execute portal");
        assert!(
            rows.len() <= 64,
            "portal returned {} rows for a limit of 64",
            rows.len()
        );
        chunks += 1;
        let done = rows.len() < 64;
        seen.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        if done || chunks > 100 {
            break;
        }
    }
    assert_eq!(seen, (101..=1000).collect::<Vec<i64>>());
    assert_eq!(chunks, 900 / 64 + 1);
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_raw_streams_a_large_result() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute(
        "CREATE TABLE s (n BIGINT, t TEXT);
         INSERT INTO s SELECT value, 'row ' || CAST(value AS TEXT) FROM generate_series(1, 200000)",
    )
    .await
    .expect("setup");
    let params: Vec<&(dyn ToSql + Sync)> = vec![&0i64];
    let stream = c
        .query_raw("SELECT n, t FROM s WHERE n > $1", params)
        .await
        .expect("query_raw");
    let (n, sum) = within(
        120,
        "stream",
        stream.try_fold((0u64, 0i64), |(n, sum), row| async move {
            let v: i64 = row.get(0);
            let t: &str = row.get(1);
            assert_eq!(t, format!("row {v}"));
            Ok((n + 1, sum + v))
        }),
    )
    .await
    .expect("stream rows");
    assert_eq!(n, 200_000);
    assert_eq!(sum, 200_000 * 200_001 / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_on_one_connection() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE pl (x INT)").await.unwrap();
    let stmt = c.prepare("INSERT INTO pl VALUES ($1)").await.unwrap();
    // tokio-postgres pipelines concurrent futures on one connection
    let futs: Vec<_> = (0..100i32)
        .map(|i| {
            let c = &c;
            let stmt = &stmt;
            async move { c.execute(stmt, &[&i]).await }
        })
        .collect();
    let results = within(60, "pipelined inserts", futures::future::join_all(futs)).await;
    for r in results {
        assert_eq!(r.expect("pipelined insert"), 1);
    }
    let rows: Vec<i32> = c
        .query("SELECT x FROM pl ORDER BY x", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, (0..100).collect::<Vec<i32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_extended_protocol_keep_connection_usable() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE ee (id INT PRIMARY KEY)")
        .await
        .unwrap();
    let e = c
        .prepare("SELECT * FROM no_such")
        .await
        .expect_err("prepare must fail");
    assert_eq!(
        crate::harness::sqlstate(&e).as_deref(),
        Some("42P01"),
        "{e:?}"
    );
    let e = c.prepare("SELEKT 1").await.expect_err("prepare must fail");
    assert_eq!(
        crate::harness::sqlstate(&e).as_deref(),
        Some("42601"),
        "{e:?}"
    );
    let ins = c.prepare("INSERT INTO ee VALUES ($1)").await.unwrap();
    c.execute(&ins, &[&1i32]).await.unwrap();
    let e = c.execute(&ins, &[&1i32]).await.expect_err("duplicate");
    assert_eq!(
        crate::harness::sqlstate(&e).as_deref(),
        Some("23505"),
        "{e:?}"
    );
    // the prepared statement and the connection still work
    c.execute(&ins, &[&2i32]).await.expect("insert after error");
    assert_eq!(count(&c, "ee").await, 2);
}

/// A float bound to an integer column is assigned as PostgreSQL assigns
/// it: rounded to the nearest integer, ties to even (sql/src/
/// rounding_casts.rs). Each statement runs several times, so the prepared
/// fast paths (sql/src/direct.rs) are exercised too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn float_parameters_for_integer_columns_round_to_even() {
    let server = Server::start();
    let c = server.client().await;
    c.batch_execute("CREATE TABLE w (id INT, v INT)")
        .await
        .expect("create");
    let insert = c
        .prepare_typed("INSERT INTO w VALUES ($1, $2)", &[Type::INT4, Type::FLOAT8])
        .await
        .expect("prepare");
    let values = [7.5f64, 6.5, -2.5, 2.6, 0.4];
    for round in 0..3 {
        for (i, v) in values.iter().enumerate() {
            let id = (round * 10 + i) as i32;
            c.execute(&insert, &[&id, v]).await.expect("insert");
        }
    }
    let all: Vec<i32> = c
        .query("SELECT v FROM w ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let once = [8, 6, -2, 3, 0];
    assert_eq!(all, [once, once, once].concat(), "every execution rounds");
    // A parameter used only under an integer cast is rounded as well.
    let cast = c
        .prepare_typed(
            "SELECT CAST($1 AS INT), $2::bigint",
            &[Type::FLOAT8, Type::FLOAT8],
        )
        .await
        .expect("prepare casts");
    for _ in 0..3 {
        let row = c
            .query_one(&cast, &[&7.5f64, &2.5f64])
            .await
            .expect("casts");
        assert_eq!((row.get::<_, i32>(0), row.get::<_, i64>(1)), (8, 2));
    }
}
