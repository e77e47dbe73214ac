"""Loading the DLProv workload into provdb, PostgreSQL and DuckDB, and
running the query set on each (issue 6). Shared by the benchmark
(dlprov_bench.py) and the differential test (differential.py).

The data path, so that every engine holds the same rows:
1. the sweep is posted to provdb through the DfAnalyzer protocol
   (`/pde/dataflow/json`, then `/pde/task/batch`), as training scripts do;
2. every table provdb created (schemas `public` and `alexnet`) and the rows
   of `prov.relation` are dumped to CSV files over pgwire;
3. the CSV files are bulk-loaded into PostgreSQL (COPY), DuckDB (COPY) and a
   second, empty provdb (COPY over pgwire), under the same schema, table and
   view names. PostgreSQL gets B-tree indexes on primary keys, on every
   task-id column, on task.df_exec, on the model and file name columns and on
   both ends of prov.relation; DuckDB gets none (it does not use them for
   joins).
"""

import datetime
import decimal
import math
import http.client
import os
import statistics
import time

import psycopg

import workload

DLPROV_SCHEMAS = ("public", "alexnet")
TYPES = {
    "integer": "INTEGER", "int": "INTEGER", "bigint": "BIGINT", "smallint": "SMALLINT",
    "double precision": "DOUBLE PRECISION", "real": "REAL", "text": "TEXT",
    "character varying": "TEXT", "boolean": "BOOLEAN",
    "timestamp without time zone": "TIMESTAMP", "timestamp": "TIMESTAMP",
    # DataFusion's information_schema names Arrow types
    "int32": "INTEGER", "int64": "BIGINT", "int16": "SMALLINT", "float64": "DOUBLE PRECISION",
    "float32": "REAL", "utf8": "TEXT", "utf8view": "TEXT", "largeutf8": "TEXT",
    "boolean": "BOOLEAN", "timestamp(microsecond, none)": "TIMESTAMP",
    "timestamp(µs)": "TIMESTAMP",
}


def post(port, path, body, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode()
        if r.status != 200:
            raise RuntimeError(f"POST {path}: {r.status} {text[:500]}")
        return text
    finally:
        c.close()


def load_protocol(http_port, w, batch=5000):
    """Post the spec and the sweep; returns (seconds, messages)."""
    t = time.perf_counter()
    post(http_port, "/pde/dataflow/json", workload.spec_json())
    messages = 0
    for count, body in workload.ndjson_batches(w, batch):
        post(http_port, "/pde/task/batch", body)
        messages += count
    return time.perf_counter() - t, messages


class Table:
    """One dumped table: name, (column, SQL type) list, CSV path, row count."""

    def __init__(self, schema, name, columns, path, rows=0):
        self.schema, self.name, self.columns, self.path, self.rows = (
            schema, name, columns, path, rows)

    @property
    def qualified(self):
        return f"{self.schema}.{self.name}"

    @property
    def dlprov(self):
        return self.schema in DLPROV_SCHEMAS

    def create_sql(self):
        cols = ", ".join(f'"{c}" {t}' for c, t in self.columns)
        return f"CREATE TABLE {self.qualified} ({cols})"


class Dump:
    """The dumped tables and the `alexnet` views over them."""

    def __init__(self, tables, views):
        self.tables, self.views = tables, views

    def schemas(self):
        return sorted({t.schema for t in self.tables})


def _columns(conn, schema, name):
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, name)).fetchall()
    out = []
    for col, ty in rows:
        key = ty.lower()
        if key not in TYPES:
            raise RuntimeError(f"{schema}.{name}.{col}: no mapping for type {ty!r}")
        out.append((col, TYPES[key]))
    return out


