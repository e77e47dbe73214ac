"""The DLProv workload (issue 6): a deterministic hyperparameter sweep of
DLProv's predefined `alexnet` dataflow (loaddata -> applyfilter -> splitdata
-> train -> test), as the DfAnalyzer Python client posts it.

Scale 1 is 10,000 executions of 100 epochs (1,000,000 `otrain` rows). Every
execution is generated from (seed, k) alone, so any run can be produced on
its own (the live simulation does) and two calls give the same messages.

- Configurations cycle through 4 optimizers x 5 learning rates x 4 batch
  sizes x 6 layer counts x 4 preprocessing filters (1,920 combinations);
  scientists (5) and hardware (4 machines) are drawn per run.
- Training curves depend on the configuration plus seeded noise; epoch
  times on the batch size and layer count.
- The last 1% of executions (at least 2) are still training: no model, no
  test, a random number of epochs so far; a fifth of them stalled (their
  last epoch is minutes older than the others'). Every other execution
  finished before `now()` of the data set, which monitoring queries use.

The spec is tests/fixtures/dlprov/alexnet-spec.json; `messages(k)` yields
the task messages of run k in the order the client posts them, one `otrain`
message per epoch as DLProv's Keras callback sends.
"""

import datetime
import json
import math
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_PATH = os.path.join(ROOT, "tests/fixtures/dlprov/alexnet-spec.json")

OPTIMIZERS = ["adam", "sgd", "rmsprop", "adagrad"]
RATES = [0.1, 0.05, 0.01, 0.005, 0.001]
BATCHES = [16, 32, 64, 128]
LAYERS = [3, 4, 5, 6, 7, 8]
FILTERS = ["grayscale", "sobel", "gaussian", "equalize"]
SCIENTISTS = ["ana@lab.org", "bruno@lab.org", "carla@lab.org", "davi@lab.org",
              "eva@lab.org"]
HARDWARE = [
    {"hostname": "gpu-node-1", "os": "Linux", "platform": "Linux-6.1-x86_64",
     "architecture": "x86_64", "processor": "AMD EPYC 7763", "gpus": "NVIDIA A100",
     "in_container": False},
    {"hostname": "gpu-node-2", "os": "Linux", "platform": "Linux-6.1-x86_64",
     "architecture": "x86_64", "processor": "AMD EPYC 7763", "gpus": "NVIDIA A100",
     "in_container": True},
    {"hostname": "gpu-node-3", "os": "Linux", "platform": "Linux-5.15-x86_64",
     "architecture": "x86_64", "processor": "Intel Xeon Gold 6338", "gpus": "NVIDIA H100",
     "in_container": True},
    {"hostname": "workstation", "os": "Linux", "platform": "Linux-6.5-x86_64",
     "architecture": "x86_64", "processor": "Intel Core i9-13900K", "gpus": "NVIDIA RTX 4090",
     "in_container": False},
]
EPOCHS = 100
T0 = datetime.datetime(2025, 7, 1)
START_SPACING_S = 37


def executions(scale):
    return max(10, round(10_000 * scale))


class Workload:
    """The sweep of `n` executions with seed `seed`."""

    def __init__(self, n, seed=42):
        self.n, self.seed = n, seed
        self.running = max(2, round(n * 0.01))
        # every finished run ends before `now` (at most 100 epochs of 11 s)
        self.now = T0 + datetime.timedelta(seconds=n * START_SPACING_S + 2000)

    def run(self, k):
        return Run(self, k)

    def messages(self, k):
        return self.run(k).messages()


def fmt(x):
    return f"{x:.6f}"


def stamp(t):
    return t.strftime("%Y-%m-%d %H:%M:%S")


