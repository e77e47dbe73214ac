//! Export and import over real storage: the reference DLProv run, round
//! trips, yProv4ML layouts, bad input.

use std::collections::BTreeSet;
use std::sync::Arc;

use provdb_storage::{Storage, StorageOptions};
use serde_json::{Value as Json, json};

use super::cells::live_batches;
use super::model::{Document, Value};
use super::{Format, ImportOptions, Scope, export, import, render};
use crate::dlprov::Dlprov;
use crate::lineage::{Direction, Lineage, NodeKind};
use crate::sequence::Sequences;

const SPEC: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-spec.json");
const RUN: &str = include_str!("../../../tests/fixtures/dlprov/alexnet-run.jsonl");
const EXEC: &str = "alexnet-2025-07-10 21:00:00.123456";

async fn open(dir: &std::path::Path) -> (Storage, Lineage) {
    let mut opts = StorageOptions::new(dir);
    opts.background = false;
    let storage = Storage::open(opts).await.expect("open");
    let lineage = Lineage::open(&storage).await.expect("lineage");
    super::ml::ensure_tables(&storage).await.expect("ml tables");
    (storage, lineage)
}

async fn reference_run(dir: &std::path::Path) -> (Storage, Lineage) {
    let (storage, lineage) = open(dir).await;
    let dl = Dlprov::start(storage.clone(), Arc::new(Sequences::default()));
    let spec: Json = serde_json::from_str(SPEC).expect("spec");
    dl.register_dataflow(&spec).await.expect("register");
    for line in RUN.lines().filter(|l| !l.trim().is_empty()) {
        let m: Json = serde_json::from_str(line).expect("line");
        dl.ingest(&[m]).await.expect("message");
    }
    (storage, lineage)
}

/// Every record with qualified names expanded to IRIs, as sortable text:
/// two documents describe the same records iff these sets are equal.
fn canonical(doc: &Document) -> BTreeSet<String> {
    let iri = |q: &str| -> String {
        match q.split_once(':') {
            Some((p, l)) => match doc.namespaces.iter().find(|(x, _)| x == p) {
                Some((_, ns)) => format!("<{ns}{l}>"),
                None => q.to_string(),
            },
            None => format!("<{}{q}>", doc.default_namespace.clone().unwrap_or_default()),
        }
    };
    let value = |v: &Value| match v {
        Value::QName(q) => format!("'{}'", iri(q)),
        other => format!("{other:?}"),
    };
    let mut out = BTreeSet::new();
    for e in &doc.elements {
        let mut attrs: Vec<String> = e
            .attrs
            .iter()
            .map(|(k, v)| format!("{}={}", iri(k), value(v)))
            .collect();
        attrs.sort();
        out.insert(format!(
            "{} {} {:?} {:?} {attrs:?}",
            e.class.name(),
            iri(&e.id),
            e.start,
            e.end
        ));
    }
    for r in &doc.relations {
        let args: Vec<String> = r
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Some(a) if Some(i) == r.spec.time_arg => a.clone(),
                Some(a) => iri(a),
                None => "-".into(),
            })
            .collect();
        let mut attrs: Vec<String> = r
            .attrs
            .iter()
            .map(|(k, v)| format!("{}={}", iri(k), value(v)))
            .collect();
        attrs.sort();
        out.insert(format!("{}({}) {attrs:?}", r.spec.name, args.join(", ")));
    }
    out
}

fn relations(doc: &Document) -> BTreeSet<(String, String, String)> {
    doc.relations
        .iter()
        .map(|r| {
            (
                r.spec.name.to_string(),
                r.subject().to_string(),
                r.object().to_string(),
            )
        })
        .collect()
}

fn element<'a>(doc: &'a Document, id: &str) -> &'a super::model::Element {
    doc.elements.iter().find(|e| e.id == id).unwrap_or_else(|| {
        panic!(
            "no element {id} in {:?}",
            doc.elements.iter().map(|e| &e.id).collect::<Vec<_>>()
        )
    })
}

fn attr<'a>(e: &'a super::model::Element, key: &str) -> Option<&'a Value> {
    e.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

async fn count(storage: &Storage, schema: &str, table: &str) -> usize {
    live_batches(storage, schema, table)
        .await
        .expect("read")
        .iter()
        .map(|b| b.num_rows())
        .sum()
}

