"""The live-training simulation of the DLProv workload benchmark (issue 6).

While `runs` simulated training runs each post one epoch every `period_ms`
(provdb: through the DfAnalyzer protocol, one `POST /pde/task/json` per epoch
as DLProv's Keras callback does; PostgreSQL: one INSERT per epoch over a
pool of connections, its own best path), `dashboards` connections run the
monitoring queries M1-M5 in turn every `dashboard_ms`.

Measured:
- acknowledgement latency of each epoch write (HTTP reply / COMMIT);
- freshness: every tenth acknowledged epoch, the writer looks for its row
  on another connection right after the reply and again until it is seen;
  freshness is the time from the reply to the start of the first look that
  saw it (0 when the row was visible at once), `fresh_first` the share seen
  at the first look;
- dashboard query latency under the load;
- peak RSS of the server process(es), sampled every 100 ms.

Writers and dashboards run in separate processes (4 writer processes of 8
runs each by default) so the client's GIL does not queue the requests.
"""

import functools
import http.client
import json
import multiprocessing as mp
import os
import statistics
import threading
import time

import psycopg

import workload


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


# -- writers --------------------------------------------------------------------

PROBE = "SELECT count(*) FROM alexnet.ds_otrain WHERE train_task_id = %s AND epoch = %s"


class ProvdbRun:
    """A simulated run writing to provdb: the DfAnalyzer messages of its
    tasks up to training, then one `POST /pde/task/json` per epoch."""

    def __init__(self, http_port, dsn, w, k):
        self.run = w.run(k)
        self.conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        self.dsn = dsn

    def post(self, m):
        self.conn.request("POST", "/pde/task/json", body=json.dumps(m).encode(),
                          headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"POST: {r.status}")

    def start(self, look):
        """Post the preamble; returns the train task's id."""
        for m in self.run.preamble():
            self.post(m)
        return look.execute("SELECT id FROM public.task WHERE df_exec = %s AND identifier = 4",
                            (self.run.tag,)).fetchone()[0]

    def epoch(self, e):
        self.post(self.run.epoch(e))

    def close(self):
        self.conn.close()


class PostgresRun:
    """The same run against PostgreSQL: its task and itrain rows, then one
    autocommit INSERT (a durable COMMIT) per epoch."""

    INSERT = ("INSERT INTO alexnet.ds_otrain (id, train_task_id, \"timestamp\", elapsed_time, "
              "loss, accuracy, val_loss, val_accuracy, epoch) VALUES "
              "(%s, %s, %s, %s, %s, %s, %s, %s, %s)")

    def __init__(self, dsn, w, k):
        self.run, self.k, self.first_id = w.run(k), k, 1_000_000_000 + (k - w.n) * 100_000
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.dsn = dsn
        self.task = 50_000_000 + k

    def start(self, _look):
        run, c = self.run, self.conn
        c.execute("INSERT INTO public.task (id, identifier, df_version, df_exec, dt_id, status) "
                  "SELECT %s, 4, 1, %s, id, 'RUNNING' FROM public.data_transformation "
                  "WHERE tag = 'train'", (self.task, run.tag))
        c.execute("INSERT INTO alexnet.ds_itrain (id, train_task_id, optimizer_name, "
                  "learning_rate, num_epochs, batch_size, num_layers) VALUES "
                  "(%s, %s, %s, %s, %s, %s, %s)",
                  (self.task, self.task, run.optimizer, run.lr, workload.EPOCHS, run.batch,
                   run.layers))
        return self.task

    def epoch(self, e):
        row = self.run.epoch_row(e)
        self.conn.execute(self.INSERT, [self.first_id + e, self.task, row[0], row[1],
                                        *(float(x) for x in row[2:6]), e], prepare=True)

    def close(self):
        self.conn.close()


