//! Lineage end to end: a sweep of DLProv training runs posted over the
//! DfAnalyzer protocol, then the twelve DLProv questions of
//! `docs/queries.md` run over pgwire and checked against what was posted;
//! the graph stays current while runs keep writing, and survives a kill -9.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value as Json, json};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, ToStatement};

use crate::dlprov::{post, post_raw, spec};
use crate::harness::Server;

const QUERIES: &str = include_str!("../../../docs/queries.md");

const OPTIMIZERS: [&str; 3] = ["adam", "sgd", "rmsprop"];
const RATES: [f64; 4] = [0.001, 0.01, 0.1, 0.05];
const FILTERS: [&str; 2] = ["grayscale", "sobel"];
const EMAILS: [&str; 2] = ["alice@lab.org", "bob@lab.org"];
const HOSTS: [&str; 3] = ["gpu-a", "gpu-b", "cpu-c"];

/// One run of the sweep: everything the generator chose.
#[derive(Debug, Clone)]
struct Run {
    k: usize,
    exec: String,
    optimizer: &'static str,
    lr: f64,
    batch: i64,
    layers: i64,
    epochs: usize,
    filter: &'static str,
    email: &'static str,
    host: &'static str,
}

impl Run {
    fn new(k: usize) -> Run {
        Run {
            k,
            exec: format!("alexnet-sweep-{k}"),
            optimizer: OPTIMIZERS[k % 3],
            lr: RATES[(k / 3) % 4],
            batch: 16 << (k % 2),
            layers: 4 + (k % 4) as i64,
            epochs: 3 + k % 4,
            filter: FILTERS[k % 2],
            email: EMAILS[(k / 2) % 2],
            host: HOSTS[k % 3],
        }
    }

    fn loss(&self, e: usize) -> f64 {
        2.0 / (1.0 + self.lr * 100.0 * e as f64) + self.k as f64 * 0.001
    }

    fn accuracy(&self, e: usize) -> f64 {
        1.0 - self.loss(e) / 2.5
    }

    fn elapsed(&self, e: usize) -> f64 {
        1.0 + 0.1 * self.k as f64 + 0.01 * e as f64
    }

    fn test_accuracy(&self) -> f64 {
        0.5 + self.lr + self.k as f64 * 0.0001
    }

    fn model_dir(&self) -> String {
        format!("/models/{}.keras", self.exec)
    }