#[tokio::test]
async fn reference_run_exports_every_dlprov_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = reference_run(dir.path()).await;
    let doc = export(&storage, &lineage, &Scope::Execution(EXEC.into()))
        .await
        .expect("export");
    let exec = "execution:alexnet-2025-07-10%2021%3A00%3A00.123456";

    // Plan, execution, two agents, five tasks.
    let plan = element(&doc, "dataflow:alexnet");
    assert_eq!(plan.class, NodeKind::Entity);
    assert_eq!(
        attr(plan, "prov:type"),
        Some(&Value::QName("prov:Plan".into()))
    );
    let e = element(&doc, exec);
    assert_eq!(e.class, NodeKind::Activity);
    assert_eq!(
        e.start.as_deref(),
        Some("2025-07-10T21:00:05Z"),
        "execution spans its tasks"
    );
    assert_eq!(attr(e, "dlprov:exec_tag"), Some(&Value::Str(EXEC.into())));
    let agents: Vec<_> = doc
        .elements
        .iter()
        .filter(|e| e.class == NodeKind::Agent)
        .collect();
    assert_eq!(agents.len(), 2);
    assert!(
        agents
            .iter()
            .any(|a| attr(a, "dlprov:email") == Some(&Value::Str("bob@fictional.com".into())))
    );
    assert!(
        agents
            .iter()
            .any(|a| attr(a, "dlprov:hostname") == Some(&Value::Str("host1".into())))
    );
    let tasks: Vec<_> = doc
        .elements
        .iter()
        .filter(|e| e.id.starts_with("task:"))
        .collect();
    assert_eq!(tasks.len(), 5);
    assert!(
        tasks
            .iter()
            .all(|t| t.class == NodeKind::Activity && t.start.is_some() && t.end.is_some())
    );
    assert!(
        tasks
            .iter()
            .any(|t| attr(t, "dlprov:dt_tag") == Some(&Value::Str("train".into())))
    );

    // Row entities carry every attribute as a typed literal.
    let itrain = element(&doc, "alexnet.itrain:1");
    assert_eq!(
        attr(itrain, "dlprov:optimizer_name"),
        Some(&Value::Str("adam".into()))
    );
    assert_eq!(
        attr(itrain, "dlprov:learning_rate"),
        Some(&Value::typed("0.002", "xsd:double"))
    );
    assert_eq!(
        attr(itrain, "dlprov:ds_tag"),
        Some(&Value::Str("itrain".into()))
    );
    assert!(
        attr(itrain, "dlprov:train_task_id").is_none(),
        "links are relations, not attributes"
    );

    let rels = relations(&doc);
    let has = |k: &str, s: &str, o: &str| rels.contains(&(k.into(), s.into(), o.into()));
    assert!(
        has("used", exec, "dataflow:alexnet"),
        "hadPlan is written as used"
    );
    assert_eq!(
        rels.iter()
            .filter(|r| r.0 == "wasAssociatedWith" && r.1 == exec)
            .count(),
        2
    );
    assert_eq!(
        rels.iter()
            .filter(|r| r.0 == "wasInformedBy" && r.2 == exec)
            .count(),
        5
    );
    let train = tasks
        .iter()
        .find(|t| attr(t, "dlprov:dt_tag") == Some(&Value::Str("train".into())))
        .expect("train");
    assert!(has("used", &train.id, "alexnet.itrain:1"));
    assert!(has("wasGeneratedBy", "alexnet.otrain:1", &train.id));
    // Derivations come from the graph: output rows <- input rows of a task.
    assert!(has(
        "wasDerivedFrom",
        "alexnet.ofilter:1",
        "alexnet.oloaddata:1"
    ));
    assert!(has(
        "wasDerivedFrom",
        "alexnet.otrainedmodel:1",
        "alexnet.itrain:1"
    ));
    // Every relation's ends are records of the document.
    let ids: BTreeSet<&str> = doc.elements.iter().map(|e| e.id.as_str()).collect();
    assert!(
        rels.iter()
            .all(|r| ids.contains(r.1.as_str()) && ids.contains(r.2.as_str()))
    );
    // Namespaces are absolute IRIs; nothing undeclared.
    assert!(
        doc.namespaces
            .iter()
            .all(|(_, iri)| iri.starts_with("urn:")),
        "{:?}",
        doc.namespaces
    );
    assert!(doc.namespaces.iter().any(|(p, _)| p == "alexnet.otrain"));

    // Stable: a second export is byte-identical, in every format.
    for f in [Format::ProvN, Format::Json, Format::Dot] {
        let a = render(&doc, f).expect("render");
        let again = export(&storage, &lineage, &Scope::Execution(EXEC.into()))
            .await
            .expect("export");
        assert_eq!(a, render(&again, f).expect("render"));
    }
    let provn = String::from_utf8(render(&doc, Format::ProvN).expect("provn")).expect("utf8");
    assert!(provn.starts_with("document\n") && provn.ends_with("endDocument\n"));
    assert!(
        provn.contains("entity(alexnet.itrain:1, [dlprov:ds_tag=\"itrain\""),
        "{provn}"
    );
}

