#!/usr/bin/env python3
"""A/B of two provdb binaries on the core benchmark's filtered aggregate.

Both servers are started and loaded with the same COPY file (core.py's
table), then the aggregate's median of `--runs` executions is taken from
each in turn, `--rounds` times, so that both see the same machine. Tells
a code regression from a busier machine, which a ratio against
PostgreSQL in two separate runs cannot.

    python3 benches/core_ab.py --a OLD_BINARY --b NEW_BINARY [--rows 10000000]
"""
import argparse
import os
import shutil
import statistics
import tempfile

import core


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="first provdb binary (release build)")
    ap.add_argument("--b", required=True, help="second provdb binary (release build)")
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=8, help="executions per median")
    ap.add_argument("--rounds", type=int, default=4, help="medians taken from each binary")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-ab-")
    dbs = {}
    try:
        copy_file = os.path.join(work, "copy.txt")
        core.write_copy_file(copy_file, args.rows)
        for name, binary in (("a", args.a), ("b", args.b)):
            d = os.path.join(work, name)
            os.makedirs(d)
            db = core.Provdb(d, binary)
            dbs[name] = db
            print(f"{name}: COPY {core.copy_rows(db, copy_file):.2f} s", flush=True)
            core.wait_idle(db.proc.pid)
        medians = {name: [] for name in dbs}
        groups = {}
        for _ in range(args.rounds):
            for name, db in dbs.items():
                ms, groups[name] = core.agg_ms(db, args.runs)
                medians[name].append(ms)
        assert groups["a"] == groups["b"], "the two binaries disagree on the aggregate"
        for name, binary in (("a", args.a), ("b", args.b)):
            m = medians[name]
            print(f"{name} ({binary}): {statistics.median(m):.1f} ms "
                  f"(medians {', '.join(f'{x:.1f}' for x in m)})")
    finally:
        for db in dbs.values():
            db.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