def _csv_field(v):
    """CSV as PostgreSQL reads it: NULL unquoted and empty, text quoted."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace('"', '""') + '"'


def dump(conn, out_dir):
    """Write every provdb table of the DLProv schemas and prov.relation to
    CSV files under `out_dir`; returns the Dump."""
    listing = conn.execute(
        "SELECT table_schema, table_name, table_type FROM information_schema.tables "
        "WHERE table_schema IN ('public', 'alexnet') ORDER BY 1, 2").fetchall()
    tables, views = [], []
    for schema, name, kind in listing:
        if kind.upper() == "VIEW":
            views.append((schema, name, [c for c, _ in _columns(conn, schema, name)]))
            continue
        tables.append(Table(schema, name, _columns(conn, schema, name), None))
    tables.append(Table("prov", "relation",
                        [("kind", "TEXT"), ("subject", "TEXT"), ("object", "TEXT")], None))
    for t in tables:
        t.path = os.path.join(out_dir, f"{t.schema}.{t.name}.csv")
        cols = ", ".join(f'"{c}"' for c, _ in t.columns)
        with open(t.path, "w", newline="") as f, conn.cursor() as cur:
            for row in cur.stream(f"SELECT {cols} FROM {t.qualified}"):
                f.write(",".join(_csv_field(v) for v in row) + "\n")
                t.rows += 1
    return Dump(tables, views)


def _view_sql(schema, name, cols):
    listed = ", ".join(f'"{c}"' for c in cols)
    return f"CREATE VIEW {schema}.{name} AS SELECT {listed} FROM {schema}.ds_{name}"


def pg_indexes(d):
    """The PostgreSQL indexes: keys, task-id columns, names, relation ends."""
    out = []
    for t in d.tables:
        cols = [c for c, _ in t.columns]
        wanted = [c for c in cols if c == "id" or c.endswith("task_id")]
        if t.qualified == "public.task":
            wanted += ["df_exec"]
        if t.qualified == "public.dataflow_execution":
            wanted += ["tag"]
        if t.qualified == "prov.relation":
            wanted = ["subject", "object"]
        wanted += [c for c in ("model_dir", "trainsetx") if c in cols]
        for c in wanted:
            out.append(f'CREATE INDEX ON {t.qualified} ("{c}")')
    return out


def copy_csv(conn, t, sql=None):
    sql = sql or f"COPY {t.qualified} FROM STDIN WITH (FORMAT csv)"
    with conn.cursor() as cur, cur.copy(sql) as cp, open(t.path, "rb") as f:
        while chunk := f.read(1 << 20):
            cp.write(chunk)


def load_postgres(conn, d, relation=True):
    """Create, COPY, index and ANALYZE; returns {"copy": s, "index": s}."""
    t0 = time.perf_counter()
    for s in d.schemas():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    tables = [t for t in d.tables if relation or t.dlprov]
    for t in tables:
        conn.execute(t.create_sql())
        copy_csv(conn, t)
    for schema, name, cols in d.views:
        conn.execute(_view_sql(schema, name, cols))
    t1 = time.perf_counter()
    for sql in pg_indexes(Dump(tables, [])):
        conn.execute(sql)
    conn.execute("ANALYZE")
    return {"copy": t1 - t0, "index": time.perf_counter() - t1}


def load_duckdb(con, d, relation=True):
    """Create and COPY from the CSV files; returns seconds."""
    t0 = time.perf_counter()
    for s in d.schemas():
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    for t in d.tables:
        if not relation and not t.dlprov:
            continue
        con.execute(t.create_sql())
        if t.rows == 0:
            continue  # DuckDB's sniffer rejects an empty file
        path = t.path.replace("'", "''")
        con.execute(f"COPY {t.qualified} FROM '{path}' "
                    "(FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"', "
                    "ALLOW_QUOTED_NULLS false)")
    for schema, name, cols in d.views:
        con.execute(_view_sql(schema, name, cols))
    con.execute("CHECKPOINT")
    return time.perf_counter() - t0


def load_provdb_copy(conn, d):
    """The DLProv tables into an empty provdb with CREATE TABLE and COPY;
    returns seconds."""
    t0 = time.perf_counter()
    for s in d.schemas():
        if s not in ("prov", "public"):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    for t in d.tables:
        if not t.dlprov:
            continue
        conn.execute(t.create_sql())
        copy_csv(conn, t)
    return time.perf_counter() - t0


def pg_bytes(conn, d):
    """(DLProv tables with their indexes, prov.relation with its indexes)."""
    sizes = {}
    for t in d.tables:
        sizes[t.qualified] = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)", (t.qualified,)).fetchone()[0]
    rel = sizes.pop("prov.relation", 0)
    return sum(sizes.values()), rel


# -- running queries ---------------------------------------------------------

class PgwireEngine:
    """provdb or PostgreSQL through psycopg, statements prepared server-side."""

    def __init__(self, name, connect):
        self.name, self.conn = name, connect()

    def execute(self, q):
        params = q.params or None
        sql = q.text(self.name)
        if params is None:
            sql = sql.replace("%%", "%")
        return self.conn.execute(sql, params, prepare=True).fetchall()

    def close(self):
        self.conn.close()


class DuckEngine:
    name = "duckdb"

    def __init__(self, con):
        self.con = con

    def execute(self, q):
        sql = q.text(self.name).replace("%%", "%")
        for k in q.params:
            sql = sql.replace(f"%({k})s", f"${k}")
        return self.con.execute(sql, q.params or None).fetchall()

    def close(self):
        pass


def _norm(v):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, (float, decimal.Decimal)):
        x = float(v)
        return int(x) if x.is_integer() else x
    if isinstance(v, datetime.datetime):
        return v.replace(tzinfo=None).isoformat(sep=" ")
    return str(v)


def normalize(rows):
    """Rows as comparable tuples: whole numbers as int, timestamps as text."""
    return [tuple(_norm(v) for v in r) for r in rows]


def _same_value(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        # The engines sum doubles in different orders: equal to 1e-9 relative.
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def same_rows(a, b):
    """Whether two normalized results hold the same rows in the same order."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all(_same_value(u, v) for u, v in zip(x, y))
        for x, y in zip(a, b))


def compare(queries, engines):
    """Run every query on every engine; returns a list of mismatch texts."""
    problems = []
    for q in queries:
        results = {}
        for e in engines:
            try:
                results[e.name] = normalize(e.execute(q))
            except Exception as err:  # report, keep comparing the rest
                problems.append(f"{q.name} on {e.name}: {type(err).__name__}: {err}")
        base_name = engines[0].name
        base = results.get(base_name)
        if base is not None and not base:
            problems.append(f"{q.name}: {base_name} returned no rows (the data set should "
                            "give every question an answer)")
        for name, rows in results.items():
            if name != base_name and base is not None and not same_rows(rows, base):
                problems.append(f"{q.name}: {name} differs from {base_name}:\n"
                                f"  {base_name}: {base[:5]}{' ...' if len(base) > 5 else ''}\n"
                                f"  {name}: {rows[:5]}{' ...' if len(rows) > 5 else ''}")
    return problems


def time_query(engine, q, repeats, warmups=1):
    """Median milliseconds of `repeats` runs after `warmups` untimed ones."""
    for _ in range(warmups):
        engine.execute(q)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.execute(q)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