#[tokio::test]
async fn scopes_select_executions_dataflows_and_closures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = reference_run(dir.path()).await;
    let run = export(&storage, &lineage, &Scope::Execution(EXEC.into()))
        .await
        .expect("execution");
    let all = export(&storage, &lineage, &Scope::Dataflow("alexnet".into()))
        .await
        .expect("dataflow");
    assert_eq!(
        canonical(&run),
        canonical(&all),
        "one execution: the dataflow scope is the same"
    );
    let up = export(
        &storage,
        &lineage,
        &Scope::Closure {
            start: vec!["alexnet.otrainedmodel:1".into()],
            direction: Direction::Upstream,
            max_depth: Some(1),
        },
    )
    .await
    .expect("closure");
    let ids: BTreeSet<&str> = up.elements.iter().map(|e| e.id.as_str()).collect();
    assert!(
        ids.contains("alexnet.otrainedmodel:1") && ids.contains("alexnet.itrain:1"),
        "{ids:?}"
    );
    assert!(
        !ids.contains("alexnet.iinputdataset:1"),
        "depth 1 stops early: {ids:?}"
    );
    let err = export(&storage, &lineage, &Scope::Execution("nope".into()))
        .await
        .expect_err("unknown");
    assert!(
        err.to_string().contains("no execution has tag 'nope'"),
        "{err}"
    );
}

#[tokio::test]
async fn export_then_import_into_an_empty_database_gives_the_same_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = reference_run(dir.path()).await;
    let first = export(&storage, &lineage, &Scope::Execution(EXEC.into()))
        .await
        .expect("export");
    let json = render(&first, Format::Json).expect("json");

    let dir2 = tempfile::tempdir().expect("tempdir");
    let (storage2, lineage2) = open(dir2.path()).await;
    let report = import(&storage2, &lineage2, &json[..], &ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(report.relations, first.relations.len());
    assert_eq!(
        report.entities + report.activities + report.agents,
        first.elements.len()
    );
    // The other database's `execution` namespace is not this one's.
    let exec = lineage2
        .graph()
        .find(&format!("execution_1:{EXEC}"))
        .is_some();
    assert!(exec, "ids come back with the original local names");
    let second = export(&storage2, &lineage2, &Scope::All)
        .await
        .expect("export again");
    assert_eq!(canonical(&first), canonical(&second));

    // Importing the same document again changes nothing.
    let before = (
        count(&storage2, "prov", "entity").await,
        count(&storage2, "prov", "relation").await,
    );
    import(&storage2, &lineage2, &json[..], &ImportOptions::default())
        .await
        .expect("re-import");
    let after = (
        count(&storage2, "prov", "entity").await,
        count(&storage2, "prov", "relation").await,
    );
    assert_eq!(before, after);
    let third = export(&storage2, &lineage2, &Scope::All)
        .await
        .expect("export");
    assert_eq!(canonical(&second), canonical(&third));
}

fn generic_document() -> Json {
    json!({
        "prefix": {"ex": "http://example.org/ml#", "default": "urn:run:42/"},
        "entity": {
            "ex:model_v3": {"prov:type": "ex:Model", "ex:params": {"$": "11000000", "type": "xsd:int"},
                            "ex:acc": {"$": 0.913, "type": "xsd:double"}, "prov:label": {"$": "ResNet", "lang": "en"}},
            "ex:cifar10": [{"prov:type": "ex:Dataset"}, {"ex:size": 60000}],
            "ex:checkpoints": {"prov:type": {"$": "prov:Collection", "type": "prov:QUALIFIED_NAME"}},
            "ex:train_script": {}
        },
        "activity": {"ex:train_run": {"prov:startTime": "2025-01-01T10:00:00", "prov:endTime": "2025-01-01T12:00:00"},
                     "ex:eval_run": {}},
        "agent": {"ex:alice": {"prov:type": "prov:Person"}},
        "used": {"_:id1": {"prov:activity": "ex:train_run", "prov:entity": "ex:cifar10", "prov:time": "2025-01-01T10:00:01"}},
        "wasGeneratedBy": {"ex:gen1": {"prov:entity": "ex:model_v3", "prov:activity": "ex:train_run"}},
        "wasDerivedFrom": {"_:id3": {"prov:generatedEntity": "ex:model_v3", "prov:usedEntity": "ex:cifar10"}},
        "wasAssociatedWith": {"_:id4": {"prov:activity": "ex:train_run", "prov:agent": "ex:alice", "prov:plan": "ex:train_script"}},
        "wasInformedBy": {"_:id6": {"prov:informed": "ex:eval_run", "prov:informant": "ex:train_run"}},
        "hadMember": {"_:id7": {"prov:collection": "ex:checkpoints", "prov:entity": "ex:model_v3"}},
        "bundle": {"ex:bundle1": {
            "entity": {"ex:metric_loss": {"ex:last": {"$": "0.05", "type": "xsd:double"}}},
            "wasGeneratedBy": {"_:id1": {"prov:entity": "ex:metric_loss", "prov:activity": "ex:train_run"}}
        }}
    })
}

