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


# -- provdb writers -----------------------------------------------------------

def _provdb_writer(http_port, dsn, w, ks, period, deadline, out):
    """Post the preamble of each run in `ks`, then one epoch per period."""
    acks, fresh, first = [], [], []
    lock = threading.Lock()

    def one(k):
        run = w.run(k)
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        look = psycopg.connect(dsn, autocommit=True)

        def send(m):
            body = json.dumps(m).encode()
            t = time.perf_counter()
            conn.request("POST", "/pde/task/json", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"POST: {r.status}")
            return t, time.perf_counter()

        for m in run.preamble():
            send(m)
        task = look.execute("SELECT id FROM public.task WHERE df_exec = %s AND identifier = 4",
                            (run.tag,)).fetchone()[0]
        probe = "SELECT count(*) FROM alexnet.ds_otrain WHERE train_task_id = %s AND epoch = %s"
        e, next_at = 0, time.perf_counter()
        while time.perf_counter() < deadline:
            e += 1
            t0, t1 = send(run.epoch(e))
            with lock:
                acks.append((t1 - t0) * 1000)
            if e % 10 == 0:
                looks = 0
                while True:
                    start = time.perf_counter()
                    looks += 1
                    if look.execute(probe, (task, e), prepare=True).fetchone()[0] > 0:
                        break
                with lock:
                    fresh.append((start - t1) * 1000)
                    first.append(looks == 1)
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))
        look.close()
        conn.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in ks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(("writer", acks, fresh, first))


# -- PostgreSQL writers -------------------------------------------------------

def _pg_writer(dsn, w, ks, period, deadline, out):
    """The same runs against PostgreSQL: task and itrain rows, then one
    INSERT per epoch (autocommit: each is a durable COMMIT)."""
    acks, fresh, first = [], [], []
    lock = threading.Lock()

    def one(k):
        run = w.run(k)
        c = psycopg.connect(dsn, autocommit=True)
        look = psycopg.connect(dsn, autocommit=True)
        task = 50_000_000 + k
        c.execute("INSERT INTO public.task (id, identifier, df_version, df_exec, dt_id, status) "
                  "SELECT %s, 4, 1, %s, id, 'RUNNING' FROM public.data_transformation "
                  "WHERE tag = 'train'", (task, run.tag))
        c.execute("INSERT INTO alexnet.ds_itrain (id, train_task_id, optimizer_name, "
                  "learning_rate, num_epochs, batch_size, num_layers) VALUES "
                  "(%s, %s, %s, %s, %s, %s, %s)",
                  (task, task, run.optimizer, run.lr, workload.EPOCHS, run.batch, run.layers))
        insert = ("INSERT INTO alexnet.ds_otrain (id, train_task_id, \"timestamp\", elapsed_time, "
                  "loss, accuracy, val_loss, val_accuracy, epoch) VALUES "
                  "(%s, %s, %s, %s, %s, %s, %s, %s, %s)")
        probe = "SELECT count(*) FROM alexnet.ds_otrain WHERE train_task_id = %s AND epoch = %s"
        e, next_at = 0, time.perf_counter()
        while time.perf_counter() < deadline:
            e += 1
            row = run.epoch_row(e)
            t0 = time.perf_counter()
            c.execute(insert, [1_000_000_000 + (k - w.n) * 100_000 + e, task, row[0], row[1],
                               float(row[2]), float(row[3]), float(row[4]), float(row[5]), e],
                      prepare=True)
            t1 = time.perf_counter()
            with lock:
                acks.append((t1 - t0) * 1000)
            if e % 10 == 0:
                looks = 0
                while True:
                    start = time.perf_counter()
                    looks += 1
                    if look.execute(probe, (task, e), prepare=True).fetchone()[0] > 0:
                        break
                with lock:
                    fresh.append((start - t1) * 1000)
                    first.append(looks == 1)
            next_at += period
            time.sleep(max(0.0, next_at - time.perf_counter()))
        c.close()
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
    deadline = time.perf_counter() + seconds + 2
    out = mp.Queue()
    ks = list(range(first_k, first_k + runs))
    groups = [ks[i::processes] for i in range(processes)]
    procs = []
    for g in groups:
        if kind == "provdb":
            args = (http_port, dsn, w, g, period_ms / 1000, deadline, out)
            procs.append(mp.Process(target=_provdb_writer, args=args))
        else:
            procs.append(mp.Process(target=_pg_writer,
                                    args=(dsn, w, g, period_ms / 1000, deadline, out)))
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
