//! W3C PROV interoperability against the real binary: exports through HTTP,
//! SQL and the CLI read back by the `prov` package (tests/python/
//! prov_check.py), export -> import -> export round trips, documents written
//! by `prov` with every record type, yProv4ML runs of the three layouts
//! queried in SQL, and bad documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::dlprov::{post, post_raw, spec};
use crate::harness::{Server, count, provdb_bin, simple_col};

const RUN: &str = include_str!("../../fixtures/dlprov/alexnet-run.jsonl");
const EXEC: &str = "alexnet-2025-07-10 21:00:00.123456";

/// Run tests/python/prov_check.py; panics with its output on failure.
fn prov_check(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/prov_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("run python3 (scripts/install-test-deps.sh installs it and the prov package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "prov_check.py {args:?} failed:\n{text}"
    );
    text
}

fn provdb(args: &[&str]) -> Output {
    Command::new(provdb_bin())
        .args(args)
        .output()
        .expect("run provdb")
}

fn url(server: &Server) -> String {
    server.http_url().trim_end_matches('/').to_string()
}

async fn reference_server() -> (Server, reqwest::Client) {
    let server = Server::start();
    let http = reqwest::Client::new();
    let base = url(&server);
    assert_eq!(
        post(&http, &base, "//pde/dataflow/json", &spec()).await.0,
        200
    );
    for line in RUN.lines().filter(|l| !l.trim().is_empty()) {
        let (status, body) = post_raw(&http, &base, "//pde/task/json", line.to_string()).await;
        assert_eq!(status, 200, "{body}");
    }
    (server, http)
}