#[tokio::test]
async fn generic_documents_join_the_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = reference_run(dir.path()).await;
    let mut doc = generic_document();
    // A deployment derived from the DLProv model, named in provdb's namespace.
    let registry = super::namespace::Registry::ensure(&storage)
        .await
        .expect("registry");
    doc["prefix"]["m"] = json!(registry.iri("alexnet.otrainedmodel"));
    doc["entity"]["ex:deployed"] = json!({});
    doc["wasDerivedFrom"]["_:id9"] =
        json!({"prov:generatedEntity": "ex:deployed", "prov:usedEntity": "m:1"});
    let bytes = serde_json::to_vec(&doc).expect("json");
    let report = import(&storage, &lineage, &bytes[..], &ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(report.bundles, 1);
    assert_eq!(
        report.new_namespaces.get("ex").map(String::as_str),
        Some("http://example.org/ml#")
    );
    assert!(
        report.new_namespaces.contains_key("ns_42"),
        "{:?}",
        report.new_namespaces
    );

    {
        let g = lineage.graph();
        let deployed = g.find("ex:deployed").expect("imported node");
        let mut walk = crate::lineage::Traversal::new(
            vec![deployed],
            Direction::Upstream,
            None,
            crate::lineage::KindFilter::all(),
        );
        let mut reached = BTreeSet::new();
        while walk.next_level_into(&g, &mut |s| {
            reached.insert(g.node_text(s.node));
        }) {}
        assert!(reached.contains("alexnet.otrainedmodel:1"), "{reached:?}");
        assert!(
            reached.contains("alexnet.iinputdataset:1"),
            "lineage crosses into DLProv data: {reached:?}"
        );
        assert!(
            g.find("ex:metric_loss").is_some(),
            "bundle records join the graph"
        );
    }

    // A second document binding `ex` to another IRI does not merge with it.
    let other = json!({"prefix": {"ex": "http://other.org/"}, "entity": {"ex:model_v3": {}}});
    let r2 = import(
        &storage,
        &lineage,
        other.to_string().as_bytes(),
        &ImportOptions::default(),
    )
    .await
    .expect("import");
    assert_eq!(
        r2.new_namespaces.get("ex_1").map(String::as_str),
        Some("http://other.org/")
    );
    assert!(lineage.graph().find("ex_1:model_v3").is_some());
}

#[tokio::test]
async fn bad_documents_are_rejected_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let cases: Vec<(String, &str)> = vec![
        ("{\"entity\": {\"ex:a\": {}".into(), "invalid PROV-JSON"),
        (json!({"entity": {"a": {}}, "wasFrobbedBy": {}}).to_string(), "unknown PROV-JSON record type 'wasFrobbedBy'"),
        (json!({"entity": {"a": {}}, "used": {"_:u": {"prov:activity": "b", "prov:entity": "a"}}}).to_string(), "dangling"),
        (json!({"activity": {"b": {}}, "used": {"_:u": {"prov:activity": "b"}}}).to_string(), "prov:entity is missing"),
        (json!({"activity": {"b": {"prov:startTime": "yesterday"}}}).to_string(), "not an xsd:dateTime"),
        (json!({"entity": {"a": "x"}}).to_string(), "expected an object"),
        (json!({"entity": {"a": {"k": {"$": "1", "type": "xsd:int", "odd": 1}}}}).to_string(), "unknown key 'odd'"),
    ];
    for (text, expected) in cases {
        let err = import(
            &storage,
            &lineage,
            text.as_bytes(),
            &ImportOptions::default(),
        )
        .await
        .expect_err(&text);
        assert!(err.to_string().contains(expected), "{text}: {err}");
    }
    assert_eq!(
        count(&storage, "prov", "entity").await,
        0,
        "nothing of a bad document is stored"
    );
    assert_eq!(count(&storage, "prov", "activity").await, 0);
    // The dangling reference is accepted when asked.
    let text =
        json!({"entity": {"a": {}}, "used": {"_:u": {"prov:activity": "b", "prov:entity": "a"}}})
            .to_string();
    let opts = ImportOptions {
        allow_dangling: true,
        ..Default::default()
    };
    import(&storage, &lineage, text.as_bytes(), &opts)
        .await
        .expect("allowed");
    assert_eq!(
        lineage.graph().class(lineage.graph().find("b").expect("b")),
        NodeKind::Activity
    );
}