class Run:
    """Execution k: its configuration, curve and timestamps."""

    def __init__(self, w, k):
        rng = random.Random(w.seed * 1_000_003 + k)
        self.k = k
        self.tag = f"alexnet-{k:06d}"
        self.optimizer = OPTIMIZERS[k % 4]
        self.lr = RATES[(k // 4) % 5]
        self.batch = BATCHES[(k // 20) % 4]
        self.layers = LAYERS[(k // 80) % 6]
        self.filter = FILTERS[(k // 480) % 4]
        self.email = SCIENTISTS[rng.randrange(len(SCIENTISTS))]
        self.hardware = HARDWARE[rng.randrange(len(HARDWARE))]
        self.model_dir = f"/models/{self.tag}.keras"
        quality = {"adam": 0.9, "rmsprop": 0.87, "sgd": 0.82, "adagrad": 0.8}[self.optimizer]
        quality -= abs(math.log10(self.lr) + 2.3) * 0.05 + abs(self.layers - 5.5) * 0.01
        self.final_acc = min(0.99, max(0.3, quality + rng.gauss(0, 0.02)))
        self.tau = 8 + rng.random() * 20
        epoch_s = 2 + self.layers * 0.5 + 64 / self.batch
        self.elapsed = [epoch_s * (0.9 + 0.2 * rng.random()) for _ in range(EPOCHS)]
        self.noise = [(rng.gauss(0, 0.01), rng.gauss(0, 0.015)) for _ in range(EPOCHS)]
        self.finished = k < w.n - w.running
        if self.finished:
            self.epochs = EPOCHS
            self.start = T0 + datetime.timedelta(seconds=k * START_SPACING_S)
            self.test = (rng.gauss(0, 0.02), rng.gauss(0, 0.02))
        else:
            self.epochs = rng.randint(5, 95)
            stalled = rng.random() < 0.2
            gap = 120 + rng.random() * 480 if stalled else rng.random() * 20
            last = w.now - datetime.timedelta(seconds=gap)
            self.start = last - datetime.timedelta(seconds=sum(self.elapsed[:self.epochs]) + 5)
            self.test = None

    def epoch_row(self, e):
        """The `otrain` element of epoch e (1-based; the live simulation
        goes on past EPOCHS, repeating the per-epoch noise)."""
        i = (e - 1) % EPOCHS
        acc = self.final_acc * (1 - math.exp(-e / self.tau)) + self.noise[i][0]
        loss = max(0.01, 2.3 * (1 - acc) + self.noise[i][1])
        done = sum(self.elapsed[:e]) if e <= EPOCHS else sum(self.elapsed) * e / EPOCHS
        t = self.start + datetime.timedelta(seconds=5 + done)
        return [stamp(t), fmt(self.elapsed[i]), fmt(loss), fmt(acc),
                fmt(loss * 1.08 + 0.02), fmt(acc * 0.97 - 0.01), str(e)]

    def base(self, dt, tid, status, dep=None):
        m = {"tag": dt, "first": "0", "dataflow": "alexnet", "email": self.email,
             "exec": self.tag, "status": status, "transformation": dt, "id": str(tid)}
        if dep:
            m["dependency"] = {"tags": [{"tag": t} for t, _ in dep],
                               "ids": [{"id": str(i)} for _, i in dep]}
        return m

    def finish(self, m, at):
        m["performances"] = [{"startTime": stamp(self.start), "endTime": stamp(at)}]
        return m

    def preamble(self):
        """Messages up to the train task's start (with its hyperparameters)."""
        t = self.start + datetime.timedelta(seconds=5)
        m = self.base("loaddata", 1, "RUNNING")
        m["first"] = "1"
        m["hardware"] = json.dumps(self.hardware)
        m["sets"] = [{"tag": "iinputdataset",
                      "elements": [["flowers17", "http://data.example/17flowers.tgz"]]}]
        out = [m]
        m = self.finish(self.base("loaddata", 1, "FINISHED"), t)
        m["sets"] = [{"tag": "oloaddata", "elements": [["data/raw_images.npy"]]}]
        out.append(m)
        m = self.base("applyfilter", 2, "RUNNING", [("loaddata", 1)])
        m["sets"] = [{"tag": "ifilter", "elements": [[self.filter]]}]
        out.append(m)
        m = self.finish(self.base("applyfilter", 2, "FINISHED", [("loaddata", 1)]), t)
        m["sets"] = [{"tag": "ofilter", "elements": [[f"data/x_{self.filter}.npy"]]}]
        out.append(m)
        m = self.base("splitdata", 3, "RUNNING", [("applyfilter", 2)])
        m["sets"] = [{"tag": "isplitconfig", "elements": [["0.7", "0.15", "0.15"]]}]
        out.append(m)
        m = self.finish(self.base("splitdata", 3, "FINISHED", [("applyfilter", 2)]), t)
        m["sets"] = [
            {"tag": "otrainset", "elements": [[f"data/x_train_{self.filter}.npy",
                                               "data/y_train.npy"]]},
            {"tag": "ovalset", "elements": [[f"data/x_val_{self.filter}.npy", "data/y_val.npy"]]},
            {"tag": "otestset", "elements": [[f"data/x_test_{self.filter}.npy",
                                              "data/y_test.npy"]]},
        ]
        out.append(m)
        m = self.base("train", 4, "RUNNING", [("splitdata", 3)])
        m["sets"] = [{"tag": "itrain", "elements": [[
            self.optimizer, str(self.lr), str(EPOCHS), str(self.batch), str(self.layers)]]}]
        out.append(m)
        return out

    def epoch(self, e):
        m = self.base("train", 4, "RUNNING")
        m["sets"] = [{"tag": "otrain", "elements": [self.epoch_row(e)]}]
        return m

    def ending(self):
        """The trained model and its test (finished runs only)."""
        if not self.finished:
            return []
        end = self.start + datetime.timedelta(seconds=5 + sum(self.elapsed))
        m = self.finish(self.base("train", 4, "FINISHED"), end)
        m["sets"] = [{"tag": "otrainedmodel", "elements": [["alexnet", self.model_dir]]}]
        out = [m]
        acc = self.final_acc * 0.98 + self.test[0]
        loss = max(0.01, 2.3 * (1 - acc) + self.test[1])
        m = self.base("test", 5, "RUNNING", [("splitdata", 3), ("train", 4)])
        out.append(m)
        m = self.finish(self.base("test", 5, "FINISHED", [("splitdata", 3), ("train", 4)]),
                        end + datetime.timedelta(seconds=20))
        m["sets"] = [{"tag": "otest", "elements": [[fmt(loss), fmt(acc)]]}]
        out.append(m)
        return out

    def messages(self):
        out = self.preamble()
        out.extend(self.epoch(e) for e in range(1, self.epochs + 1))
        out.extend(self.ending())
        return out


def spec_json():
    with open(SPEC_PATH) as f:
        return f.read()


def ndjson_batches(w, max_messages=5000):
    """The whole sweep as NDJSON bodies for `POST /pde/task/batch`, in run
    order, each at most `max_messages` messages (runs are never split)."""
    lines = []
    for k in range(w.n):
        lines.extend(json.dumps(m, separators=(",", ":")) for m in w.messages(k))
        if len(lines) >= max_messages:
            yield len(lines), "\n".join(lines)
            lines = []
    if lines:
        yield len(lines), "\n".join(lines)