def _writers(make, ks, period, deadline, out):
    """Run `make(k)` for each k in `ks` on its own thread: start it, then one
    epoch per period until the deadline; every tenth acknowledged epoch is
    looked for on another connection (freshness)."""
    acks, fresh, first = [], [], []
    lock = threading.Lock()

    def one(k):
        sink = make(k)
        look = psycopg.connect(sink.dsn, autocommit=True)
        task = sink.start(look)
        e, next_at = 0, time.perf_counter()
        while time.perf_counter() < deadline:
            e += 1
            t0 = time.perf_counter()
            sink.epoch(e)
            t1 = time.perf_counter()
            with lock:
                acks.append((t1 - t0) * 1000)
            if e % 10 == 0:
                looks = 0
                while True:
                    start = time.perf_counter()
                    looks += 1
                    if look.execute(PROBE, (task, e), prepare=True).fetchone()[0] > 0:
                        break
                with lock:
                    fresh.append((start - t1) * 1000)
                    first.append(looks == 1)
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))
        sink.close()
        look.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in ks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(("writer", acks, fresh, first))


# -- dashboards -----------------------------------------------------------------

def _dashboards(dsn, queries, n, period, deadline, out):
    times = {q.name: [] for q in queries}
    lock = threading.Lock()

    def one(i):
        c = psycopg.connect(dsn, autocommit=True)
        j, next_at = i, time.perf_counter()
        while time.perf_counter() < deadline:
            q = queries[j % len(queries)]
            j += 1
            t = time.perf_counter()
            c.execute(q.sql, q.params or None, prepare=True).fetchall()
            with lock:
                times[q.name].append((time.perf_counter() - t) * 1000)
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))
        c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(("dashboards", times))


def simulate(kind, dsn, server_pids, w, queries, first_k, http_port=None, runs=32,
             period_ms=50, dashboards=4, dashboard_ms=200, seconds=60, processes=4):
    """Run the simulation against `kind` ('provdb' or 'postgres'); returns
    the measures. The live runs are executions first_k.. of `w` (past its
    last execution: each repeat trains new ones)."""
    deadline = time.perf_counter() + seconds
    out = mp.Queue()
    ks = list(range(first_k, first_k + runs))
    groups = [ks[i::processes] for i in range(processes)]
    procs = []
    if kind == "provdb":
        make = functools.partial(ProvdbRun, http_port, dsn, w)
    else:
        make = functools.partial(PostgresRun, dsn, w)
    for g in groups:
        procs.append(mp.Process(target=_writers,
                                args=(make, g, period_ms / 1000, deadline, out)))
    procs.append(mp.Process(target=_dashboards,
                            args=(dsn, queries, dashboards, dashboard_ms / 1000, deadline, out)))
    for p in procs:
        p.start()
    peak = 0
    while any(p.is_alive() for p in procs) and time.perf_counter() < deadline + 120:
        peak = max(peak, rss_kib(server_pids()))
        time.sleep(0.1)
        if out.qsize() >= len(procs):
            break
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    acks, fresh, first, dash = [], [], [], {}
    for r in results:
        if r[0] == "writer":
            acks += r[1]
            fresh += r[2]
            first += r[3]
        else:
            dash = r[1]
    all_dash = [x for xs in dash.values() for x in xs]
    return {
        "epochs": len(acks),
        "epochs_per_s": len(acks) / seconds,
        "ack_p50": percentile(acks, 50), "ack_p99": percentile(acks, 99),
        "fresh_p99": percentile(fresh, 99),
        "fresh_first": (sum(first) / len(first)) if first else float("nan"),
        "dash_p50": percentile(all_dash, 50), "dash_p99": percentile(all_dash, 99),
        "dash_queries": len(all_dash),
        "dash_by_query": {k: (percentile(v, 50), percentile(v, 99)) for k, v in dash.items()},
        "peak_rss_mib": peak / 1024,
    }


def median_of(results):
    """Medians, key by key, of several simulations."""
    out = {}
    for key in results[0]:
        if key == "dash_by_query":
            out[key] = {q: tuple(statistics.median(r[key][q][i] for r in results)
                                 for i in range(2)) for q in results[0][key]}
        else:
            out[key] = statistics.median(r[key] for r in results)
    return out