/// A yProv4ML 3.x run directory: the document and CSV side files, paths
/// relative to `root` as the library writes them. Returns the JSON's path.
pub fn yprov_layout_c(root: &std::path::Path, points: usize) -> std::path::PathBuf {
    let run = root.join("prov/mnist_exp_0");
    std::fs::create_dir_all(run.join("metrics_GR0")).expect("mkdir");
    let mut loss = String::from("epoch,value,timestep\n");
    for i in 0..points {
        loss.push_str(&format!(
            "{},{:?},{}\n",
            i / 5,
            1.0 / (i as f64 + 1.0),
            1795286428387 + i as i64
        ));
    }
    std::fs::write(run.join("metrics_GR0/loss_training_None_GR0.csv"), loss).expect("csv");
    std::fs::write(
        run.join("metrics_GR0/val_acc_validation_None_GR0.csv"),
        "epoch,value,timestep\n0,0.5,1795286428387\n1,0.6,1795286428388\n2,0.7,1795286428389\n",
    )
    .expect("csv");
    let doc = json!({
        "prefix": {"yprov": "https://github.com/HPCI-Lab/yProv4ML", "xsd_1": "http://www.w3.org/2000/10/XMLSchema#",
                   "provml": "prov-ml", "dcterms": "http://purl.org/dc/terms/", "default": "mnist_exp_GR0_0"},
        "agent": {"root": {}},
        "activity": {
            "mnist_exp_GR0_0": {"yprov:experiment_name": "mnist_exp_GR0_0", "yprov:run_id": "0",
                                "prov:startedAtTime": "2026-11-21T18:40:27.386040", "prov:endedAtTime": "2026-11-21T18:40:28.445545"},
            "training": {"prov:startedAtTime": "2026-11-21T18:40:28.386801"},
            "validation": {"prov:startedAtTime": "2026-11-21T18:40:28.386967"}
        },
        "wasAssociatedWith": {"_:id1": {"prov:activity": "mnist_exp_GR0_0", "prov:agent": "root"}},
        "entity": {
            "lr//training": {"prov:type": "provml:HyperParameter", "prov:label": "lr", "prov:value": "0.001", "prov:role": "output"},
            "batch_size//mnist_exp_GR0_0": {"prov:type": "provml:HyperParameter", "prov:label": "batch_size", "prov:value": "64"},
            "mnist_model_final.pt//training": {"prov:label": "mnist_model_final.pt", "prov:type": "provml:Model",
                "dcterms:identifier": "prov/mnist_exp_0/artifacts_GR0/mnist_model_final.pt", "yprov:file_size": "5", "prov:role": "output",
                "yprov:mnist_model_final_total_params": {"$": "0", "type": "xsd:int"}},
            "loss//training": {"prov:type": "provml:Metric", "yprov:context": "training", "yprov:source": "None", "prov:label": "loss",
                "dcterms:identifier": "prov/mnist_exp_0/metrics_GR0/loss_training_None_GR0.csv"},
            "val_acc//validation": {"prov:type": "provml:Metric", "yprov:context": "validation", "yprov:source": "None", "prov:label": "val_acc",
                "dcterms:identifier": "prov/mnist_exp_0/metrics_GR0/val_acc_validation_None_GR0.csv"}
        },
        "wasInformedBy": {"_:id2": {"prov:informed": "training", "prov:informant": "mnist_exp_GR0_0"},
                          "_:id5": {"prov:informed": "validation", "prov:informant": "mnist_exp_GR0_0"}},
        "wasGeneratedBy": {"_:id3": {"prov:entity": "lr//training", "prov:activity": "training"},
                           "_:id13": {"prov:entity": "loss//training", "prov:activity": "training"},
                           "_:id14": {"prov:entity": "val_acc//validation", "prov:activity": "validation"},
                           "_:id8": {"prov:entity": "mnist_model_final.pt//training", "prov:activity": "training"}}
    });
    let path = run.join("prov_mnist_exp_GR0_0.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("json")).expect("write");
    path
}

/// A yProv4ML 2.0 run: contexts with `level`, params as context
/// attributes, CSV side files with the `<name>,<context>,<source>` header.
pub fn yprov_layout_b(root: &std::path::Path) -> std::path::PathBuf {
    let dir = root.join("examples/prov/mnist_exp_0");
    std::fs::create_dir_all(dir.join("metrics")).expect("mkdir");
    std::fs::write(
        dir.join("metrics/MSE_train_Context.TRAINING_GR0.csv"),
        "MSE_train,Context.TRAINING,LoggingItemKind.METRIC\n0,0.9,1760967802176\n1,0.4,1760967803176\n",
    )
    .expect("csv");
    let doc = json!({
        "prefix": {"context": "context", "yProv4ML": "yProv4ML", "xsd_1": "http://www.w3.org/2000/10/XMLSchema#",
                   "prov-ml": "prov-ml", "default": "mnist_exp_GR0_0"},
        "agent": {"deniztas": {}},
        "activity": {
            "context:mnist_exp_GR0_0": {"yProv4ML:level": {"$": 0, "type": "xsd:int"}, "yProv4ML:experiment_name": "mnist_exp_GR0_0",
                "yProv4ML:run_id": {"$": 0, "type": "xsd:int"}, "execution_start_time": "1760967802.1765888",
                "execution_end_time": "1760967823.3111053"},
            "context:Context.TRAINING": {"yProv4ML:level": {"$": 1, "type": "xsd:int"}, "yProv4ML:lr": {"$": 0.01, "type": "xsd:double"}}
        },
        "wasAssociatedWith": {"_:id1": {"prov:activity": "context:mnist_exp_GR0_0", "prov:agent": "deniztas"}},
        "wasInformedBy": {"_:id2": {"prov:informed": "context:Context.TRAINING", "prov:informant": "context:mnist_exp_GR0_0"}},
        "entity": {
            "MSE_train": {"yProv4ML:label": "MSE_train", "yProv4ML:path": "examples/prov/mnist_exp_0/metrics/MSE_train_Context.TRAINING_GR0.csv",
                          "yProv4ML:role": "output", "yProv4ML:context": "Context.TRAINING", "yProv4ML:source": "LoggingItemKind.METRIC"},
            "mnist_model_final": {"yProv4ML:label": "mnist_model_final", "yProv4ML:path": "examples/prov/mnist_exp_0/artifacts/m.pth",
                                  "yProv4ML:role": "output", "total_params": {"$": 203530, "type": "xsd:int"}},
            "Original requirements.txt": {}, "requirements.txt": {}
        },
        "wasGeneratedBy": {"_:id23": {"prov:entity": "MSE_train", "prov:activity": "context:Context.TRAINING"}},
        "wasDerivedFrom": {"_:id18": {"prov:generatedEntity": "requirements.txt", "prov:usedEntity": "Original requirements.txt"}}
    });
    let path = dir.join("prov_mnist_exp_GR0_0.json");
    std::fs::write(&path, serde_json::to_vec(&doc).expect("json")).expect("write");
    path
}

/// A yProv4ML 1.0 document: metric series inline as Python list strings.
pub fn yprov_layout_a(points: usize) -> String {
    let epochs: Vec<String> = (0..points).map(|i| (i / 5).to_string()).collect();
    let values: Vec<String> = (0..points)
        .map(|i| format!("np.float64({:?})", 1.0 / (i as f64 + 1.0)))
        .collect();
    let stamps: Vec<String> = (0..points)
        .map(|i| (1795286445291i64 + i as i64).to_string())
        .collect();
    json!({
        "prefix": {"xsd_1": "http://www.w3.org/2000/10/XMLSchema#", "prov-ml": "prov-ml", "default": "www.example.org"},
        "entity": {
            "mnist_exp_GR0": [{"prov-ml:run_id": "0", "prov-ml:type": "LearningStage"},
                              {"prov-ml:type": "Experiment", "prov-ml:experiment_name": "mnist_exp_GR0"}],
            "loss_Context.TRAINING": {"prov-ml:type": "Metric", "prov-ml:name": "loss", "prov-ml:context": "Context.TRAINING",
                "prov-ml:source": "", "prov-ml:metric_epoch_list": format!("[{}]", epochs.join(", ")),
                "prov-ml:metric_value_list": format!("[{}]", values.join(", ")),
                "prov-ml:metric_timestamp_list": format!("[{}]", stamps.join(", "))},
            "lr": {"prov-ml:parameter_value": "0.001", "prov-ml:type": "Parameter"}
        },
        "activity": {"mnist_exp_GR0_execution": {"prov-ml:type": "LearningExecution"}, "epoch_0": {"prov-ml:type": "TrainingExecution"}},
        "agent": {"root": {}},
        "wasAssociatedWith": {"_:id1": {"prov:activity": "mnist_exp_GR0_execution", "prov:agent": "root"}},
        "used": {"_:id12": {"prov:activity": "mnist_exp_GR0_execution", "prov:entity": "lr"}},
        "hadMember": {"_:id3": {"prov:collection": "mnist_exp_GR0", "prov:entity": "mnist_exp_GR0"}},
        "wasGeneratedBy": {"loss_train_0_gen": {"prov:entity": "loss_Context.TRAINING", "prov:activity": "epoch_0"}},
        "wasStartedBy": {"_:id5": {"prov:activity": "epoch_0", "prov:trigger": "mnist_exp_GR0_execution"}}
    })
    .to_string()
}

async fn ml_text(storage: &Storage, table: &str, col: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in live_batches(storage, "ml", table).await.expect("read") {
        let c = super::cells::column(&b, col).expect("column");
        for i in 0..b.num_rows() {
            out.push(super::cells::str_at(c, i).unwrap_or("NULL").to_string());
        }
    }
    out.sort();
    out
}

fn opts_for(path: &std::path::Path) -> ImportOptions {
    ImportOptions {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        base_dir: path.parent().map(|p| p.to_path_buf()),
        allow_dangling: false,
    }
}

#[tokio::test]
async fn yprov_layout_c_runs_land_in_ml_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let files = tempfile::tempdir().expect("files");
    let path = yprov_layout_c(files.path(), 15);
    let report = import(
        &storage,
        &lineage,
        std::fs::File::open(&path).expect("open"),
        &opts_for(&path),
    )
    .await
    .expect("import");
    assert_eq!(report.layout.as_deref(), Some("C"));
    assert_eq!(
        report.run.as_deref(),
        Some("mnist_exp_GR0_0:mnist_exp_GR0_0")
    );
    assert_eq!(
        (
            report.params,
            report.series,
            report.metric_points,
            report.artifacts
        ),
        (2, 2, 18, 1)
    );
    assert_eq!(
        ml_text(&storage, "param", "name").await,
        vec!["batch_size", "lr"]
    );
    assert_eq!(
        ml_text(&storage, "param", "context").await,
        vec!["mnist_exp_GR0_0", "training"]
    );
    assert_eq!(ml_text(&storage, "run", "user_name").await, vec!["root"]);
    assert_eq!(count(&storage, "ml", "metric").await, 18);
    // The bogus XSD namespace maps to the real one; ids get the default prefix.
    assert!(
        lineage
            .graph()
            .find("mnist_exp_GR0_0:lr//training")
            .is_some()
    );

    // Same document again: nothing new, and no wait for the points table
    // (another writer holds it here). Longer series: only the new points.
    let metric = storage.table_by_name("ml", "metric").expect("ml.metric");
    let held = storage.write_lock(metric.id).lock_owned().await;
    let again = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        import(
            &storage,
            &lineage,
            std::fs::File::open(&path).expect("open"),
            &opts_for(&path),
        ),
    )
    .await
    .expect("a re-import adding no point does not lock ml.metric")
    .expect("re-import");
    drop(held);
    assert_eq!(again.metric_points, 0);
    assert_eq!(count(&storage, "ml", "metric").await, 18);
    let path = yprov_layout_c(files.path(), 20);
    let more = import(
        &storage,
        &lineage,
        std::fs::File::open(&path).expect("open"),
        &opts_for(&path),
    )
    .await
    .expect("continued run");
    assert_eq!(more.metric_points, 5);
    assert_eq!(count(&storage, "ml", "metric").await, 23);

    // Rewritten history is a conflict, and nothing of the document is stored.
    let csv = path
        .parent()
        .expect("dir")
        .join("metrics_GR0/loss_training_None_GR0.csv");
    std::fs::write(&csv, "epoch,value,timestep\n0,9.0,1\n").expect("rewrite");
    let err = import(
        &storage,
        &lineage,
        std::fs::File::open(&path).expect("open"),
        &opts_for(&path),
    )
    .await
    .expect_err("conflict");
    assert!(
        err.to_string()
            .contains("imported before with other points"),
        "{err}"
    );
    // A missing side file names the entity and the file.
    std::fs::remove_file(&csv).expect("rm");
    let err = import(
        &storage,
        &lineage,
        std::fs::File::open(&path).expect("open"),
        &opts_for(&path),
    )
    .await
    .expect_err("missing");
    assert!(
        err.to_string()
            .contains("'mnist_exp_GR0_0:loss//training': side file"),
        "{err}"
    );
    assert_eq!(count(&storage, "ml", "metric").await, 23);
}