    /// The run's task messages, as the DfAnalyzer client sends them.
    fn messages(&self) -> Vec<Json> {
        let base = |dt: &str, id: i64, status: &str| {
            json!({"tag": dt, "first": "0", "dataflow": "alexnet", "email": self.email,
                   "exec": self.exec, "status": status, "transformation": dt, "id": id.to_string()})
        };
        let dep = |tags: &[&str], ids: &[i64]| {
            json!({"tags": tags.iter().map(|t| json!({"tag": t})).collect::<Vec<_>>(),
                   "ids": ids.iter().map(|i| json!({"id": i.to_string()})).collect::<Vec<_>>()})
        };
        let mut out = Vec::new();
        let mut m = base("loaddata", 1, "RUNNING");
        m["first"] = json!("1");
        m["hardware"] = json!(format!(
            "{{\"hostname\": \"{}\", \"os\": \"Linux\", \"gpus\": \"A100\", \"in_container\": false}}",
            self.host
        ));
        m["sets"] = json!([{"tag": "iinputdataset", "elements": [["flowers17", "http://x/17flowers.tgz"]]}]);
        out.push(m);
        let mut m = base("loaddata", 1, "FINISHED");
        m["sets"] = json!([{"tag": "oloaddata", "elements": [["raw.npy"]]}]);
        out.push(m);
        let mut m = base("applyfilter", 2, "RUNNING");
        m["dependency"] = dep(&["loaddata"], &[1]);
        m["sets"] = json!([{"tag": "ifilter", "elements": [[self.filter]]}]);
        out.push(m);
        let mut m = base("applyfilter", 2, "FINISHED");
        m["dependency"] = dep(&["loaddata"], &[1]);
        m["sets"] = json!([{"tag": "ofilter", "elements": [[format!("{}.npy", self.filter)]]}]);
        out.push(m);
        let mut m = base("splitdata", 3, "RUNNING");
        m["dependency"] = dep(&["applyfilter"], &[2]);
        m["sets"] = json!([{"tag": "isplitconfig", "elements": [["0.7", "0.15", "0.15"]]}]);
        out.push(m);
        let mut m = base("splitdata", 3, "FINISHED");
        m["dependency"] = dep(&["applyfilter"], &[2]);
        m["sets"] = json!([
            {"tag": "otrainset", "elements": [[format!("x_train_{}.npy", self.filter), "y_train.npy"]]},
            {"tag": "ovalset", "elements": [["x_val.npy", "y_val.npy"]]},
            {"tag": "otestset", "elements": [["x_test.npy", "y_test.npy"]]}
        ]);
        out.push(m);
        let mut m = base("train", 4, "RUNNING");
        m["dependency"] = dep(&["splitdata"], &[3]);
        m["sets"] = json!([{"tag": "itrain", "elements": [[
            self.optimizer, self.lr.to_string(), self.epochs.to_string(),
            self.batch.to_string(), self.layers.to_string()]]}]);
        out.push(m);
        for e in 1..=self.epochs {
            let mut m = base("train", 4, "RUNNING");
            m["sets"] = json!([{"tag": "otrain", "elements": [[
                format!("2025-07-10 21:{:02}:00", e), self.elapsed(e).to_string(),
                self.loss(e).to_string(), self.accuracy(e).to_string(),
                (self.loss(e) * 1.1).to_string(), (self.accuracy(e) * 0.9).to_string(),
                e.to_string()]]}]);
            out.push(m);
        }
        let mut m = base("train", 4, "FINISHED");
        m["sets"] = json!([{"tag": "otrainedmodel", "elements": [["alexnet", self.model_dir()]]}]);
        out.push(m);
        let mut m = base("test", 5, "FINISHED");
        m["dependency"] = dep(&["splitdata", "train"], &[3, 4]);
        m["sets"] = json!([{"tag": "otest", "elements": [[
            (1.0 - self.test_accuracy()).to_string(), self.test_accuracy().to_string()]]}]);
        out.push(m);
        out
    }
}

/// Every `-- Qn:` sql block of docs/queries.md, by n.
fn questions() -> HashMap<u32, String> {
    let mut out = HashMap::new();
    for block in QUERIES.split("```sql").skip(1) {
        let Some(body) = block.split("```").next() else {
            continue;
        };
        let first = body.trim_start().lines().next().unwrap_or_default();
        let n: u32 = first
            .strip_prefix("-- Q")
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("sql block without a '-- Qn:' header: {first}"));
        out.insert(n, body.trim().to_string());
    }
    out
}

async fn ask(c: &Client, q: &HashMap<u32, String>, n: u32) -> Vec<Row> {
    c.query(q[&n].as_str(), &[])
        .await
        .unwrap_or_else(|e| panic!("Q{n} failed: {e}\n{}", q[&n]))
}

async fn post_runs(http: &reqwest::Client, base: &str, runs: &[Run]) {
    for run in runs {
        let body: String = run.messages().iter().map(|m| format!("{m}\n")).collect();
        let (status, reply) = post_raw(http, base, "/pde/task/batch", body).await;
        assert_eq!(status, 200, "{}: {reply}", run.exec);
    }
}

