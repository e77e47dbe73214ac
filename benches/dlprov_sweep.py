"""A deterministic hyperparameter sweep of DLProv's `alexnet` dataflow, as
the DfAnalyzer Python client would post it: one execution per run
(loaddata -> applyfilter -> splitdata -> train -> test), per-epoch `otrain`
rows. The same shape as `tests/tests/it/lineage.rs` generates, so the
queries of docs/queries.md apply.

Used by benches/lineage.py (Q10 latency over a large sweep)."""

import json

OPTIMIZERS = ["adam", "sgd", "rmsprop"]
RATES = [0.001, 0.01, 0.1, 0.05]
FILTERS = ["grayscale", "sobel"]
EMAILS = ["alice@lab.org", "bob@lab.org"]
HOSTS = ["gpu-a", "gpu-b", "cpu-c"]


def spec_path(root):
    return f"{root}/tests/fixtures/dlprov/alexnet-spec.json"


def model_dir(k):
    return f"/models/alexnet-sweep-{k}.keras"


def run_messages(k, epochs=None):
    """The task messages of run `k` of the sweep."""
    exec_tag = f"alexnet-sweep-{k}"
    opt, lr = OPTIMIZERS[k % 3], RATES[(k // 3) % 4]
    batch, layers = 16 << (k % 2), 4 + k % 4
    epochs = epochs if epochs is not None else 3 + k % 4
    flt, email, host = FILTERS[k % 2], EMAILS[(k // 2) % 2], HOSTS[k % 3]

    def base(dt, tid, status):
        return {"tag": dt, "first": "0", "dataflow": "alexnet", "email": email,
                "exec": exec_tag, "status": status, "transformation": dt, "id": str(tid)}

    def dep(tags, ids):
        return {"tags": [{"tag": t} for t in tags], "ids": [{"id": str(i)} for i in ids]}

    def loss(e):
        return 2.0 / (1.0 + lr * 100.0 * e) + k * 0.001

    out = []
    m = base("loaddata", 1, "RUNNING")
    m["first"] = "1"
    m["hardware"] = json.dumps({"hostname": host, "os": "Linux", "gpus": "A100",
                                "in_container": False})
    m["sets"] = [{"tag": "iinputdataset", "elements": [["flowers17", "http://x/17flowers.tgz"]]}]
    out.append(m)
    m = base("loaddata", 1, "FINISHED")
    m["sets"] = [{"tag": "oloaddata", "elements": [["raw.npy"]]}]
    out.append(m)
    m = base("applyfilter", 2, "RUNNING")
    m["dependency"] = dep(["loaddata"], [1])
    m["sets"] = [{"tag": "ifilter", "elements": [[flt]]}]
    out.append(m)
    m = base("applyfilter", 2, "FINISHED")
    m["dependency"] = dep(["loaddata"], [1])
    m["sets"] = [{"tag": "ofilter", "elements": [[f"{flt}.npy"]]}]
    out.append(m)
    m = base("splitdata", 3, "RUNNING")
    m["dependency"] = dep(["applyfilter"], [2])
    m["sets"] = [{"tag": "isplitconfig", "elements": [["0.7", "0.15", "0.15"]]}]
    out.append(m)
    m = base("splitdata", 3, "FINISHED")
    m["dependency"] = dep(["applyfilter"], [2])
    m["sets"] = [
        {"tag": "otrainset", "elements": [[f"x_train_{flt}.npy", "y_train.npy"]]},
        {"tag": "ovalset", "elements": [["x_val.npy", "y_val.npy"]]},
        {"tag": "otestset", "elements": [["x_test.npy", "y_test.npy"]]},
    ]
    out.append(m)
    m = base("train", 4, "RUNNING")
    m["dependency"] = dep(["splitdata"], [3])
    m["sets"] = [{"tag": "itrain", "elements": [[opt, str(lr), str(epochs), str(batch),
                                                 str(layers)]]}]
    out.append(m)
    rows = []
    for e in range(1, epochs + 1):
        acc = 1.0 - loss(e) / 2.5
        rows.append([f"2025-07-10 21:{e % 60:02d}:00", str(1.0 + 0.01 * e), str(loss(e)),
                     str(acc), str(loss(e) * 1.1), str(acc * 0.9), str(e)])
    m = base("train", 4, "RUNNING")
    m["sets"] = [{"tag": "otrain", "elements": rows}]
    out.append(m)
    m = base("train", 4, "FINISHED")
    m["sets"] = [{"tag": "otrainedmodel", "elements": [["alexnet", model_dir(k)]]}]
    out.append(m)
    test_acc = 0.5 + lr + k * 0.0001
    m = base("test", 5, "FINISHED")
    m["dependency"] = dep(["splitdata", "train"], [3, 4])
    m["sets"] = [{"tag": "otest", "elements": [[str(1.0 - test_acc), str(test_acc)]]}]
    out.append(m)
    return out


def question(root, n):
    """The SQL of question Qn in docs/queries.md."""
    text = open(f"{root}/docs/queries.md").read()
    for block in text.split("```sql")[1:]:
        body = block.split("```")[0].strip()
        if body.startswith(f"-- Q{n}:"):
            return body
    raise KeyError(f"Q{n} not in docs/queries.md")
