#!/usr/bin/env python3
"""Differential test of the DLProv workload's query set (issue 6): provdb,
PostgreSQL and DuckDB must give identical answers over the same data.

Starts provdb (fresh data dir) and posts a small sweep through the
DfAnalyzer protocol, dumps its tables and prov.relation, loads them into a
PostgreSQL cluster and a DuckDB database this script starts itself, runs
every query of workload_queries.py on the three and compares the rows
(numbers equal to a relative 1e-9). Exits 1 naming each difference.

Run by the integration tests (tests/tests/it/workload.rs) at a small scale:
    python3 benches/differential.py --provdb target/debug/provdb --executions 40
"""

import argparse
import os
import shutil
import sys
import tempfile

import duckdb

import workload
import workload_engines as we
import workload_queries
from core import Postgres, Provdb


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--provdb", required=True, help="path of the provdb binary")
    ap.add_argument("--executions", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="provdb-differential-")
    os.chmod(work, 0o755)  # the PostgreSQL server runs as another user
    pv = pg = None
    try:
        w = workload.Workload(args.executions, args.seed)
        pv = Provdb(work, args.provdb, http=True)
        seconds, messages = we.load_protocol(pv.http_port, w)
        print(f"posted {messages} task messages of {w.n} executions in {seconds:.1f} s")
        dump_dir = os.path.join(work, "dump")
        os.makedirs(dump_dir)
        with pv.connect() as c:
            d = we.dump(c, dump_dir)
        print("dumped " + ", ".join(f"{t.qualified} {t.rows}" for t in d.tables if t.rows))
        pg = Postgres(work)
        with pg.connect() as c:
            we.load_postgres(c, d)
        duck = duckdb.connect(os.path.join(work, "duck.db"))
        we.load_duckdb(duck, d)
        engines = [we.PgwireEngine("provdb", pv.connect), we.PgwireEngine("postgres", pg.connect),
                   we.DuckEngine(duck)]
        queries = workload_queries.for_workload(w)
        problems = we.compare(queries, engines)
        for e in engines:
            e.close()
        if problems:
            print("\n".join(problems))
            print(f"differential: {len(problems)} problem(s)")
            return 1
        print(f"differential: {len(queries)} queries agree on provdb, PostgreSQL "
              f"{pg.version} and DuckDB {duckdb.__version__}")
        return 0
    finally:
        for s in (pv, pg):
            if s is not None and s.proc.poll() is None:
                s.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
