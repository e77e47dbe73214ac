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
    drop(g);

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