/// Files of a table's segments in the local store.
fn segment_files(dir: &std::path::Path, storage: &Storage, table: &str) -> usize {
    let id = storage.table_by_name("ml", table).expect("table").id;
    let path = dir.join("segments/tables").join(id.0.to_string());
    std::fs::read_dir(path).map_or(0, |d| d.count())
}

#[tokio::test]
async fn many_metric_points_are_staged_to_parquet_and_attached_by_the_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    // Past two chunks of METRIC_CHUNK_ROWS: the first two chunks are
    // written to a staged segment (STAGED_SEGMENT_ROWS is two chunks in
    // unit tests) while the document is imported, attached by its one
    // commit; the 17 left over are logged in an insert op.
    let points = 2 * super::import::METRIC_CHUNK_ROWS + 17;
    let a = yprov_layout_a(points);
    let r = import(&storage, &lineage, a.as_bytes(), &ImportOptions::default())
        .await
        .expect("layout A");
    assert_eq!(r.metric_points, points);
    assert_eq!(count(&storage, "ml", "metric").await, points);
    let metric = storage.table_by_name("ml", "metric").expect("metric").id;
    let snap = storage.snapshot(metric).expect("snapshot");
    let rows: Vec<u64> = snap.segments.iter().map(|g| g.file.meta.rows).collect();
    assert_eq!(rows, [super::import::STAGED_SEGMENT_ROWS]);
    let buffered: usize = snap
        .memtables
        .iter()
        .flat_map(|m| &m.batches)
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(buffered, 17);
    drop(snap);
    let again = import(&storage, &lineage, a.as_bytes(), &ImportOptions::default())
        .await
        .expect("again");
    assert_eq!(again.metric_points, 0);
    assert_eq!(count(&storage, "ml", "metric").await, points);
    // No clean close: the attach is replayed from the log.
    drop(lineage);
    drop(storage);
    let (storage, _lineage) = open(dir.path()).await;
    assert_eq!(count(&storage, "ml", "metric").await, points);
    assert_eq!(segment_files(dir.path(), &storage, "metric"), 1);
}

