#!/usr/bin/env python3
"""psycopg 3 (and pandas, if installed) against a running provdb.

Run by tests/tests/it/python.rs with PROVDB_DSN set to the server's
connection string. Exits non-zero (with a traceback) on any failure.
"""
import os
import sys
from decimal import Decimal

import psycopg

DSN = os.environ["PROVDB_DSN"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    with psycopg.connect(DSN, autocommit=True, connect_timeout=10) as conn:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE epochs (id INT PRIMARY KEY, model TEXT NOT NULL, "
            "loss DOUBLE PRECISION, accuracy DOUBLE PRECISION, done BOOLEAN)"
        )

        # parameters (server-side binding through the extended protocol)
        cur.execute(
            "INSERT INTO epochs VALUES (%s, %s, %s, %s, %s)",
            (1, "mnist-cnn", 0.75, 0.81, False),
        )
        cur.executemany(
            "INSERT INTO epochs VALUES (%s, %s, %s, %s, %s)",
            [(i, "mnist-cnn", 1.0 / i, 1 - 1.0 / (i + 4), i % 2 == 0) for i in range(2, 51)],
        )
        cur.execute("SELECT count(*) FROM epochs")
        check(cur.fetchone()[0] == 50, "50 rows after executemany")

        cur.execute("SELECT model, loss, done FROM epochs WHERE id = %s", (1,))
        row = cur.fetchone()
        check(row == ("mnist-cnn", 0.75, False), f"row 1: {row!r}")

        # NULL parameter and text with quotes
        cur.execute(
            "INSERT INTO epochs VALUES (%s, %s, %s, %s, %s)",
            (51, "it's \"quoted\"", None, None, None),
        )
        cur.execute("SELECT model, loss FROM epochs WHERE id = 51")
        check(cur.fetchone() == ("it's \"quoted\"", None), "quoted text and NULL")

        # binary results
        with conn.cursor(binary=True) as bcur:
            bcur.execute("SELECT id, loss FROM epochs WHERE id = %s", (2,))
            check(bcur.fetchone() == (2, 0.5), "binary result")

        # COPY FROM STDIN, row by row and as a block
        with cur.copy("COPY epochs (id, model, loss) FROM STDIN") as copy:
            for i in range(100, 1100):
                copy.write_row((i, "resnet", i / 1000.0))
        with cur.copy("COPY epochs (id, model) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write("2000,\"csv, model\"\n2001,plain\n")
        cur.execute("SELECT count(*) FROM epochs WHERE model = 'resnet'")
        check(cur.fetchone()[0] == 1000, "1000 rows copied")
        cur.execute("SELECT model FROM epochs WHERE id = 2000")
        check(cur.fetchone()[0] == "csv, model", "csv copy")

        # Python floats and Decimals bound to integer columns are assigned as
        # PostgreSQL assigns them: a float rounds ties to even, a numeric
        # ties away from zero
        cur.execute("CREATE TABLE whole (id INT, v INT, b BIGINT)")
        for i, (v, b) in enumerate([(7.5, Decimal("7.5")), (6.5, Decimal("-6.5"))]):
            cur.execute("INSERT INTO whole VALUES (%s, %s, %s)", (i, v, b))
        cur.execute("SELECT v, b FROM whole ORDER BY id")
        got = cur.fetchall()
        check(got == [(8, 8), (6, -7)], f"rounded integers: {got!r}")

        # errors carry SQLSTATE and leave the connection usable
        try:
            cur.execute("INSERT INTO epochs VALUES (1, 'dup', 0, 0, false)")
            raise AssertionError("duplicate key accepted")
        except psycopg.errors.UniqueViolation:
            pass
        try:
            cur.execute("SELECT * FROM no_such_table")
            raise AssertionError("unknown table accepted")
        except psycopg.errors.UndefinedTable:
            pass

    # a transaction in non-autocommit mode: rollback discards
    with psycopg.connect(DSN, connect_timeout=10) as conn:
        conn.execute("INSERT INTO epochs (id, model) VALUES (9999, 'tx')")
        conn.rollback()
        n = conn.execute("SELECT count(*) FROM epochs WHERE id = 9999").fetchone()[0]
        check(n == 0, "rolled back row is invisible")
        conn.execute("INSERT INTO epochs (id, model) VALUES (9998, 'tx')")
        conn.commit()
        n = conn.execute("SELECT count(*) FROM epochs WHERE id = 9998").fetchone()[0]
        check(n == 1, "committed row is visible")

    try:
        import pandas as pd
    except ImportError:
        if os.environ.get("PROVDB_REQUIRE_PANDAS") == "1":
            raise
        print("pandas not installed: skipping read_sql")
        return
    import warnings

    with psycopg.connect(DSN, autocommit=True, connect_timeout=10) as conn:
        with warnings.catch_warnings():
            # pandas warns that it only officially supports SQLAlchemy connectables
            warnings.simplefilter("ignore", UserWarning)
            df = pd.read_sql(
                "SELECT id, model, loss FROM epochs WHERE model = 'mnist-cnn' ORDER BY id", conn
            )
            df2 = pd.read_sql(
                "SELECT id, loss FROM epochs WHERE id < %(n)s ORDER BY id", conn, params={"n": 5}
            )
            per_model = pd.read_sql(
                "SELECT model, count(*), avg(loss) FROM epochs GROUP BY model ORDER BY model", conn
            )
    check(list(df.columns) == ["id", "model", "loss"], f"columns {list(df.columns)}")
    check(len(df) == 50, f"{len(df)} rows in DataFrame")
    check(abs(df["loss"].sum() - (0.75 + sum(1.0 / i for i in range(2, 51)))) < 1e-9, "loss sum")
    check(list(df2["id"]) == [1, 2, 3, 4], f"params: {list(df2['id'])}")
    # columns named as PostgreSQL names them, not count(*) / avg(epochs.loss)
    got = list(per_model.columns)
    check(got == ["model", "count", "avg"], f"aggregate columns {got}")
    print("pandas read_sql ok")


if __name__ == "__main__":
    main()
    print("test_psycopg: all checks passed")
    sys.exit(0)
