"""PROV interoperability checks for provdb's integration tests, using the
W3C PROV reference implementation (the `prov` package, 3.x).

  prov_check.py validate DOC.json DOC.provn   read both (warnings are errors),
                                              check they hold the same records
  prov_check.py every-type OUT.json           write a document with every
                                              PROV record type and a bundle
  prov_check.py covers ORIGINAL.json EXPORT.json
                                              every record of ORIGINAL is in
                                              EXPORT (same ids, same values)
  prov_check.py yprov DIR                     write yProv4ML-shaped runs of
                                              the three layouts under DIR
"""

import datetime
import json
import os
import sys
import warnings

warnings.simplefilter("error")  # any warning from prov fails the check

import prov  # noqa: E402
from prov.identifier import QualifiedName  # noqa: E402
from prov.model import Literal, ProvDocument  # noqa: E402


def read(path):
    fmt = "provn" if path.endswith(".provn") else "json"
    with open(path, encoding="utf-8") as f:
        return prov.read(f, format=fmt)


def norm(v):
    if isinstance(v, QualifiedName):
        return ("qname", v.uri)
    if isinstance(v, Literal):
        return ("literal", v.value, v.datatype.uri if v.datatype else None, v.langtag)
    if isinstance(v, datetime.datetime):
        return ("time", v.isoformat())
    return (type(v).__name__, str(v))


def key(rec):
    ident = rec.identifier.uri if rec.identifier else None
    formal = tuple(sorted((k.uri, norm(v)) for k, v in rec.formal_attributes if v is not None))
    return (rec.get_type().uri, ident, formal if ident is None or not rec.is_element() else ())


def attrs(rec):
    return {(k.uri, norm(v)) for k, v in rec.attributes}


def records(doc):
    out = {}
    for rec in doc.flattened().unified().get_records():
        out.setdefault(key(rec), set()).update(attrs(rec))
    return out


def validate(paths):
    docs = [read(p) for p in paths]
    n = len(docs[0].get_records())
    if n == 0:
        sys.exit(f"{paths[0]}: no records")
    for p, d in zip(paths[1:], docs[1:]):
        if d != docs[0]:
            a, b = records(docs[0]), records(d)
            sys.exit(f"{paths[0]} and {p} differ: only in first {sorted(set(a) - set(b))[:5]}, "
                     f"only in second {sorted(set(b) - set(a))[:5]}")
    print(f"ok: {n} records, {len(paths)} documents agree")


def every_type(out):
    d = ProvDocument()
    d.set_default_namespace("urn:test:default/")
    ex = d.add_namespace("ex", "http://example.org/ml#")
    d.entity("ex:model", {"prov:type": ex["Model"], "ex:params": 11000000, "ex:acc": 0.913,
                          "prov:label": Literal("ResNet", langtag="en"), "ex:ok": True})
    d.entity("ex:data", {"prov:type": ex["Dataset"], "ex:rows": 60000})
    d.entity("ex:model_v2")
    d.entity("ex:model_general")
    d.entity("ex:alt")
    d.entity("ex:checkpoints", {"prov:type": "prov:Collection"})
    d.entity("ex:script", {"prov:type": "prov:Plan"})
    d.activity("ex:train", datetime.datetime(2025, 1, 1, 10, 0, 0), datetime.datetime(2025, 1, 1, 12, 0, 0),
               {"ex:lr": 0.001})
    d.activity("ex:eval")
    d.activity("ex:launcher")
    d.agent("ex:alice", {"prov:type": "prov:Person"})
    d.agent("ex:lab", {"prov:type": "prov:Organization"})
    d.used("ex:train", "ex:data", datetime.datetime(2025, 1, 1, 10, 0, 1))
    d.wasGeneratedBy("ex:model", "ex:train", datetime.datetime(2025, 1, 1, 12, 0, 0), identifier="ex:gen1")
    d.wasInformedBy("ex:eval", "ex:train")
    d.wasStartedBy("ex:train", "ex:data", "ex:launcher", datetime.datetime(2025, 1, 1, 10, 0, 0))
    d.wasEndedBy("ex:train", "ex:data", "ex:launcher", datetime.datetime(2025, 1, 1, 12, 0, 0))
    d.wasInvalidatedBy("ex:model_v2", "ex:eval", datetime.datetime(2025, 1, 2, 0, 0, 0))
    d.wasDerivedFrom("ex:model", "ex:data", "ex:train", other_attributes={"prov:type": "prov:Revision"})
    d.wasAttributedTo("ex:model", "ex:alice")
    d.wasAssociatedWith("ex:train", "ex:alice", "ex:script", {"prov:role": "trainer"})
    d.actedOnBehalfOf("ex:alice", "ex:lab", "ex:train")
    d.wasInfluencedBy("ex:eval", "ex:alice")
    d.alternateOf("ex:model", "ex:alt")
    d.specializationOf("ex:model_v2", "ex:model_general")
    d.hadMember("ex:checkpoints", "ex:model")
    b = d.bundle("ex:bundle1")
    b.entity("ex:metric_loss", {"ex:last": 0.05})
    b.wasGeneratedBy("ex:metric_loss", "ex:train")
    d.mentionOf("ex:model_v2", "ex:metric_loss", "ex:bundle1")
    d.serialize(out, indent=2)


def covers(original, exported):
    a, b = records(read(original)), records(read(exported))
    missing = [k for k in a if k not in b]
    if missing:
        sys.exit(f"records of {original} missing from {exported}: {missing[:5]}")
    lost = [(k, a[k] - b[k]) for k in a if not a[k] <= b[k]]
    if lost:
        sys.exit(f"attributes lost: {lost[:5]}")
    print(f"ok: all {len(a)} records of {original} are in {exported}")


