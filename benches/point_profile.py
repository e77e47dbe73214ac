#!/usr/bin/env python3
"""Quick profile of the DLProv point questions (not part of docs/benchmarks.md).

Posts the sweep at SCALE through the DfAnalyzer batch endpoint into a fresh
provdb, restarts it (so the tables are flushed to Parquet, as after a
benchmark load), then runs each named query prepared in a loop for SECONDS
and prints its mean and median milliseconds. With --perf, the server is
recorded with `perf record` (DWARF call graphs) into perf-NAME.data while
each query runs; read with `perf report --no-inline -i perf-NAME.data`.

    python3 benches/point_profile.py target/release/provdb --scale 0.1 Q7 Q11 M5

With --against OTHER (a second provdb binary), both binaries serve copies
of the loaded data directory at once and each query is looped on one, then
the other, --rounds times (--seconds each): the medians over both sides
tell a code change from a busier machine, which two separate runs cannot.

    python3 benches/point_profile.py NEW --against OLD --scale 1 --rounds 6 \
        --seconds 1 M1 M3
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import workload
import workload_engines as we
import workload_queries
from core import Provdb


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("provdb")
    ap.add_argument("queries", nargs="+", help="names from workload_queries.py (Q7, M5, ...)")
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--perf", action="store_true", help="record each query into perf-NAME.data")
    ap.add_argument("--against", help="a second provdb binary, run side by side")
    ap.add_argument("--rounds", type=int, default=6, help="turns per side with --against")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-point-profile-")
    w = workload.Workload(workload.executions(args.scale))
    server = Provdb(work, args.provdb, http=True)
    try:
        seconds, messages = we.load_protocol(server.http_port, w)
        print(f"posted {messages} messages in {seconds:.1f} s")
        server.restart()
        by_name = {q.name: q for q in workload_queries.for_workload(w)}
        if args.against:
            return side_by_side(server, work, args, [by_name[n] for n in args.queries])
        engine = we.PgwireEngine("provdb", server.connect)
        for name in args.queries:
            perf = None
            if args.perf:
                perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph",
                                         "dwarf,32768", "-p",
                                         str(server.proc.pid), "-o", f"perf-{name}.data"],
                                        stderr=subprocess.DEVNULL)
                time.sleep(1)
            print(f"{name}: " + profile(engine, by_name[name], args.seconds))
            if perf:
                perf.send_signal(2)
                perf.wait()
        engine.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def side_by_side(server, work, args, queries):
    """Loop each query on `server` and on a copy of it running `--against`."""
    server.stop()
    other_work = os.path.join(work, "against")
    shutil.copytree(server.data_dir, os.path.join(other_work, "provdb-data"))
    server.start()
    other = Provdb(other_work, args.against)
    try:
        sides = [(args.provdb, we.PgwireEngine("provdb", server.connect)),
                 (args.against, we.PgwireEngine("provdb", other.connect))]
        for q in queries:
            times = {name: [] for name, _ in sides}
            for name, engine in sides:
                for _ in range(20):
                    engine.execute(q)
            for _ in range(args.rounds):
                for name, engine in sides:
                    times[name] += loop(engine, q, args.seconds)
            new, old = (statistics.median(times[name]) for name, _ in sides)
            print(f"{q.name}: median {new:.3f} ms ({args.provdb}), {old:.3f} ms "
                  f"({args.against}), ratio {new / old:.2f}")
        for _, engine in sides:
            engine.close()
    finally:
        other.stop()


def loop(engine, q, seconds):
    """Milliseconds of each run of `q` for `seconds`."""
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        engine.execute(q)
        times.append((time.perf_counter() - t) * 1000)
    return times


def profile(engine, q, seconds):
    """Run `q` for `seconds`; mean and median milliseconds per run."""
    engine.execute(q)
    times = loop(engine, q, seconds)
    return (f"{len(times)} runs, mean {statistics.mean(times):.3f} ms, "
            f"median {statistics.median(times):.3f} ms")


if __name__ == "__main__":
    main()
