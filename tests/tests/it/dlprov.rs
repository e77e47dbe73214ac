//! DLProv drop-in: the DfAnalyzer HTTP protocol sent exactly as the Python
//! client sends it, then the SQL DLProv users run, over pgwire.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio_postgres::Client;

use crate::harness::{Server, simple_col, within};

const SPEC: &str = include_str!("../../fixtures/dlprov/alexnet-spec.json");
const RUN: &str = include_str!("../../fixtures/dlprov/alexnet-run.jsonl");

fn reference_run() -> Vec<Json> {
    RUN.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture"))
        .collect()
}

pub(crate) fn spec() -> Json {
    serde_json::from_str(SPEC).expect("spec fixture")
}

/// POST like dfa_lib_python: `DFA_URL + '/pde/...'` (so `//pde/...`).
pub(crate) async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Json,
) -> (u16, Json) {
    post_raw(http, base, path, body.to_string()).await
}

pub(crate) async fn post_raw(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    body: String,
) -> (u16, Json) {
    let resp = http
        .post(format!("{base}{path}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("HTTP body");
    let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
    (status, json)
}

async fn one_i64(c: &Client, sql: &str) -> i64 {
    let row = c
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get::<_, i64>(0)
}

/// The messages of one training run of the predefined alexnet dataflow,
/// shaped like the reference capture, with `epochs` epoch rows.
fn training_run(exec: &str, hp: (&str, f64, i64, i64), epochs: usize, email: &str) -> Vec<Json> {
    let base = |dt: &str, id: i64, first: &str, status: &str| {
        json!({"tag": dt, "first": first, "dataflow": "alexnet", "email": email, "exec": exec,
               "status": status, "transformation": dt, "id": id.to_string()})
    };
    let dep = |tags: &[&str], ids: &[i64]| {
        json!({"tags": tags.iter().map(|t| json!({"tag": t})).collect::<Vec<_>>(),
               "ids": ids.iter().map(|i| json!({"id": i.to_string()})).collect::<Vec<_>>()})
    };
    let perf = json!([{"startTime": "2025-07-10 21:00:05", "endTime": "2025-07-10 21:00:09"}]);
    let mut out = Vec::new();
    let mut m = base("loaddata", 1, "1", "RUNNING");
    m["hardware"] = json!(
        "{\"hostname\": \"gpu-node\", \"os\": \"Linux\", \"gpus\": \"A100\", \"in_container\": false}"
    );
    m["sets"] =
        json!([{"tag": "iinputdataset", "elements": [["flowers", "http://x/17flowers.tgz"]]}]);
    out.push(m);
    let mut m = base("loaddata", 1, "0", "FINISHED");
    m["sets"] = json!([{"tag": "oloaddata", "elements": [["raw.npy"]]}]);
    m["performances"] = perf.clone();
    out.push(m);
    let mut m = base("applyfilter", 2, "0", "FINISHED");
    m["dependency"] = dep(&["loaddata"], &[1]);
    m["sets"] = json!([{"tag": "ofilter", "elements": [["gray.npy"]]}]);
    out.push(m);
    for (set, vals) in [
        ("otrainset", ["x_train", "y_train"]),
        ("ovalset", ["x_val", "y_val"]),
    ] {
        let mut m = base("splitdata", 3, "0", "RUNNING");
        m["dependency"] = dep(&["applyfilter"], &[2]);
        m["sets"] = json!([{"tag": set, "elements": [vals]}]);
        out.push(m);
    }
    let mut m = base("splitdata", 3, "0", "FINISHED");
    m["dependency"] = dep(&["applyfilter"], &[2]);
    m["sets"] = json!([{"tag": "otestset", "elements": [["x_test", "y_test"]]}]);
    out.push(m);
    let (opt, lr, batch, layers) = hp;
    let mut m = base("train", 4, "0", "RUNNING");
    m["dependency"] = dep(&["splitdata"], &[3]);
    m["sets"] = json!([{"tag": "itrain", "elements": [[opt, lr.to_string(), epochs.to_string(), batch.to_string(), layers.to_string()]]}]);
    out.push(m);
    for e in 1..=epochs {
        let (loss, acc) = epoch_metrics(lr, e);
        let mut m = base("train", 4, "0", "RUNNING");
        m["dependency"] = dep(&["splitdata"], &[3]);
        m["sets"] = json!([{"tag": "otrain", "elements": [[
            format!("2025-07-10 21:{:02}:00", e % 60), "1.5",
            loss.to_string(), acc.to_string(), (loss * 1.1).to_string(), (acc * 0.9).to_string(), e.to_string()]]}]);
        out.push(m);
    }
    let mut m = base("train", 4, "0", "FINISHED");
    m["dependency"] = dep(&["splitdata"], &[3]);
    m["sets"] =
        json!([{"tag": "otrainedmodel", "elements": [["model", format!("/models/{exec}.keras")]]}]);
    m["performances"] = perf.clone();
    out.push(m);
    let mut m = base("test", 5, "0", "FINISHED");
    m["dependency"] = dep(&["splitdata", "train"], &[3, 4]);
    m["sets"] = json!([{"tag": "otest", "elements": [["0.5", (0.5 + lr).to_string()]]}]);
    out.push(m);
    out
}

fn epoch_metrics(lr: f64, e: usize) -> (f64, f64) {
    let loss = 2.0 / (1.0 + lr * 100.0 * e as f64);
    let acc = 1.0 - loss / 2.5;
    (loss, acc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_run_over_http_then_dlprov_sql() {
    let server = Server::start();
    let client = server.client().await;
    let http = reqwest::Client::new();
    let base = server.http_url();
    let (st, health) = within(10, "health", async {
        let r = http
            .get(format!("{base}health"))
            .send()
            .await
            .expect("health");
        (r.status().as_u16(), r.json::<Json>().await.expect("json"))
    })
    .await;
    assert_eq!((st, health), (200, json!({"status": "UP"})));

    let spec = spec();
    let (st, echo) = post(&http, &base, "/pde/dataflow/json", &spec).await;
    assert_eq!(st, 200, "{echo}");
    assert_eq!(echo, spec, "DfAnalyzer echoes the parsed JSON");
    for (i, m) in reference_run().iter().enumerate() {
        let (st, echo) = post(&http, &base, "/pde/task/json", m).await;
        assert_eq!(st, 200, "message {i}: {echo}");
        assert_eq!(&echo, m);
        // Durable and visible at the reply: the task row is there already.
        let ident = m["id"].as_str().expect("id");
        let n = one_i64(
            &client,
            &format!("SELECT count(*) FROM public.task WHERE identifier = {ident}"),
        )
        .await;
        assert_eq!(n, 1, "task {ident} visible after message {i}");
    }

    // README SQL (reference 4.1), in one session, unchanged.
    let dataflows = simple_col(&client, "SELECT tag FROM dataflow").await;
    assert_eq!(dataflows, [Some("alexnet".to_string())]);
    let execs = simple_col(&client, "SELECT tag FROM dataflow_execution").await;
    assert_eq!(
        execs,
        [Some("alexnet-2025-07-10 21:00:00.123456".to_string())]
    );
    client
        .batch_execute("SET SCHEMA \"alexnet\"")
        .await
        .expect("SET SCHEMA");
    let itrain = client
        .query("SELECT * FROM itrain", &[])
        .await
        .expect("itrain");
    let names: Vec<&str> = itrain[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "id",
            "train_task_id",
            "optimizer_name",
            "learning_rate",
            "num_epochs",
            "batch_size",
            "num_layers"
        ]
    );
    assert_eq!(itrain[0].get::<_, String>(2), "adam");
    assert_eq!(itrain[0].get::<_, f64>(3), 0.002);
    let otrain = client
        .query("SELECT * FROM otrain ORDER BY epoch", &[])
        .await
        .expect("otrain");
    assert_eq!(otrain.len(), 2);
    assert_eq!(otrain[1].get::<_, f64>(4), 1.1);
    assert_eq!(otrain[0].get::<_, String>(2), "2025-07-10 21:01:00");
    let otest = client
        .query("SELECT loss, accuracy FROM otest", &[])
        .await
        .expect("otest");
    assert_eq!(
        (otest[0].get::<_, f64>(0), otest[0].get::<_, f64>(1)),
        (1.5, 0.6)
    );

    // Reference 4.7: queries during training.
    let progress = client
        .query(
            "SELECT t.df_exec, o.epoch, o.loss, o.accuracy, o.val_loss, o.val_accuracy, CAST(o.elapsed_time AS DOUBLE) AS secs \
             FROM otrain o JOIN \"public\".task t ON t.id = o.train_task_id \
             WHERE t.status = 'FINISHED' ORDER BY t.df_exec, o.epoch",
            &[],
        )
        .await
        .expect("progress");
    assert_eq!(progress.len(), 2);
    assert_eq!(progress[0].get::<_, f64>(6), 12.5);
    let best = client
        .query(
            "SELECT t.df_exec, i.optimizer_name, i.learning_rate, i.batch_size, i.num_epochs, \
                    MAX(o.val_accuracy) AS best_val_acc, COUNT(*) AS epochs_done \
             FROM itrain i JOIN otrain o ON o.train_task_id = i.train_task_id \
             JOIN \"public\".task t ON t.id = i.train_task_id \
             GROUP BY t.df_exec, i.optimizer_name, i.learning_rate, i.batch_size, i.num_epochs \
             ORDER BY best_val_acc DESC",
            &[],
        )
        .await
        .expect("best");
    assert_eq!(best.len(), 1);
    assert_eq!(best[0].get::<_, f64>(5), 0.35);
    assert_eq!(best[0].get::<_, i64>(6), 2);
    let chain = client
        .query(
            "SELECT f.filter_type, ts.trainsetx, i.learning_rate FROM ifilter f \
             JOIN ofilter o ON o.applyfilter_task_id = f.applyfilter_task_id \
             JOIN otrainset ts ON ts.splitdata_task_id = o.splitdata_task_id \
             JOIN itrain i ON i.train_task_id = ts.train_task_id",
            &[],
        )
        .await
        .expect("chain");
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].get::<_, String>(0), "Grayscale");
    assert_eq!(chain[0].get::<_, String>(1), "d/x_train.npy");
    let who = client
        .query(
            "SELECT e.tag, s.email, h.hostname, h.gpus, h.in_container \
             FROM \"public\".dataflow_execution e \
             LEFT JOIN \"public\".data_scientist s ON s.id = e.scientist_id \
             LEFT JOIN \"public\".hardware_info h ON h.id = e.hardware_id",
            &[],
        )
        .await
        .expect("who");
    assert_eq!(who[0].get::<_, String>(1), "bob@fictional.com");
    assert_eq!(who[0].get::<_, String>(2), "host1");
    assert!(who[0].get::<_, bool>(4));

    // Catalog rows and links, checked one by one.
    let tasks = client
        .query(
            "SELECT id, identifier, status, workspace FROM public.task ORDER BY id",
            &[],
        )
        .await
        .expect("tasks");
    assert_eq!(tasks.len(), 5);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(t.get::<_, i32>(0), i as i32 + 1);
        assert_eq!(t.get::<_, String>(2), "FINISHED");
        assert_eq!(
            t.get::<_, Option<String>>(3),
            None,
            "absent fields are NULL"
        );
    }
    let links = client
        .query(
            "SELECT (SELECT applyfilter_task_id FROM oloaddata) AS a, (SELECT splitdata_task_id FROM ofilter) AS b, \
                    (SELECT train_task_id FROM otrainset) AS c, (SELECT train_task_id FROM ovalset) AS d, \
                    (SELECT test_task_id FROM otestset) AS e, (SELECT test_task_id FROM otrainedmodel) AS f",
            &[],
        )
        .await
        .expect("links");
    let got: Vec<Option<i32>> = (0..6).map(|i| links[0].get(i)).collect();
    assert_eq!(got, [Some(2), Some(3), Some(4), Some(4), Some(5), Some(5)]);
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.performance").await,
        5
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.data_set").await,
        13
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.attribute").await,
        31
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.data_transformation").await,
        5
    );
    let deps = client
        .query(
            "SELECT p.tag, n.tag FROM public.data_dependency d \
             JOIN public.data_set s ON s.id = d.ds_id \
             LEFT JOIN public.data_transformation p ON p.id = d.previous_dt_id \
             LEFT JOIN public.data_transformation n ON n.id = d.next_dt_id \
             WHERE s.tag = 'otrainedmodel'",
            &[],
        )
        .await
        .expect("deps");
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0].get::<_, Option<String>>(1).as_deref(), Some("test"));
}