#[tokio::test]
async fn a_failed_import_leaves_no_staged_points_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let first = yprov_layout_a(3);
    import(
        &storage,
        &lineage,
        first.as_bytes(),
        &ImportOptions::default(),
    )
    .await
    .expect("first");
    // A new series large enough to be staged, then the stored series
    // with other points: a conflict once the new points are on disk.
    let mut doc: Json = serde_json::from_str(&yprov_layout_a(3)).expect("json");
    let big: Json =
        serde_json::from_str(&yprov_layout_a(2 * super::import::METRIC_CHUNK_ROWS)).expect("json");
    let mut acc = big["entity"]["loss_Context.TRAINING"].clone();
    acc["prov-ml:name"] = json!("acc");
    doc["entity"]["acc_Context.TRAINING"] = acc;
    doc["entity"]["loss_Context.TRAINING"]["prov-ml:metric_value_list"] = json!("[9.0, 9.0, 9.0]");
    let err = import(
        &storage,
        &lineage,
        doc.to_string().as_bytes(),
        &ImportOptions::default(),
    )
    .await
    .expect_err("conflict");
    assert!(
        err.to_string()
            .contains("imported before with other points"),
        "{err}"
    );
    assert_eq!(count(&storage, "ml", "metric").await, 3);
    assert_eq!(
        segment_files(dir.path(), &storage, "metric"),
        1,
        "a staged segment was finished before the conflict"
    );
    provdb_storage::maintenance::collect_garbage(&storage)
        .await
        .expect("gc");
    assert_eq!(segment_files(dir.path(), &storage, "metric"), 0);
}

