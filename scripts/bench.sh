#!/usr/bin/env bash
# Run the benchmarks: the core database against PostgreSQL (both started
# here), then the DLProv ingest. Installs what it needs (PostgreSQL server,
# psycopg, DuckDB: scripts/install-test-deps.sh), builds provdb in release
# mode, writes docs/benchmarks.md (each script rewrites its own section). Arguments go to benches/core.py
# (e.g. --rows 1000000 --repeats 3); BENCH=core, BENCH=ingest,
# BENCH=lineage, BENCH=prov or BENCH=dlprov runs one (arguments then go to
# that script). BENCH=dlprov is the DLProv workload against PostgreSQL and
# DuckDB (issue 6): benches/dlprov_bench.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL's server, psycopg and DuckDB: the tests need them too, and the
# test installer knows Debian's pip quirks
bash scripts/install-test-deps.sh
pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
export PATH="$pg_bin:$PATH"
cargo build --release -p provdb-server --bin provdb
target="${CARGO_TARGET_DIR:-target}"
bench="${BENCH:-all}"
if [ "$bench" = all ] || [ "$bench" = core ]; then
    python3 benches/core.py --provdb "$target/release/provdb" --out docs/benchmarks.md "$@"
fi
if [ "$bench" = all ] || [ "$bench" = ingest ]; then
    python3 benches/ingest.py --provdb "$target/release/provdb" --out docs/benchmarks.md
fi
if [ "$bench" = dlprov ]; then
    python3 benches/dlprov_bench.py --provdb "$target/release/provdb" --out docs/benchmarks.md "$@"
elif [ "$bench" = all ]; then
    python3 benches/dlprov_bench.py --provdb "$target/release/provdb" --out docs/benchmarks.md
fi
if [ "$bench" = prov ]; then
    python3 benches/prov.py --provdb "$target/release/provdb" --out docs/benchmarks.md "$@"
fi
if [ "$bench" = lineage ]; then
    python3 benches/lineage.py --provdb "$target/release/provdb" --out docs/benchmarks.md "$@"
elif [ "$bench" = all ]; then
    python3 benches/lineage.py --provdb "$target/release/provdb" --out docs/benchmarks.md
fi
