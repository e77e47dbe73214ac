#!/usr/bin/env python3
"""Quick profile of one deep lineage walk (not part of docs/benchmarks.md).

Loads a deep layered DAG (200 layers x WIDTH nodes, 2 parents each) into a
fresh provdb by COPY, then runs `SELECT count(*) FROM lineage('d199_7')` in a
loop for SECONDS and prints ms per query; with --perf, records the server
with `perf record -g` into perf.data for `perf report`.

    python3 benches/lineage_profile.py target/release/provdb --width 5000 --perf
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
    ap.add_argument("--width", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--perf", action="store_true", help="record with perf into perf.data")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-lineage-profile-")
    port = free_port()
    proc = subprocess.Popen([args.provdb, "serve", "--data-dir", f"{work}/data", "--listen",
                             f"127.0.0.1:{port}", "--no-http", "--log", "warn"])
    try:
        wait_port(port, proc)
        c = psycopg.connect(host="127.0.0.1", port=port, user="p", dbname="provdb",
                            autocommit=True)
        rng, w = random.Random(1), args.width
        sql = "COPY prov.relation (kind, subject, object) FROM STDIN (FORMAT csv)"
        with c.cursor().copy(sql) as cp:
            for layer in range(1, 200):
                cp.write("".join(f"wasDerivedFrom,d{layer}_{i},d{layer - 1}_{j}\n"
                                 for i in range(w) for j in rng.sample(range(w), 2)))
        query = "SELECT count(*) FROM lineage('d199_7')"
        nodes = c.execute(query).fetchone()[0]
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(proc.pid),
                                     "-o", "perf.data"], stderr=subprocess.DEVNULL)
            time.sleep(1)
        start, runs = time.time(), 0
        while time.time() - start < args.seconds:
            c.execute(query).fetchone()
            runs += 1
        print(f"closure of {nodes} nodes: {(time.time() - start) / runs * 1000:.1f} ms/query")
        if perf:
            perf.send_signal(2)
            perf.wait()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
