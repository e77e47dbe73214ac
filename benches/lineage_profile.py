#!/usr/bin/env python3
"""Quick profile of one lineage walk (not part of docs/benchmarks.md).

Loads a layered DAG (LAYERS layers x WIDTH nodes, PARENTS parents each; the
default is the deep shape at a quarter of its width) into a fresh provdb by
COPY, then runs `SELECT count(*) FROM lineage('dN_7')` from the last layer
in a loop for SECONDS and prints ms per query, beside `SELECT 1` as the
floor of a round trip; with --perf, records the server with `perf record -g`
into perf.data for `perf report`.

    python3 benches/lineage_profile.py target/release/provdb --width 5000 --perf
    python3 benches/lineage_profile.py target/release/provdb \
        --layers 8 --width 200000 --parents 3          # the wide shape
"""

import argparse
import random
import shutil
import subprocess
import tempfile
import time

import psycopg

from report import free_port, wait_port


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("provdb")
    ap.add_argument("--layers", type=int, default=200)
    ap.add_argument("--width", type=int, default=5000)
    ap.add_argument("--parents", type=int, default=2)
    ap.add_argument("--depth", type=int, help="max_depth of the walk (default: none)")
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--perf", action="store_true", help="record with perf into perf.data")
    ap.add_argument("--restart", action="store_true",
                    help="restart the server after loading (the index is then rebuilt "
                         "compacted, as after any restart)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-lineage-profile-")
    port = free_port()
    cmd = [args.provdb, "serve", "--data-dir", f"{work}/data", "--listen",
           f"127.0.0.1:{port}", "--no-http", "--log", "warn"]
    proc = subprocess.Popen(cmd)
    try:
        wait_port(port, proc)
        c = psycopg.connect(host="127.0.0.1", port=port, user="p", dbname="provdb",
                            autocommit=True)
        rng, w = random.Random(1), args.width
        sql = "COPY prov.relation (kind, subject, object) FROM STDIN (FORMAT csv)"
        with c.cursor().copy(sql) as cp:
            for layer in range(1, args.layers):
                cp.write("".join(f"wasDerivedFrom,d{layer}_{i},d{layer - 1}_{j}\n"
                                 for i in range(w)
                                 for j in rng.sample(range(w), args.parents)))
        if args.restart:
            c.close()
            proc.terminate()
            proc.wait()
            proc = subprocess.Popen(cmd)
            wait_port(port, proc)
            c = psycopg.connect(host="127.0.0.1", port=port, user="p", dbname="provdb",
                                autocommit=True)
        depth = f", max_depth => {args.depth}" if args.depth else ""
        query = f"SELECT count(*) FROM lineage('d{args.layers - 1}_7'{depth})"
        nodes = c.execute(query).fetchone()[0]
        floor = time.time()
        for _ in range(500):
            c.execute("SELECT 1").fetchone()
        print(f"SELECT 1: {(time.time() - floor) / 500 * 1000:.3f} ms/query")
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384",
                                     "-p", str(proc.pid),
                                     "-o", "perf.data"], stderr=subprocess.DEVNULL)
            time.sleep(1)
        start, runs = time.time(), 0
        while time.time() - start < args.seconds:
            c.execute(query).fetchone()
            runs += 1
        print(f"walk of {nodes} nodes: {(time.time() - start) / runs * 1000:.3f} ms/query")
        if perf:
            perf.send_signal(2)
            perf.wait()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