async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn exports_are_valid_prov_in_every_interface() {
    let (server, http) = reference_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = url(&server);
    let exec_q = "execution=alexnet-2025-07-10%2021%3A00%3A00.123456";

    let (st, provn) = get(&http, &format!("{base}/prov/export?{exec_q}")).await;
    assert_eq!(st, 200, "{provn}");
    let (st, json) = get(&http, &format!("{base}/prov/export?{exec_q}&format=json")).await;
    assert_eq!(st, 200, "{json}");
    let pn = write(dir.path(), "run.provn", &provn);
    let pj = write(dir.path(), "run.json", &json);
    // prov reads both without a warning, and both hold the same records.
    let out = prov_check(&["validate", s(&pj), s(&pn)]);
    assert!(out.contains("documents agree"), "{out}");
    assert!(
        provn.contains("wasDerivedFrom(alexnet.ofilter:1, alexnet.oloaddata:1"),
        "{provn}"
    );

    // The SQL function returns the same document.
    let client = server.client().await;
    let row = client
        .query_one(
            "SELECT document FROM prov_export('execution', $1, format => 'json')",
            &[&EXEC],
        )
        .await
        .expect("prov_export");
    assert_eq!(row.get::<_, String>(0), json);
    // The CLI, talking to the server, writes the same bytes; a second export
    // is identical (stable ids).
    let out_file = dir.path().join("cli.provn");
    let o = provdb(&[
        "export",
        "--execution",
        EXEC,
        "--url",
        &base,
        "-o",
        s(&out_file),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&out_file).expect("read"), provn);

    // Lineage closure and dataflow scopes.
    let (st, up) = get(
        &http,
        &format!("{base}/prov/export?node=alexnet.otrainedmodel%3A1&direction=upstream&depth=2&format=json"),
    )
    .await;
    assert_eq!(st, 200, "{up}");
    let pu = write(dir.path(), "up.json", &up);
    prov_check(&["validate", s(&pu)]);
    let df = simple_col(
        &client,
        "SELECT length(document) FROM prov_export('dataflow', 'alexnet')",
    )
    .await;
    assert_eq!(
        df,
        vec![Some(provn.chars().count().to_string())],
        "one execution: same document"
    );
    let dot = simple_col(
        &client,
        "SELECT document FROM prov_export('all', NULL, 'dot')",
    )
    .await;
    assert!(
        dot[0]
            .as_deref()
            .is_some_and(|d| d.starts_with("digraph prov {")),
        "{dot:?}"
    );

    // SVG through Graphviz, or a message saying to install it.
    let (st, svg) = get(&http, &format!("{base}/prov/export?{exec_q}&format=svg")).await;
    let has_dot = Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_dot {
        assert_eq!(st, 200, "{svg}");
        assert!(svg.contains("<svg"), "{svg}");
    } else {
        assert_eq!(st, 422, "{svg}");
        assert!(svg.contains("apt-get install graphviz"), "{svg}");
    }

    // Bad requests name the problem.
    let (st, e) = get(&http, &format!("{base}/prov/export?execution=nope")).await;
    assert_eq!(st, 404, "{e}");
    assert!(e.contains("no execution has tag 'nope'"), "{e}");
    let (st, e) = get(&http, &format!("{base}/prov/export?{exec_q}&format=pdf")).await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = get(&http, &format!("{base}/prov/export")).await;
    assert_eq!(st, 400, "{e}");
    let err = client
        .simple_query("SELECT * FROM prov_export('galaxy', 'x')")
        .await
        .expect_err("bad scope");
    assert!(format!("{err:?}").contains("scope must be"), "{err:?}");
    let o = provdb(&["export", "--execution", "nope", "--url", &base]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no execution has tag 'nope'"));
}

#[tokio::test]
async fn export_import_export_keeps_the_graph_and_bad_documents_store_nothing() {
    let (a, http) = reference_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, first) = get(
        &http,
        &format!("{}/prov/export?all=true&format=json", url(&a)),
    )
    .await;
    let p1 = write(dir.path(), "a.json", &first);

    // Into an empty database with the CLI, then out again.
    let b = Server::start();
    let o = provdb(&["import", s(&p1), "--url", &url(&b)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("relations"));
    let (_, second) = get(
        &http,
        &format!("{}/prov/export?all=true&format=json", url(&b)),
    )
    .await;
    let p2 = write(dir.path(), "b.json", &second);
    prov_check(&["covers", s(&p1), s(&p2)]);
    prov_check(&["covers", s(&p2), s(&p1)]);

    // Re-importing changes nothing.
    let client = b.client().await;
    let before = (
        count(&client, "prov.entity").await,
        count(&client, "prov.relation").await,
    );
    let (st, body) = post_raw(&http, &url(&b), "/prov/import", first.clone()).await;
    assert_eq!(st, 200, "{body}");
    let after = (
        count(&client, "prov.entity").await,
        count(&client, "prov.relation").await,
    );
    assert_eq!(before, after);

    // A document the prov package wrote, with every record type and a bundle.
    let every = dir.path().join("every.json");
    prov_check(&["every-type", s(&every)]);
    let text = std::fs::read_to_string(&every).expect("read");
    let (st, report) = post_raw(&http, &url(&b), "/prov/import?name=every.json", text).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["bundles"], 1, "{report}");
    let (_, all) = get(
        &http,
        &format!("{}/prov/export?all=true&format=json", url(&b)),
    )
    .await;
    let p3 = write(dir.path(), "all.json", &all);
    prov_check(&["covers", s(&every), s(&p3)]);
    let ex = simple_col(
        &client,
        "SELECT count(*) FROM lineage('ex:model', direction => 'upstream')",
    )
    .await;
    // ex:model <- train, data, alice, alt; train <- data (used, started,
    // ended), alice; alice <- lab (actedOnBehalfOf).
    assert_eq!(
        ex,
        vec![Some("6".to_string())],
        "imported records are in the lineage graph"
    );

    // Bad documents: a 4xx naming the problem, nothing stored.
    let stored = (
        count(&client, "prov.entity").await,
        count(&client, "prov.relation").await,
    );
    let cases = [
        ("{\"entity\": {", 400, "invalid PROV-JSON"),
        (
            "{\"entity\": {\"a\": {}}, \"wasFrobbedBy\": {}}",
            400,
            "unknown PROV-JSON record type",
        ),
        (
            "{\"entity\": {\"a\": {}}, \"used\": {\"_:u\": {\"prov:activity\": \"nowhere\", \"prov:entity\": \"a\"}}}",
            422,
            "dangling",
        ),
        ("{\"entity\": {\"a\": 5}}", 400, "expected an object"),
    ];
    for (doc, status, msg) in cases {
        let (st, body) = post_raw(&http, &url(&b), "/prov/import", doc.to_string()).await;
        assert_eq!(st, status, "{doc}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(msg)),
            "{doc}: {body}"
        );
    }
    let again = (
        count(&client, "prov.entity").await,
        count(&client, "prov.relation").await,
    );
    assert_eq!(stored, again);
}

