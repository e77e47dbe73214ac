#!/usr/bin/env bash
# Install what provdb's tests need on a fresh Debian machine. Idempotent and
# fast when everything is already there:
#   - psql (postgresql-client)        for the psql tests
#   - openssl                         for the TLS test's self-signed certificate
#   - python3 + psycopg 3 + pandas    for tests/python/test_psycopg.py
#   - python3 prov (3.x)              the W3C PROV reference implementation
#                                     that reads every export (tests/python/prov_check.py)
#   - graphviz (dot)                  for the SVG export test
#   - PostgreSQL server + python3 duckdb  for the DLProv workload's differential
#                                     test (benches/differential.py starts both)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

apt_pkgs=()
command -v psql >/dev/null 2>&1 || apt_pkgs+=(postgresql-client)
command -v openssl >/dev/null 2>&1 || apt_pkgs+=(openssl)
command -v dot >/dev/null 2>&1 || apt_pkgs+=(graphviz)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_pkgs+=(postgresql)
command -v python3 >/dev/null 2>&1 || apt_pkgs+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
    apt_pkgs+=(python3-pip)
fi
if ! command -v python3 >/dev/null 2>&1; then
    apt_pkgs+=(python3-pip)
fi

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    echo "install-test-deps: apt-get install ${apt_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"
fi

py_missing=()
python3 -c 'import psycopg' >/dev/null 2>&1 || py_missing+=("psycopg[binary]")
python3 -c 'import pandas' >/dev/null 2>&1 || py_missing+=(pandas)
python3 -c 'import duckdb' >/dev/null 2>&1 || py_missing+=(duckdb)
python3 -c 'import prov, sys; sys.exit(0 if prov.__version__.startswith("3.") else 1)' >/dev/null 2>&1 \
    || py_missing+=("prov>=3,<4")

if [ "${#py_missing[@]}" -gt 0 ]; then
    echo "install-test-deps: pip install ${py_missing[*]}"
    pip_args=(-m pip install --quiet --disable-pip-version-check)
    if ! python3 "${pip_args[@]}" "${py_missing[@]}"; then
        # Debian's system python refuses pip without this flag (PEP 668)
        python3 "${pip_args[@]}" --break-system-packages "${py_missing[@]}"
    fi
fi

python3 -c 'import psycopg, pandas, prov, duckdb; print("install-test-deps: psycopg", psycopg.__version__, "pandas", pandas.__version__, "prov", prov.__version__, "duckdb", duckdb.__version__)'
ls /usr/lib/postgresql/*/bin/initdb
dot -V
psql --version
