#!/usr/bin/env python3
"""Core-database benchmark: provdb against PostgreSQL 15, same machine, same run.

Starts both servers itself (PostgreSQL in a fresh cluster under a temp dir,
provdb with a fresh data dir), runs each workload on both through psycopg,
and writes docs/benchmarks.md with the medians and the provdb/PostgreSQL
ratios. Entry point: scripts/bench.sh (builds provdb in release mode first).

Workloads (issue 2):
  copy      COPY of an N-row, 8-column (numeric + text) table
  insert1   durable single-row INSERTs, 1 connection
  insert8   durable single-row INSERTs, 8 connections
  lookup    point lookup by primary key through a prepared statement
  agg       filtered aggregate over the N rows
"""

import argparse
import glob
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psycopg

from report import free_port, machine_line, wait_port, write_section

CREATE = """CREATE TABLE bench (
    id BIGINT PRIMARY KEY, run INT, epoch INT, loss DOUBLE PRECISION,
    acc DOUBLE PRECISION, lr DOUBLE PRECISION, optimizer TEXT, tag TEXT)"""
OPTIMIZERS = ["adam", "sgd", "rmsprop", "adagrad"]


def add_postgres_to_path():
    """Debian keeps the server binaries (initdb, postgres) off PATH."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            os.environ["PATH"] = d + os.pathsep + os.environ["PATH"]
            return


class Postgres:
    name = "PostgreSQL"

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.port = free_port()
        add_postgres_to_path()
        # initdb refuses to run as root: run the server as `postgres` then
        as_pg = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            as_pg = ["runuser", "-u", "postgres", "--"]
        subprocess.run(as_pg + ["initdb", "-D", self.dir, "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL)
        log = open(os.path.join(work, "pg.log"), "w")
        self.proc = subprocess.Popen(
            as_pg + ["postgres", "-D", self.dir, "-p", str(self.port), "-k", "/tmp",
                     "-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=1GB",
                     "-c", "max_wal_size=8GB", "-c", "synchronous_commit=on"],
            stdout=log, stderr=log)
        wait_port(self.port, self.proc)
        time.sleep(0.5)
        self.version = self.scalar("SHOW server_version")

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                               dbname="postgres", autocommit=True)

    def scalar(self, sql):
        with self.connect() as c:
            return c.execute(sql).fetchone()[0]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Provdb:
    name = "provdb"

    def __init__(self, work, binary, log_level="warn", http=False):
        self.binary = binary
        self.http_port = free_port() if http else None
        self.data_dir = os.path.join(work, "provdb-data")
        self.log_path = os.path.join(work, "provdb.log")
        self.log_level = log_level
        self.port = free_port()
        self.start()
        self.version = subprocess.run([binary, "--version"], capture_output=True,
                                      text=True).stdout.strip()

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", self.data_dir,
             "--listen", f"127.0.0.1:{self.port}", "--log", self.log_level]
            + (["--http-listen", f"127.0.0.1:{self.http_port}"] if self.http_port
               else ["--no-http"]),
            stdout=log, stderr=log)
        wait_port(self.port, self.proc, timeout=900)

    def restart(self):
        self.stop()
        self.start()

    def connect(self):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="bench",
                               dbname="provdb", autocommit=True)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=300)


def row_text(i):
    run = i // 100
    return (f"{i}\t{run}\t{i % 100}\t{1.0 / (1 + i % 100):.6f}\t{(i % 1000) / 1000:.3f}\t"
            f"{10.0 ** -(1 + run % 4):g}\t{OPTIMIZERS[run % 4]}\trun-{run}\n")


def write_copy_file(path, rows):
    """The COPY data, generated once before any engine is timed: a Python
    client formatting rows while it sends them is slower than both servers."""
    with open(path, "w") as f:
        buf = io.StringIO()
        for i in range(rows):
            buf.write(row_text(i))
            if buf.tell() > 1 << 20:
                f.write(buf.getvalue())
                buf = io.StringIO()
        f.write(buf.getvalue())
    return os.path.getsize(path)


def copy_rows(db, path):
    """COPY the file at `path` in 1 MiB CopyData messages; returns seconds."""
    with db.connect() as c:
        c.execute("DROP TABLE IF EXISTS bench")
        c.execute(CREATE)
        start = time.perf_counter()
        with c.cursor().copy("COPY bench FROM STDIN") as cp, open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        return time.perf_counter() - start


def insert_rate(db, conns, seconds):
    """Single-row autocommit INSERTs from `conns` connections for `seconds`."""
    with db.connect() as c:
        c.execute("DROP TABLE IF EXISTS ins")
        c.execute("CREATE TABLE ins (id BIGINT PRIMARY KEY, v DOUBLE PRECISION, t TEXT)")
    counts = [0] * conns
    stop = time.perf_counter() + seconds

    def worker(k):
        with db.connect() as c:
            n = 0
            while time.perf_counter() < stop:
                c.execute("INSERT INTO ins VALUES (%s, %s, %s)", (k * 10**9 + n, n * 0.5, "x"),
                          prepare=True)
                n += 1
            counts[k] = n

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def lookup_ms(db, rows, budget_s):
    """Median latency of a prepared point lookup by key, in ms."""
    times = []
    rnd = random.Random(7)
    deadline = time.perf_counter() + budget_s
    with db.connect() as c:
        for _ in range(5):  # let the client switch to a server-side prepared statement
            c.execute("SELECT * FROM bench WHERE id = %s", (1,), prepare=True).fetchall()
        while len(times) < 2000 and (time.perf_counter() < deadline or len(times) < 5):
            k = rnd.randrange(rows)
            t0 = time.perf_counter()
            got = c.execute("SELECT * FROM bench WHERE id = %s", (k,), prepare=True).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
            assert len(got) == 1, f"lookup of {k} returned {len(got)} rows"
    return statistics.median(times), len(times)


def connect_ms(db, n=60):
    """Median time to open a connection and run its first query, in ms
    (what a client without a pool pays per session)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with db.connect() as c:
            c.execute("SELECT 1").fetchall()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


