#!/usr/bin/env python3
"""DLProv ingest benchmark (issue 3): the DfAnalyzer HTTP protocol into provdb.

Starts a fresh provdb itself, registers DLProv's predefined alexnet dataflow
(tests/fixtures/dlprov/alexnet-spec.json) and measures, with plain HTTP
clients shaped like dfa_lib_python (one keep-alive connection per client):

  latency    one client posting epoch messages (POST /pde/task/json):
             acknowledgement latency p50/p99
  fresh      after each reply, another connection (pgwire) counts the run's
             rows: the fraction already visible, and how long that query took
  clients32  32 client processes, each its own training run, posting epoch
             messages as fast as replies come: messages/s
  batch      POST /pde/task/batch with 1,000 epoch messages per request
             from 4 clients: messages/s

Writes its section of docs/benchmarks.md. Entry point: scripts/bench.sh
(or run it with --provdb target/release/provdb).
"""

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

from report import free_port, machine_line, wait_port, write_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = open(os.path.join(ROOT, "tests/fixtures/dlprov/alexnet-spec.json")).read()


class Http:
    """One keep-alive connection, like a requests.Session."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path, body):
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data[:300]!r}")
        return data


def msg(exec_tag, dt, ident, status, sets=None, dep=None, first="0"):
    m = {"tag": dt, "first": first, "dataflow": "alexnet", "email": "bench@lab.org",
         "exec": exec_tag, "status": status, "transformation": dt, "id": str(ident)}
    if dep:
        m["dependency"] = {"tags": [{"tag": t} for t, _ in dep], "ids": [{"id": str(i)} for _, i in dep]}
    if sets:
        m["sets"] = sets
    return m


def run_prefix(exec_tag):
    """Messages of a run up to the start of training (task 4 RUNNING)."""
    hw = json.dumps({"hostname": "bench", "os": "Linux", "gpus": "none", "in_container": False})
    first = msg(exec_tag, "loaddata", 1, "RUNNING",
                [{"tag": "iinputdataset", "elements": [["flowers", "http://x"]]}], first="1")
    first["hardware"] = hw
    return [
        first,
        msg(exec_tag, "loaddata", 1, "FINISHED", [{"tag": "oloaddata", "elements": [["raw.npy"]]}]),
        msg(exec_tag, "applyfilter", 2, "FINISHED", [{"tag": "ofilter", "elements": [["g.npy"]]}],
            [("loaddata", 1)]),
        msg(exec_tag, "splitdata", 3, "FINISHED", [{"tag": "otrainset", "elements": [["x", "y"]]}],
            [("applyfilter", 2)]),
        msg(exec_tag, "train", 4, "RUNNING",
            [{"tag": "itrain", "elements": [["adam", "0.01", "100", "32", "8"]]}], [("splitdata", 3)]),
    ]


def epoch(exec_tag, e):
    loss = 2.0 / (1 + 0.1 * e)
    return msg(exec_tag, "train", 4, "RUNNING",
               [{"tag": "otrain", "elements": [[f"2025-01-01 00:00:{e % 60:02d}", "0.05", str(loss),
                                                str(1 - loss / 2.5), str(loss * 1.1), str(0.9 - loss / 3),
                                                str(e)]]}], [("splitdata", 3)])


def start_run(h, exec_tag):
    for m in run_prefix(exec_tag):
        h.post("/pde/task/json", json.dumps(m))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def latency_and_freshness(http_port, pg_port, n, tag):
    h = Http(http_port)
    start_run(h, tag)
    db = psycopg.connect(host="127.0.0.1", port=pg_port, user="bench", dbname="provdb", autocommit=True)
    tid = db.execute("SELECT id FROM public.task WHERE df_exec = %s AND identifier = 4", (tag,)).fetchone()[0]
    acks, fresh_ms, visible = [], [], 0
    for e in range(1, n + 1):
        body = json.dumps(epoch(tag, e))
        t0 = time.perf_counter()
        h.post("/pde/task/json", body)
        acks.append((time.perf_counter() - t0) * 1000)
        if e % 10 == 0:
            t1 = time.perf_counter()
            got = db.execute("SELECT count(*) FROM alexnet.otrain WHERE train_task_id = %s", (tid,)).fetchone()[0]
            fresh_ms.append((time.perf_counter() - t1) * 1000)
            visible += got == e
    return acks, fresh_ms, visible, n // 10


def client_proc(args):
    http_port, k, seconds = args
    h = Http(http_port)
    tag = f"c32-run-{k}"
    start_run(h, tag)
    n, e = 0, 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        e += 1
        h.post("/pde/task/json", json.dumps(epoch(tag, e)))
        n += 1
    return n


def batch_proc(args):
    http_port, k, seconds, size = args
    h = Http(http_port)
    tag = f"batch-run-{k}"
    start_run(h, tag)
    n, e = 0, 0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        body = "".join(json.dumps(epoch(tag, e + i)) + "\n" for i in range(size))
        e += size
        h.post("/pde/task/batch", body)
        n += size
    return n


def parallel(fn, argv):
    with multiprocessing.Pool(len(argv)) as pool:
        t0 = time.perf_counter()
        counts = pool.map(fn, argv)
        return sum(counts) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provdb", required=True)
    ap.add_argument("--messages", type=int, default=3000, help="messages of the latency run")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each throughput run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-ingest-bench-")
    pg_port, http_port = free_port(), free_port()
    log = open(os.path.join(work, "provdb.log"), "w")
    proc = subprocess.Popen([args.provdb, "serve", "--data-dir", os.path.join(work, "data"),
                             "--listen", f"127.0.0.1:{pg_port}", "--http-listen", f"127.0.0.1:{http_port}",
                             "--log", "warn"], stdout=log, stderr=log)
    try:
        wait_port(pg_port, proc)
        Http(http_port).post("/pde/dataflow/json", SPEC)
        lat, fresh, visible, checks = [], [], 0, 0
        c32, batch = [], []
        for r in range(args.repeats):
            a, f, v, c = latency_and_freshness(http_port, pg_port, args.messages, f"lat-run-{r}")
            lat.append(a)
            fresh.extend(f)
            visible += v
            checks += c
            c32.append(parallel(client_proc, [(http_port, r * 100 + k, args.seconds) for k in range(32)]))
            batch.append(parallel(batch_proc, [(http_port, r * 100 + k, args.seconds, 1000) for k in range(4)]))
        p50 = statistics.median(pct(a, 0.5) for a in lat)
        p99 = statistics.median(pct(a, 0.99) for a in lat)
        version = subprocess.run([args.provdb, "--version"], capture_output=True, text=True).stdout.strip()
        text = "\n".join([
            "## DLProv ingest (issue 3): the DfAnalyzer HTTP protocol",
            "",
            f"Reproduce: `scripts/bench.sh` (or `python3 benches/ingest.py --provdb target/release/provdb "
            f"--messages {args.messages} --seconds {args.seconds:g} --repeats {args.repeats}`).",
            "",
            machine_line(),
            f"- {version}, fsync on, defaults; clients: Python http.client, one keep-alive connection "
            "each, epoch messages of the predefined alexnet dataflow (one `otrain` row each)",
            f"- medians of {args.repeats} runs. DfAnalyzer itself is not measured (its server jar is "
            "not in any public repository); its design acknowledges before storing, so it has no "
            "durable-acknowledgement latency to compare.",
            "",
            "| measure | provdb | target |",
            "|---|---|---|",
            f"| acknowledgement latency, 1 client, p50 (ms) | {p50:.3f} | |",
            f"| acknowledgement latency, 1 client, p99 (ms) | {p99:.3f} | < 2 |",
            f"| 32 clients, one message per request (messages/s) | {statistics.median(c32):,.0f} | |",
            f"| batch endpoint, 1,000 messages per request, 4 clients (messages/s) | "
            f"{statistics.median(batch):,.0f} | >= 50,000 |",
            f"| rows visible to another connection right after the reply | {visible}/{checks} | all |",
            f"| that connection's count query, p50 / p99 (ms) | {pct(fresh, 0.5):.3f} / {pct(fresh, 0.99):.3f} | |",
            "",
            "The 32-client figure is bounded by the Python clients sharing the machine's two cores "
            "with the server.",
            "",
        ])
        print(text)
        if args.out:
            write_section(args.out, "ingest", text)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