#[tokio::test]
async fn yprov_runs_of_every_layout_are_queryable_in_sql() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    prov_check(&["yprov", s(dir.path())]);
    let base = url(&server);
    let c_dir = dir.path().join("c/prov/exp_0");
    let b_doc = dir
        .path()
        .join("b/examples/prov/exp_0/prov_exp_b_GR0_0.json");
    let a_doc = dir.path().join("a/prov_exp_a.json");
    for doc in [&c_dir, &b_doc, &a_doc] {
        let o = provdb(&["import", s(doc), "--url", &base]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(stdout.contains("yProv4ML run"), "{stdout}");
    }
    let client = server.client().await;
    let layouts = simple_col(
        &client,
        "SELECT layout || ':' || experiment FROM ml.run ORDER BY layout",
    )
    .await;
    assert_eq!(
        layouts,
        vec![
            None,
            Some("B:exp_b_GR0_0".into()),
            Some("C:exp_GR0_0".into())
        ],
        "layout A names no experiment: {layouts:?}"
    );
    let runs = simple_col(&client, "SELECT layout FROM ml.run ORDER BY layout").await;
    assert_eq!(
        runs,
        vec![Some("A".into()), Some("B".into()), Some("C".into())]
    );
    let series = simple_col(
        &client,
        "SELECT name || ' ' || count(*) || ' ' || round(min(value), 4) FROM ml.metric GROUP BY name ORDER BY name",
    )
    .await;
    assert_eq!(
        series,
        vec![
            Some("acc 2 0.5".into()),
            Some("loss 100 0.01".into()),
            Some("val_loss 50 0.0196".into())
        ]
    );
    let params = simple_col(
        &client,
        "SELECT name || '=' || value FROM ml.param ORDER BY name",
    )
    .await;
    assert_eq!(
        params,
        vec![
            Some("batch_size=64".into()),
            Some("lr=0.001".into()),
            Some("lr=0.01".into())
        ]
    );
    // The loss curve of one run joins its run row.
    let curve = simple_col(
        &client,
        "SELECT m.epoch || ':' || round(avg(m.value), 3) FROM ml.metric m JOIN ml.run r ON m.run = r.id \
         WHERE r.experiment = 'exp_GR0_0' AND m.name = 'loss' GROUP BY m.epoch ORDER BY m.epoch LIMIT 2",
    )
    .await;
    assert_eq!(curve, vec![Some("0:0.293".into()), Some("1:0.067".into())]);

    // Re-import: nothing new. A missing side file: an error naming it.
    let o = provdb(&["import", s(&c_dir), "--url", &base]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("(0 new points)"));
    assert_eq!(count(&client, "ml.metric").await, 152);
    std::fs::remove_file(c_dir.join("metrics_GR0/loss_training_None_GR0.csv")).expect("rm");
    let o = provdb(&["import", s(&c_dir), "--url", &base]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("side file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A yProv4ML layout-A document with `metrics` series of `points` each.
fn metric_document(metrics: usize, points: usize) -> String {
    let list = |f: &dyn Fn(usize) -> String| {
        let items: Vec<String> = (0..points).map(f).collect();
        format!("[{}]", items.join(", "))
    };
    let entities: Vec<String> = (0..metrics)
        .map(|m| {
            format!(
                "\"m{m}_Context.TRAINING\": {{\"prov-ml:type\": \"Metric\", \"prov-ml:name\": \"m{m}\", \
                 \"prov-ml:context\": \"Context.TRAINING\", \"prov-ml:metric_epoch_list\": \"{}\", \
                 \"prov-ml:metric_value_list\": \"{}\", \"prov-ml:metric_timestamp_list\": \"{}\"}}",
                list(&|i| (i / 100).to_string()),
                list(&|i| format!("np.float64({})", 1.0 / (i + 1) as f64)),
                list(&|i| (1_795_286_445_291u64 + i as u64 * 37).to_string()),
            )
        })
        .collect();
    format!(
        "{{\"prefix\": {{\"prov-ml\": \"prov-ml\", \"default\": \"big.example.org\"}}, \
         \"entity\": {{{}}}, \"activity\": {{\"big_GR0_execution\": {{\"prov-ml:type\": \"LearningExecution\"}}}}}}",
        entities.join(", ")
    )
}

/// Start POSTing `doc` to /prov/import over a raw connection and send
/// only the first half of it; the connection stays open while held.
fn half_an_upload(http_port: u16, doc: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connect");
    write!(
        tcp,
        "POST /prov/import HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        doc.len()
    )
    .expect("headers");
    tcp.write_all(&doc.as_bytes()[..doc.len() / 2])
        .expect("half a body");
    tcp
}

#[tokio::test]
async fn import_bodies_stream_past_the_body_limit_and_a_broken_upload_stores_nothing() {
    let server = crate::harness::Server::start_with(crate::harness::ServerOptions {
        extra_args: vec!["--http-max-body-mb".into(), "1".into()],
        ..Default::default()
    });
    let base = url(&server);
    let client = server.client().await;
    let doc = metric_document(4, 40_000);
    assert!(
        doc.len() > 3 << 20,
        "the document must exceed the 1 MiB limit"
    );

    // An upload that stops half way stores nothing and the server goes on.
    drop(half_an_upload(server.http_port, &doc));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(count(&client, "prov.entity").await, 0);
    let ml = simple_col(
        &client,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml'",
    )
    .await;
    if ml != vec![Some("0".to_string())] {
        assert_eq!(count(&client, "ml.metric").await, 0);
    }

    // A large document broken near its start: the server answers before
    // the CLI (which streams the file) has sent it all, and the CLI
    // reports the parser's error, not a connection closed under it.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = write(
        dir.path(),
        "broken.json",
        &doc.replacen("\"entity\": {", "\"entity\": @@{", 1),
    );
    let o = provdb(&["import", s(&broken), "--url", &base]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("invalid PROV-JSON"), "{err}");
    assert_eq!(count(&client, "prov.entity").await, 0);

    // The whole document is imported, past the 1 MiB limit of task batches,
    // through the CLI.
    let whole = write(dir.path(), "big.json", &doc);
    let o = provdb(&["import", s(&whole), "--url", &base]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(count(&client, "ml.metric").await, 160_000);
    let http = reqwest::Client::new();
    // Posting it again stores nothing new.
    let (st, report) = post_raw(&http, &base, "/prov/import?name=big.json", doc).await;
    assert_eq!(st, 200, "{report}");
    assert_eq!(report["metric_points"], 0, "{report}");
    assert_eq!(count(&client, "ml.metric").await, 160_000);
    let last = simple_col(
        &client,
        "SELECT max(epoch) || ' ' || count(DISTINCT name) FROM ml.metric",
    )
    .await;
    assert_eq!(last, vec![Some("399 4".to_string())]);
}

#[tokio::test]
async fn sigterm_during_a_stalled_import_upload_still_exits_and_keeps_data() {
    let mut server = crate::harness::Server::start();
    {
        let c = server.client().await;
        c.batch_execute("CREATE TABLE keep (x INT); INSERT INTO keep VALUES (1), (2)")
            .await
            .expect("setup");
    }
    // Half a document, then silence with the connection held open: the
    // parser waits for the rest on a blocking thread.
    let tcp = half_an_upload(server.http_port, &metric_document(2, 20_000));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = server
        .terminate(std::time::Duration::from_secs(30))
        .expect("provdb did not exit within 30 s of SIGTERM with an upload stalled");
    assert!(status.success(), "exit status: {status}");
    drop(tcp);
    server.restart();
    let c = server.client().await;
    assert_eq!(count(&c, "keep").await, 2);
    assert_eq!(count(&c, "prov.entity").await, 0, "nothing of the upload");
}