AGG = ("SELECT optimizer, count(*) AS n, avg(loss) AS loss, max(acc) AS acc FROM bench "
       "WHERE epoch >= 50 AND lr < 0.05 GROUP BY optimizer ORDER BY optimizer")


def agg_ms(db, repeats):
    times, result = [], None
    with db.connect() as c:
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = c.execute(AGG).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), [(r[0], r[1]) for r in result]


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid, limit_s=120):
    """Wait until the process uses under 5% of a core over half a second
    (provdb writes the rows just copied to Parquet in the background)."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            return


def run_engine(db, args):
    out = {}
    copies = [copy_rows(db, args.copy_file) for _ in range(args.repeats)]
    out["copy"] = statistics.median(copies)
    # Queries are timed on data at rest: PostgreSQL vacuumed and analyzed,
    # provdb done flushing the copied rows.
    if isinstance(db, Postgres):
        with db.connect() as c:
            c.execute("VACUUM ANALYZE bench")
    else:
        wait_idle(db.proc.pid)
    out["agg"], out["agg_result"] = agg_ms(db, args.repeats + 2)
    out["lookup"], out["lookup_n"] = lookup_ms(db, args.rows, args.lookup_seconds)
    out["connect"] = connect_ms(db)
    out["insert1"] = statistics.median(insert_rate(db, 1, args.seconds) for _ in range(args.repeats))
    out["insert8"] = statistics.median(insert_rate(db, 8, args.seconds) for _ in range(args.repeats))
    return out


def report(args, pg, pv, r_pg, r_pv):
    rows_s = lambda r: args.rows / r["copy"]
    lines = [
        "## Core database (issue 2): provdb against PostgreSQL",
        "",
        f"Reproduce: `BENCH=core scripts/bench.sh --rows {args.rows} --repeats {args.repeats} "
        f"--seconds {args.seconds:g} --lookup-seconds {args.lookup_seconds:g}` "
        "(builds provdb in release mode, starts PostgreSQL and provdb itself).",
        "",
        machine_line(),
        f"- PostgreSQL {pg.version} (fresh cluster, synchronous_commit=on, shared_buffers=1GB, "
        "B-tree primary key); provdb: " + pv.version + " (fsync on, defaults)",
        f"- {args.rows:,} rows of 8 columns; medians of {args.repeats} runs; client: psycopg "
        f"{psycopg.__version__} over loopback",
        "",
        "| measure | PostgreSQL | provdb | provdb / PostgreSQL | target |",
        "|---|---|---|---|---|",
        f"| COPY ingest (rows/s) | {rows_s(r_pg):,.0f} | {rows_s(r_pv):,.0f} | "
        f"{rows_s(r_pv) / rows_s(r_pg):.2f}x | >= 2x |",
        f"| single-row INSERT, 1 connection (rows/s) | {r_pg['insert1']:,.0f} | {r_pv['insert1']:,.0f} | "
        f"{r_pv['insert1'] / r_pg['insert1']:.2f}x | >= 1x |",
        f"| single-row INSERT, 8 connections (rows/s) | {r_pg['insert8']:,.0f} | {r_pv['insert8']:,.0f} | "
        f"{r_pv['insert8'] / r_pg['insert8']:.2f}x | >= 1x |",
        f"| point lookup by key, prepared (ms, median) | {r_pg['lookup']:.3f} | {r_pv['lookup']:.3f} | "
        f"{r_pv['lookup'] / r_pg['lookup']:.2f}x the time | <= 1.5x |",
        f"| connect and run a first query (ms, median of 60) | {r_pg['connect']:.2f} | "
        f"{r_pv['connect']:.2f} | {r_pv['connect'] / r_pg['connect']:.2f}x the time | (none) |",
        f"| filtered aggregate (ms, median) | {r_pg['agg']:.1f} | {r_pv['agg']:.1f} | "
        f"{r_pg['agg'] / r_pv['agg']:.2f}x faster | >= 10x faster |",
        "",
        f"Both engines returned the same aggregate groups: {r_pg['agg_result'] == r_pv['agg_result']}.",
        f"Point lookups measured: PostgreSQL {r_pg['lookup_n']}, provdb {r_pv['lookup_n']}.",
        "",
        "Lookups and the aggregate run on data at rest: PostgreSQL after VACUUM ANALYZE, "
        "provdb once its background flush of the copied rows to Parquet is done (the server "
        "process idle).",
        "",
        f"COPY sends a {args.copy_bytes / 1e6:,.0f} MB text-format file generated before either "
        "server is timed, in 1 MiB CopyData messages (psycopg); the time runs from the "
        "COPY statement to its acknowledgement, durable in both engines.",
        "",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provdb", required=True, help="path of the provdb binary (release build)")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each INSERT run")
    ap.add_argument("--lookup-seconds", type=float, default=20.0)
    ap.add_argument("--out", default=None, help="write the report here (default: stdout only)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-bench-")
    os.chmod(work, 0o755)
    pg = pv = None
    try:
        args.copy_file = os.path.join(work, "copy.tsv")
        args.copy_bytes = write_copy_file(args.copy_file, args.rows)
        pg = Postgres(work)
        r_pg = run_engine(pg, args)
        pg.stop()
        pg_stopped = True
        pv = Provdb(work, args.provdb)
        r_pv = run_engine(pv, args)
        text = report(args, pg, pv, r_pg, r_pv)
        print(text)
        if args.out:
            write_section(args.out, "core", text)
    finally:
        for s in (pg, pv):
            if s is not None and s.proc.poll() is None:
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