def yprov(root):
    # Layout C (yprov4ml 3.x): side files named relative to the working dir.
    run = os.path.join(root, "c", "prov", "exp_0")
    os.makedirs(os.path.join(run, "metrics_GR0"), exist_ok=True)
    with open(os.path.join(run, "metrics_GR0", "loss_training_None_GR0.csv"), "w") as f:
        f.write("epoch,value,timestep\n")
        for i in range(100):
            f.write(f"{i // 10},{1.0 / (i + 1)!r},{1795286428387 + i}\n")
    c = {
        "prefix": {"yprov": "https://github.com/HPCI-Lab/yProv4ML", "xsd_1": "http://www.w3.org/2000/10/XMLSchema#",
                   "provml": "prov-ml", "dcterms": "http://purl.org/dc/terms/", "default": "exp_GR0_0"},
        "agent": {"root": {}},
        "activity": {"exp_GR0_0": {"yprov:experiment_name": "exp_GR0_0", "yprov:run_id": "0",
                                   "prov:startedAtTime": "2026-11-21T18:40:27.386040"},
                     "training": {"prov:startedAtTime": "2026-11-21T18:40:28.386801"}},
        "wasAssociatedWith": {"_:id1": {"prov:activity": "exp_GR0_0", "prov:agent": "root"}},
        "wasInformedBy": {"_:id2": {"prov:informed": "training", "prov:informant": "exp_GR0_0"}},
        "entity": {"lr//training": {"prov:type": "provml:HyperParameter", "prov:label": "lr", "prov:value": "0.001"},
                   "loss//training": {"prov:type": "provml:Metric", "yprov:context": "training", "prov:label": "loss",
                                      "dcterms:identifier": "prov/exp_0/metrics_GR0/loss_training_None_GR0.csv"}},
        "wasGeneratedBy": {"_:id3": {"prov:entity": "loss//training", "prov:activity": "training"},
                           "_:id4": {"prov:entity": "lr//training", "prov:activity": "training"}},
    }
    with open(os.path.join(run, "prov_exp_GR0_0.json"), "w") as f:
        json.dump(c, f, indent=1)
    # Layout B (2.0.x): contexts with levels, CSV header <name>,<context>,<source>.
    brun = os.path.join(root, "b", "examples", "prov", "exp_0")
    os.makedirs(os.path.join(brun, "metrics"), exist_ok=True)
    with open(os.path.join(brun, "metrics", "acc_Context.TRAINING_GR0.csv"), "w") as f:
        f.write("acc,Context.TRAINING,LoggingItemKind.METRIC\n0,0.5,1760967802176\n1,0.75,1760967803176\n")
    b = {
        "prefix": {"context": "context", "yProv4ML": "yProv4ML", "default": "exp_b_GR0_0"},
        "agent": {"bob": {}},
        "activity": {"context:exp_b_GR0_0": {"yProv4ML:level": {"$": 0, "type": "xsd:int"},
                                             "yProv4ML:experiment_name": "exp_b_GR0_0"},
                     "context:Context.TRAINING": {"yProv4ML:level": {"$": 1, "type": "xsd:int"},
                                                  "yProv4ML:batch_size": {"$": 64, "type": "xsd:int"}}},
        "wasAssociatedWith": {"_:id1": {"prov:activity": "context:exp_b_GR0_0", "prov:agent": "bob"}},
        "entity": {"acc": {"yProv4ML:label": "acc", "yProv4ML:context": "Context.TRAINING",
                           "yProv4ML:path": "examples/prov/exp_0/metrics/acc_Context.TRAINING_GR0.csv"}},
        "wasGeneratedBy": {"_:id2": {"prov:entity": "acc", "prov:activity": "context:Context.TRAINING"}},
    }
    with open(os.path.join(brun, "prov_exp_b_GR0_0.json"), "w") as f:
        json.dump(b, f)
    # Layout A (<= 1.0): inline Python list strings.
    os.makedirs(os.path.join(root, "a"), exist_ok=True)
    n = 50
    a = {
        "prefix": {"prov-ml": "prov-ml", "default": "www.example.org"},
        "entity": {"val_loss_Context.VALIDATION": {
            "prov-ml:type": "Metric", "prov-ml:name": "val_loss", "prov-ml:context": "Context.VALIDATION",
            "prov-ml:metric_epoch_list": str(list(range(n))),
            "prov-ml:metric_value_list": "[" + ", ".join(f"np.float64({1 / (i + 2)!r})" for i in range(n)) + "]",
            "prov-ml:metric_timestamp_list": str([1795286445291 + i for i in range(n)])},
            "lr": {"prov-ml:type": "Parameter", "prov-ml:parameter_value": "0.01"}},
        "activity": {"exp_a_GR0_execution": {"prov-ml:type": "LearningExecution"}},
        "agent": {"carol": {}},
        "wasAssociatedWith": {"_:id1": {"prov:activity": "exp_a_GR0_execution", "prov:agent": "carol"}},
        "used": {"_:id2": {"prov:activity": "exp_a_GR0_execution", "prov:entity": "lr"}},
    }
    with open(os.path.join(root, "a", "prov_exp_a.json"), "w") as f:
        json.dump(a, f)
    print("ok")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"validate": lambda: validate(args), "every-type": lambda: every_type(args[0]),
     "covers": lambda: covers(args[0], args[1]), "yprov": lambda: yprov(args[0])}[cmd]()


if __name__ == "__main__":
    main()