#[tokio::test]
async fn yprov_layouts_a_and_b_are_read_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (storage, lineage) = open(dir.path()).await;
    let files = tempfile::tempdir().expect("files");
    let b = yprov_layout_b(files.path());
    let rb = import(
        &storage,
        &lineage,
        std::fs::File::open(&b).expect("open"),
        &opts_for(&b),
    )
    .await
    .expect("layout B");
    assert_eq!(rb.layout.as_deref(), Some("B"));
    assert_eq!(
        (rb.params, rb.series, rb.metric_points, rb.artifacts),
        (1, 1, 2, 1)
    );
    assert!(
        lineage
            .graph()
            .find("mnist_exp_GR0_0:Original requirements.txt")
            .is_some()
    );

    let a = yprov_layout_a(200);
    let ra = import(&storage, &lineage, a.as_bytes(), &ImportOptions::default())
        .await
        .expect("layout A");
    assert_eq!(ra.layout.as_deref(), Some("A"));
    assert_eq!((ra.params, ra.series, ra.metric_points), (1, 1, 200));
    assert_eq!(count(&storage, "ml", "metric").await, 202);
    // The list strings are columns now, not attributes.
    let doc = export(&storage, &lineage, &Scope::All)
        .await
        .expect("export");
    let loss = doc
        .elements
        .iter()
        .find(|e| e.id.ends_with("loss_Context.TRAINING"))
        .expect("metric entity");
    assert!(
        loss.attrs
            .iter()
            .all(|(k, _)| !k.contains("metric_value_list"))
    );
    // Self-membership and the repeated id survive.
    assert!(
        doc.relations
            .iter()
            .any(|r| r.spec.name == "hadMember" && r.subject() == r.object())
    );

    let bad = yprov_layout_a(3).replace("np.float64(0.5)", "oops");
    let err = import(
        &storage,
        &lineage,
        bad.as_bytes(),
        &ImportOptions::default(),
    )
    .await
    .expect_err("bad list");
    assert!(err.to_string().contains("'oops' is not a number"), "{err}");
}