/// Row counts of the tables a task message writes.
async fn counts(c: &Client) -> Vec<i64> {
    let mut out = Vec::new();
    for t in [
        "public.task",
        "public.performance",
        "alexnet.ds_ifilter",
        "alexnet.ds_oloaddata",
        "alexnet.ds_ofilter",
        "public.dataflow_execution",
    ] {
        out.push(one_i64(c, &format!("SELECT count(*) FROM {t}")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_4xx_and_stores_nothing() {
    let server = Server::start();
    let client = server.client().await;
    let http = reqwest::Client::new();
    let base = server.http_url();
    let msgs = reference_run();
    // A task before any spec: unknown dataflow.
    let (st, body) = post(&http, &base, "/pde/task/json", &msgs[0]).await;
    assert_eq!(st, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("alexnet"),
        "{body}"
    );
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    for m in &msgs[..3] {
        assert_eq!(post(&http, &base, "/pde/task/json", m).await.0, 200);
    }
    let before = counts(&client).await;
    let cases: Vec<(u16, String, &str)> = vec![
        (
            400,
            "{\"tag\": \"applyfilter\", \"id\": ".to_string(),
            "malformed JSON",
        ),
        (
            400,
            msgs[3]
                .to_string()
                .replace("\"id\":\"2\"", "\"id\":\"two\""),
            "not an integer",
        ),
        (
            404,
            msgs[3]
                .to_string()
                .replace("\"dataflow\":\"alexnet\"", "\"dataflow\":\"resnet\""),
            "resnet",
        ),
        (
            404,
            msgs[3].to_string().replace("\"ofilter\"", "\"omissing\""),
            "omissing",
        ),
        (
            422,
            msgs[3]
                .to_string()
                .replace("[[\"alexnet_x/data/x_gray.npy\"]]", "[[\"a\",\"b\"]]"),
            "2 value(s) for 1 attribute",
        ),
        (
            404,
            msgs[3]
                .to_string()
                .replace("{\"id\":\"1\"}", "{\"id\":\"9\"}"),
            "no task 9",
        ),
    ];
    for (want, body, needle) in cases {
        assert_ne!(
            body,
            msgs[3].to_string(),
            "the case must change the message"
        );
        let (st, reply) = post_raw(&http, &base, "//pde/task/json", body.clone()).await;
        assert_eq!(st, want, "{body} -> {reply}");
        let msg = reply["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "error {msg:?} should mention {needle:?}"
        );
    }
    // Non-numeric NUMERIC in a batch: the whole batch is refused.
    let mut bad = msgs[5].clone();
    bad["sets"] = json!([{"tag": "isplitconfig", "elements": [["1088", "lots", "136"]]}]);
    let batch = format!("{}\n{}\n", msgs[3], bad);
    let (st, reply) = post_raw(&http, &base, "/pde/task/batch", batch).await;
    assert_eq!(st, 422, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap_or_default()
            .contains("message 1"),
        "{reply}"
    );
    assert_eq!(
        counts(&client).await,
        before,
        "nothing of a refused request is stored"
    );
    // Specs: malformed, unknown type, dangling dependency.
    let (st, _) = post_raw(&http, &base, "/pde/dataflow/json", "{\"tag\":".into()).await;
    assert_eq!(st, 400);
    let (st, reply) = post(
        &http,
        &base,
        "/pde/dataflow/json",
        &json!({"tag": "x", "transformations": [{"tag": "t", "sets": [{"tag": "s", "type": "OUTPUT", "attributes": [{"name": "a", "type": "DATE"}]}]}]}),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        reply["error"].as_str().unwrap_or_default().contains("DATE"),
        "{reply}"
    );
    let (st, _) = post(
        &http,
        &base,
        "/pde/dataflow/json",
        &json!({"tag": "y", "transformations": [{"tag": "t", "sets": [{"tag": "s", "type": "INPUT", "dependency": "nowhere"}]}]}),
    )
    .await;
    assert_eq!(st, 400);
    let schemas = simple_col(&client, "SELECT tag FROM public.dataflow ORDER BY tag").await;
    assert_eq!(schemas, [Some("alexnet".to_string())]);
    let (st, _) = post_raw(&http, &base, "/nope", "{}".into()).await;
    assert_eq!(st, 404);
    // The server still serves.
    assert_eq!(post(&http, &base, "/pde/task/json", &msgs[3]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_and_data_survive_a_restart_mid_run() {
    let mut server = Server::start();
    let http = reqwest::Client::new();
    let msgs = reference_run();
    let base = server.http_url();
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    for m in &msgs[..9] {
        assert_eq!(post(&http, &base, "/pde/task/json", m).await.0, 200);
    }
    server
        .terminate(Duration::from_secs(20))
        .expect("clean stop");
    server.restart();
    let base = server.http_url();
    // No spec re-POST: the run continues.
    for m in &msgs[9..] {
        let (st, body) = post(&http, &base, "/pde/task/json", m).await;
        assert_eq!(st, 200, "{body}");
    }
    let client = server.client().await;
    let statuses = simple_col(&client, "SELECT status FROM public.task ORDER BY id").await;
    assert_eq!(statuses.len(), 5);
    assert!(
        statuses.iter().all(|s| s.as_deref() == Some("FINISHED")),
        "{statuses:?}"
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM alexnet.otrain").await,
        2
    );
    // Sequences may skip values after a restart (as in PostgreSQL), so the
    // test task's id is looked up, not assumed.
    let linked = simple_col(
        &client,
        "SELECT t.identifier FROM alexnet.otrainedmodel m JOIN public.task t ON t.id = m.test_task_id",
    )
    .await;
    assert_eq!(linked, [Some("5".to_string())]);
    // kill -9 this time: acknowledged messages survive too.
    let mut m = msgs[9].clone();
    m["sets"][0]["elements"] = json!([["t", "1", "0.1", "0.9", "0.1", "0.9", "3"]]);
    assert_eq!(post(&http, &base, "/pde/task/json", &m).await.0, 200);
    server.kill9();
    server.restart();
    let client = server.client().await;
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM alexnet.otrain").await,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_training_runs_while_dashboards_query() {
    const RUNS: usize = 32;
    const EPOCHS: usize = 15;
    let server = Server::start();
    let http = reqwest::Client::new();
    let base = server.http_url();
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut dashboards = Vec::new();
    for d in 0..4 {
        let client = server.client().await;
        let stop = stop.clone();
        dashboards.push(tokio::spawn(async move {
            let queries = [
                "SELECT t.df_exec, max(o.epoch) FROM alexnet.otrain o JOIN public.task t ON t.id = o.train_task_id WHERE t.status = 'RUNNING' GROUP BY t.df_exec",
                "SELECT i.learning_rate, max(o.val_accuracy) FROM alexnet.itrain i JOIN alexnet.otrain o ON o.train_task_id = i.train_task_id GROUP BY i.learning_rate",
                "SELECT count(*) FROM alexnet.otrain",
            ];
            let mut n = 0u64;
            let mut last_count = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for q in &queries {
                    let rows = client.query(*q, &[]).await.unwrap_or_else(|e| panic!("dashboard {d}: {q}: {e}"));
                    if q.starts_with("SELECT count") {
                        let c: i64 = rows[0].get(0);
                        assert!(c >= last_count, "a dashboard saw rows disappear");
                        last_count = c;
                    }
                    n += 1;
                }
            }
            n
        }));
    }
    let mut runs = Vec::new();
    for r in 0..RUNS {
        let http = http.clone();
        let base = base.clone();
        runs.push(tokio::spawn(async move {
            let exec = format!("alexnet-run-{r:02}");
            let lr = 0.001 * (r + 1) as f64;
            let mut acked = 0usize;
            for m in training_run(&exec, ("adam", lr, 32, 8), EPOCHS, "team@lab.org") {
                let (st, body) = post(&http, &base, "//pde/task/json", &m).await;
                assert_eq!(st, 200, "{exec}: {body}");
                acked += 1;
            }
            acked
        }));
    }
    let mut acked = 0;
    for r in runs {
        acked += r.await.expect("run task");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut queries = 0;
    for d in dashboards {
        queries += d.await.expect("dashboard");
    }
    assert!(queries > 0);
    assert_eq!(acked, RUNS * (EPOCHS + 9));
    let client = server.client().await;
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM alexnet.otrain").await,
        (RUNS * EPOCHS) as i64
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.task").await,
        (RUNS * 5) as i64
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.dataflow_execution").await,
        RUNS as i64
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.data_scientist").await,
        1
    );
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM public.hardware_info").await,
        1
    );
    let unlinked = one_i64(
        &client,
        "SELECT count(*) FROM alexnet.otrainedmodel WHERE test_task_id IS NULL",
    )
    .await;
    assert_eq!(unlinked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperparameter_sweep_through_the_batch_endpoint() {
    let server = Server::start();
    let http = reqwest::Client::new();
    let base = server.http_url();
    assert_eq!(
        post(&http, &base, "/pde/dataflow/json", &spec()).await.0,
        200
    );
    let mut expected: HashMap<String, (String, f64, f64)> = HashMap::new();
    let optimizers = ["adam", "sgd", "rmsprop"];
    for (k, lr) in [0.001, 0.01, 0.1].iter().enumerate() {
        for (j, opt) in optimizers.iter().enumerate() {
            let exec = format!("alexnet-sweep-{k}-{j}");
            let epochs = 5 + k + j;
            let msgs = training_run(
                &exec,
                (opt, *lr, 16 << j, 4 + k as i64),
                epochs,
                "sweeper@lab.org",
            );
            let best = (1..=epochs)
                .map(|e| epoch_metrics(*lr, e).1 * 0.9)
                .fold(f64::MIN, f64::max);
            expected.insert(exec.clone(), (opt.to_string(), *lr, best));
            let body: String = msgs.iter().map(|m| format!("{m}\n")).collect();
            let (st, reply) = post_raw(&http, &base, "/pde/task/batch", body).await;
            assert_eq!(st, 200, "{reply}");
            assert_eq!(reply["accepted"], json!(msgs.len()));
        }
    }
    let client = server.client().await;
    client
        .batch_execute("SET SCHEMA \"alexnet\"")
        .await
        .expect("set schema");
    let rows = client
        .query(
            "SELECT t.df_exec, i.optimizer_name, i.learning_rate, MAX(o.val_accuracy) AS best_val_acc, COUNT(*) AS epochs_done \
             FROM itrain i JOIN otrain o ON o.train_task_id = i.train_task_id \
             JOIN \"public\".task t ON t.id = i.train_task_id \
             GROUP BY t.df_exec, i.optimizer_name, i.learning_rate ORDER BY best_val_acc DESC",
            &[],
        )
        .await
        .expect("sweep query");
    assert_eq!(rows.len(), 9);
    for r in &rows {
        let exec: String = r.get(0);
        let (opt, lr, best) = &expected[&exec];
        assert_eq!(&r.get::<_, String>(1), opt);
        assert_eq!(r.get::<_, f64>(2), *lr);
        assert!((r.get::<_, f64>(3) - best).abs() < 1e-9, "{exec}");
    }
    let finished = one_i64(
        &client,
        "SELECT count(*) FROM \"public\".task WHERE status = 'FINISHED'",
    )
    .await;
    assert_eq!(finished, 9 * 5, "every task of every run finished");
}