/// The first column of every row, as text.
async fn texts(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// (node, depth) rows of a statement.
async fn node_depths<T>(c: &Client, query: &T, params: &[&(dyn ToSql + Sync)]) -> Vec<(String, i32)>
where
    T: ?Sized + ToStatement,
{
    c.query(query, params)
        .await
        .unwrap_or_else(|e| panic!("node/depth query: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The hyperparameters a query returned in its first five columns.
fn hp(r: &Row) -> (String, f64, f64, f64, f64) {
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

fn hp_of(run: &Run) -> (String, f64, f64, f64, f64) {
    (
        run.optimizer.to_string(),
        run.lr,
        run.epochs as f64,
        run.batch as f64,
        run.layers as f64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_twelve_dlprov_questions_over_a_sweep() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let base = server.http_url();
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    let runs: Vec<Run> = (0..12).map(Run::new).collect();
    post_runs(&http, &base, &runs).await;
    let c = server.client().await;
    let q = questions();
    assert_eq!(
        q.keys().copied().collect::<BTreeSet<_>>(),
        (1..=12).collect(),
        "docs/queries.md has Q1..Q12"
    );

    // Q1: the models trained with lr = 0.01.
    let got: Vec<String> = ask(&c, &q, 1).await.iter().map(|r| r.get(0)).collect();
    let mut want: Vec<String> = runs
        .iter()
        .filter(|r| r.lr == 0.01)
        .map(|r| r.exec.clone())
        .collect();
    want.sort();
    assert_eq!(got, want, "Q1");

    // Q2: average epoch time of run 5.
    let r5 = &runs[5];
    let want = (1..=r5.epochs).map(|e| r5.elapsed(e)).sum::<f64>() / r5.epochs as f64;
    let got: f64 = ask(&c, &q, 2).await[0].get(0);
    assert!(close(got, want), "Q2: {got} vs {want}");

    // Q3: best average training accuracy.
    let avg = |r: &Run| (1..=r.epochs).map(|e| r.accuracy(e)).sum::<f64>() / r.epochs as f64;
    let best = runs
        .iter()
        .max_by(|a, b| avg(a).total_cmp(&avg(b)))
        .expect("runs");
    let rows = ask(&c, &q, 3).await;
    assert_eq!(hp(&rows[0]), hp_of(best), "Q3");
    assert!(close(rows[0].get(5), avg(best)), "Q3 accuracy");

    // Q4: best test accuracy.
    let best = runs
        .iter()
        .max_by(|a, b| a.test_accuracy().total_cmp(&b.test_accuracy()))
        .expect("runs");
    let rows = ask(&c, &q, 4).await;
    assert_eq!(hp(&rows[0]), hp_of(best), "Q4");
    assert!(close(rows[0].get(5), best.test_accuracy()), "Q4 accuracy");

    // Q5: every element upstream of that run's test output, none of other runs.
    let rows = ask(&c, &q, 5).await;
    let datasets: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let want: BTreeSet<String> = [
        "otest",
        "otrainedmodel",
        "otrainset",
        "ovalset",
        "otestset",
        "itrain",
        "ofilter",
        "isplitconfig",
        "oloaddata",
        "ifilter",
        "iinputdataset",
    ]
    .iter()
    .map(|s| format!("alexnet.{s}"))
    .collect();
    assert_eq!(datasets, want, "Q5 datasets");
    assert_eq!(
        rows.len(),
        want.len(),
        "Q5: one element of each, all from the best run"
    );
    assert_eq!(rows[0].get::<_, i32>(2), 0, "Q5 starts at the test output");

    // Q6: least loss among models trained on the grayscale training set.
    let best = runs
        .iter()
        .filter(|r| r.filter == "grayscale")
        .min_by(|a, b| a.loss(a.epochs).total_cmp(&b.loss(b.epochs)))
        .expect("grayscale runs");
    let rows = ask(&c, &q, 6).await;
    assert_eq!(hp(&rows[0]), hp_of(best), "Q6");
    assert!(close(rows[0].get(5), best.loss(best.epochs)), "Q6 loss");
    assert!(
        close(rows[0].get(7), best.test_accuracy()),
        "Q6 test accuracy"
    );

    // Q7-Q9: one model (run 7).
    let r7 = &runs[7];
    assert_eq!(hp(&ask(&c, &q, 7).await[0]), hp_of(r7), "Q7");
    let env = &ask(&c, &q, 8).await[0];
    assert_eq!(env.get::<_, String>(0), r7.host, "Q8 hostname");
    assert_eq!(env.get::<_, String>(2), "A100", "Q8 gpus");
    let who: String = ask(&c, &q, 9).await[0].get(0);
    assert_eq!(who, r7.email, "Q9");

    // Q10: the derivation trace of model 7.
    let rows = ask(&c, &q, 10).await;
    let nodes: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(rows.len(), nodes.len(), "Q10: each node once");
    let exec_node = format!("execution:{}", r7.exec);
    for must in [exec_node.as_str(), "dataflow:alexnet"] {
        assert!(nodes.contains(must), "Q10 misses {must}");
    }
    assert_eq!(
        nodes.iter().filter(|n| n.starts_with("scientist:")).count(),
        1
    );
    assert_eq!(
        nodes.iter().filter(|n| n.starts_with("hardware:")).count(),
        1
    );
    assert!(
        !nodes.iter().any(|n| n.starts_with("alexnet.otrain:")),
        "epochs are not upstream"
    );
    assert!(
        !nodes.iter().any(|n| n.starts_with("alexnet.otest:")),
        "the test is downstream"
    );
    let tasks: Vec<&String> = nodes.iter().filter(|n| n.starts_with("task:")).collect();
    let in_run = c
        .query(
            "SELECT 'task:' || CAST(t.id AS TEXT), dt.tag FROM public.task t \
             JOIN public.data_transformation dt ON dt.id = t.dt_id WHERE t.df_exec = $1",
            &[&r7.exec],
        )
        .await
        .expect("tasks of run 7");
    let run_tasks: HashMap<String, String> = in_run.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        tasks.len(),
        4,
        "Q10: loaddata, applyfilter, splitdata, train"
    );
    for t in &tasks {
        assert!(
            run_tasks.get(*t).is_some_and(|dt| dt != "test"),
            "Q10: {t} is not a non-test task of run 7"
        );
    }

    // Q11: the data train used.
    let got: Vec<String> = ask(&c, &q, 11).await.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        got,
        ["alexnet.itrain", "alexnet.otrainset", "alexnet.ovalset"],
        "Q11"
    );

    // Q12: the transformations before training, nearest first.
    let got: Vec<(String, i32)> = ask(&c, &q, 12)
        .await
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        got,
        [
            ("splitdata".to_string(), 3),
            ("applyfilter".to_string(), 5),
            ("loaddata".to_string(), 7)
        ],
        "Q12"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_is_current_while_runs_write_and_after_kill9() {
    let mut server = Server::start();
    let http = reqwest::Client::new();
    let base = server.http_url();
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    let run = Run::new(3);
    let msgs = run.messages();
    let c = server.client().await;
    let trace = "SELECT node FROM lineage((SELECT 'alexnet.otrain:' || CAST(max(id) AS TEXT) FROM alexnet.otrain)) ORDER BY node";
    // Post message by message; once an epoch row exists its trace reaches
    // the training data posted before it, immediately after each reply.
    let mut seen_epoch = false;
    for m in &msgs {
        let (status, reply) = post(&http, &base, "/pde/task/json", m).await;
        assert_eq!(status, 200, "{reply}");
        if m["sets"][0]["tag"] == "otrain" {
            seen_epoch = true;
        }
        if seen_epoch {
            let nodes = texts(&c, trace).await;
            assert!(
                nodes
                    .iter()
                    .any(|n| n.starts_with("alexnet.iinputdataset:")),
                "trace of the newest epoch reaches the raw input: {nodes:?}"
            );
        }
    }
    let downstream =
        "SELECT node FROM lineage('dataflow:alexnet', direction => 'downstream') ORDER BY node";
    let before = texts(&c, downstream).await;
    // Everything the run's tasks generated is downstream of the plan; the
    // inputs they only used are not.
    assert_eq!(
        before.iter().filter(|n| n.starts_with("task:")).count(),
        5,
        "{before:?}"
    );
    assert_eq!(
        before
            .iter()
            .filter(|n| n.starts_with("alexnet.otrain:"))
            .count(),
        run.epochs,
        "{before:?}"
    );
    assert!(
        before.iter().any(|n| n.starts_with("alexnet.otest:")),
        "{before:?}"
    );
    assert!(
        !before.iter().any(|n| n.starts_with("alexnet.itrain:")),
        "{before:?}"
    );
    drop(c);
    server.kill9();
    server.restart();
    let c = server.client().await;
    let after = texts(&c, downstream).await;
    assert_eq!(after, before, "the index is rebuilt from the tables");
}

/// A random graph with cycles, inserted over SQL: lineage() and the
/// equivalent WITH RECURSIVE agree from every start tried, at every depth
/// limit, including through a prepared statement with parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_agrees_with_recursive_sql_on_a_cyclic_graph() {
    let server = Server::start();
    let c = server.client().await;
    let mut state: u64 = 0x5DEE_CE66;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut edges = BTreeSet::new();
    while edges.len() < 400 {
        let (a, b) = (next(150), next(150));
        if a != b {
            edges.insert((a, b));
        }
    }
    let values: Vec<String> = edges
        .iter()
        .map(|(a, b)| format!("('wasDerivedFrom', 'g:{a}', 'g:{b}')"))
        .collect();
    c.batch_execute(&format!(
        "INSERT INTO prov.relation (kind, subject, object) VALUES {}",
        values.join(", ")
    ))
    .await
    .expect("insert graph");
    let by_params = c
        .prepare(
            "SELECT node, depth FROM lineage($1, direction => $2, max_depth => $3) ORDER BY node",
        )
        .await
        .expect("prepare with parameters");
    // A parameter inside a subquery start: the subquery runs at each
    // execution, after the values are bound (it cannot at prepare time).
    let by_subquery = c
        .prepare(
            "SELECT node, depth FROM lineage((SELECT 'g:' || $1), direction => $2, \
             max_depth => $3) ORDER BY node",
        )
        .await
        .expect("prepare with a parameter in a subquery start");
    for start in [0u64, 7, 42, 99] {
        for (dir, from, to) in [
            ("upstream", "subject", "object"),
            ("downstream", "object", "subject"),
        ] {
            for depth in [1, 3, 50] {
                let recursive = format!(
                    "WITH RECURSIVE r(node, depth) AS (SELECT CAST('g:{start}' AS TEXT), 0 UNION \
                     SELECT e.{to}, r.depth + 1 FROM prov.relation e JOIN r ON e.{from} = r.node \
                     WHERE r.depth < {depth}) SELECT node, CAST(min(depth) AS INT) FROM r GROUP BY node ORDER BY node"
                );
                let want = node_depths(&c, recursive.as_str(), &[]).await;
                let walk = format!(
                    "SELECT node, depth FROM lineage('g:{start}', direction => '{dir}', max_depth => {depth}) ORDER BY node"
                );
                let got = node_depths(&c, walk.as_str(), &[]).await;
                assert_eq!(got, want, "g:{start} {dir} depth {depth}");
                let depth_text = depth.to_string();
                let start_id = format!("g:{start}");
                let prepared = node_depths(&c, &by_params, &[&start_id, &dir, &depth_text]).await;
                assert_eq!(prepared, want, "prepared g:{start} {dir} depth {depth}");
                let number = start.to_string();
                let sub = node_depths(&c, &by_subquery, &[&number, &dir, &depth_text]).await;
                assert_eq!(sub, want, "subquery g:{start} {dir} depth {depth}");
            }
        }
    }
}
