#!/usr/bin/env python3
"""PROV import/export benchmark (issue 5): provdb alone, the numbers the
issue asks for, measured on documents generated here.

  metrics   a yProv4ML layout-A document (metric series inline as Python
            list strings, numpy-2 reprs) with --points metric points:
            import time (points/s, MB/s), the server's peak RSS, and the
            on-disk growth after a graceful stop relative to the JSON bytes
  records   a generic PROV-JSON document with --records records (entities,
            activities, agents and relations): import records/s and MB/s
  export    that trace exported back: PROV-JSON and PROV-N, over HTTP
  memory    the server's peak RSS importing layout-A documents of growing
            size (--memory-points, series of 100,000 points each): bounded
            import memory shows as a flat peak

Each measure is the median of --repeats runs on fresh data directories.
Entry point: BENCH=prov scripts/bench.sh; writes the "prov" section of
docs/benchmarks.md.
"""

import argparse
import json
import math
import os
import random
import shutil
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request

from core import Provdb
from report import dir_bytes, machine_line, write_section

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def as_float32(x):
    """`x` rounded to the nearest float32, as a Python float: what
    `loss.item()` returns for a float32 tensor in a PyTorch training loop."""
    return struct.unpack("f", struct.pack("f", x))[0]


def metrics_document(path, points, metrics=10, float32=True):
    """Layout A: `metrics` series of points/metrics values each: a decaying
    curve plus uniform noise. With `float32` every value is float32-exact
    (a model trained in float32 logs such values, printed as float64
    reprs); without it the noise fills all 52 mantissa bits."""
    per = points // metrics
    rng = random.Random(5)
    entities = {}
    for m in range(metrics):
        epochs, values, stamps = [], [], []
        for i in range(per):
            epochs.append(str(i // 100))
            value = 2.0 * math.exp(-i / per * 3) + rng.random() * 0.05
            if float32:
                value = as_float32(value)
            values.append(f"np.float64({value!r})")
            stamps.append(str(1795286445291 + i * 37))
        entities[f"metric{m}_Context.TRAINING"] = {
            "prov-ml:type": "Metric", "prov-ml:name": f"metric{m}", "prov-ml:context": "Context.TRAINING",
            "prov-ml:source": "", "prov-ml:metric_epoch_list": "[" + ", ".join(epochs) + "]",
            "prov-ml:metric_value_list": "[" + ", ".join(values) + "]",
            "prov-ml:metric_timestamp_list": "[" + ", ".join(stamps) + "]"}
    entities["lr"] = {"prov-ml:type": "Parameter", "prov-ml:parameter_value": "0.001"}
    doc = {"prefix": {"prov-ml": "prov-ml", "default": "bench.example.org"},
           "entity": entities,
           "activity": {"bench_GR0_execution": {"prov-ml:type": "LearningExecution"}},
           "agent": {"root": {}},
           "wasAssociatedWith": {"_:id1": {"prov:activity": "bench_GR0_execution", "prov:agent": "root"}}}
    with open(path, "w") as f:
        json.dump(doc, f)
    return per * metrics


def records_document(path, records):
    """A chain of train/evaluate steps: entities, activities, a few agents,
    and used / wasGeneratedBy / wasAssociatedWith relations."""
    steps = max(1, records // 5)
    ent, act, used, gen, assoc = {}, {}, {}, {}, {}
    agents = {f"ex:person{a}": {"prov:type": "prov:Person"} for a in range(10)}
    for i in range(steps):
        ent[f"ex:model{i}"] = {"prov:type": "ex:Model", "ex:acc": {"$": str(0.5 + i % 50 / 100), "type": "xsd:double"},
                               "ex:step": {"$": str(i), "type": "xsd:int"}}
        act[f"ex:train{i}"] = {"prov:startTime": "2025-01-01T10:00:00", "ex:lr": {"$": "0.001", "type": "xsd:double"}}
        if i > 0:
            used[f"_:u{i}"] = {"prov:activity": f"ex:train{i}", "prov:entity": f"ex:model{i - 1}"}
        gen[f"_:g{i}"] = {"prov:entity": f"ex:model{i}", "prov:activity": f"ex:train{i}"}
        assoc[f"_:a{i}"] = {"prov:activity": f"ex:train{i}", "prov:agent": f"ex:person{i % 10}"}
    doc = {"prefix": {"ex": "http://example.org/bench#"}, "entity": ent, "activity": act, "agent": agents,
           "used": used, "wasGeneratedBy": gen, "wasAssociatedWith": assoc}
    with open(path, "w") as f:
        json.dump(doc, f)
    return len(ent) + len(act) + len(agents) + len(used) + len(gen) + len(assoc)


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def import_doc(binary, db, path):
    url = f"http://127.0.0.1:{db.http_port}"
    t = time.perf_counter()
    out = subprocess.run([binary, "import", path, "--url", url], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"import failed: {out.stderr}")
    return elapsed, out.stdout.strip()


def fetch(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, len(body)


def metric_import(args, work, path):
    """Import one metric document into a fresh data directory: seconds,
    RSS before, peak RSS during, data directory growth after a graceful stop."""
    os.makedirs(work)
    db = Provdb(work, args.provdb, http=True)
    base_rss = rss_mib(db.proc.pid)
    db.stop()
    empty = dir_bytes(db.data_dir)
    db.start()
    seconds, _ = import_doc(args.provdb, db, path)
    peak = peak_rss_mib(db.proc.pid)
    db.stop()
    grown = dir_bytes(db.data_dir) - empty
    shutil.rmtree(work)
    return seconds, base_rss, peak, grown


def memory_scaling(args, gen, sizes, per_series):
    """Peak RSS importing one layout-A document per size in `sizes`, each
    of series of `per_series` points: [(points, json bytes, base MiB, peak MiB)]."""
    rows = []
    for points in sizes:
        path = os.path.join(gen, f"memory-{points}.json")
        metrics_document(path, points, metrics=max(1, points // per_series))
        size = os.path.getsize(path)
        _, base, peak, _ = metric_import(args, os.path.join(gen, f"memory-{points}"), path)
        os.remove(path)
        print(f"memory: {points} points, {size / 1e6:.1f} MB: {base:.0f} -> {peak:.0f} MiB", flush=True)
        rows.append((points, size, base, peak))
    return rows


def run_once(args, work, metrics_path, noise_path, records_path):
    m_s, base_rss, m_peak, metric_disk = metric_import(args, os.path.join(work, "float32"), metrics_path)
    noise_disk = metric_import(args, os.path.join(work, "float64"), noise_path)[3]
    os.makedirs(os.path.join(work, "records"))
    db = Provdb(os.path.join(work, "records"), args.provdb, http=True)
    r_s, r_out = import_doc(args.provdb, db, records_path)
    url = f"http://127.0.0.1:{db.http_port}/prov/export?all=true"
    ej = fetch(url + "&format=json")
    en = fetch(url + "&format=provn")
    db.stop()
    shutil.rmtree(work)
    return {"metrics_s": m_s, "metrics_peak_mib": m_peak, "base_rss_mib": base_rss,
            "metric_disk": metric_disk, "noise_disk": noise_disk, "records_s": r_s,
            "export_json_s": ej[0], "export_json_bytes": ej[1], "export_provn_s": en[0], "r_out": r_out}


def git_commit():
    out = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--provdb", required=True)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-points", default="1000000,4000000,8000000",
                   help="comma-separated document sizes (metric points) for the memory measure")
    p.add_argument("--memory-series", type=int, default=100_000,
                   help="points per metric series in the memory measure's documents")
    args = p.parse_args()
    gen = tempfile.mkdtemp(prefix="provdb-prov-bench-")
    metrics_path = os.path.join(gen, "metrics.json")
    noise_path = os.path.join(gen, "metrics-float64.json")
    records_path = os.path.join(gen, "records.json")
    points = metrics_document(metrics_path, args.points)
    metrics_document(noise_path, args.points, float32=False)
    records = records_document(records_path, args.records)
    m_bytes, r_bytes = os.path.getsize(metrics_path), os.path.getsize(records_path)
    n_bytes = os.path.getsize(noise_path)
    print(f"metrics document: {points} points, {m_bytes / 1e6:.1f} MB; records document: {records} records, "
          f"{r_bytes / 1e6:.1f} MB", flush=True)
    runs = []
    for i in range(args.repeats):
        r = run_once(args, tempfile.mkdtemp(prefix="provdb-prov-run-"), metrics_path, noise_path, records_path)
        print(f"run {i + 1}: {r}", flush=True)
        runs.append(r)
    memory = memory_scaling(args, gen, [int(x) for x in args.memory_points.split(",") if x],
                            args.memory_series)
    shutil.rmtree(gen)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if not k.endswith("_out")}
    lines = [
        "## PROV import and export (issue 5)",
        "",
        machine_line(),
        f"- provdb built from commit {git_commit()}; medians of {args.repeats} runs, each on a fresh data directory",
        f"- reproduce: `BENCH=prov scripts/bench.sh` (benches/prov.py --points {args.points} --records {args.records})",
        "- import goes through `provdb import FILE --url ...` (reads the file, POSTs it to /prov/import, waits "
        "for the durable commit)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| yProv4ML layout-A document, float32-exact values | {points:,} metric points inline, "
        f"{m_bytes / 1e6:.1f} MB of JSON |",
        f"| import time | {med['metrics_s']:.2f} s = {points / med['metrics_s']:,.0f} points/s, "
        f"{m_bytes / 1e6 / med['metrics_s']:.1f} MB/s |",
        f"| server RSS before / peak during the import | {med['base_rss_mib']:.0f} MiB / {med['metrics_peak_mib']:.0f} MiB |",
        f"| on disk after a graceful stop (data directory growth) | {med['metric_disk'] / 1e6:.2f} MB = "
        f"{100 * med['metric_disk'] / m_bytes:.1f}% of the JSON (target ≤ 10%) |",
        f"| on disk per metric point | {med['metric_disk'] / points:.1f} bytes (the JSON: {m_bytes / points:.1f}) |",
        f"| the same document with full-precision float64 noise | {n_bytes / 1e6:.1f} MB of JSON, "
        f"{med['noise_disk'] / 1e6:.2f} MB on disk = {100 * med['noise_disk'] / n_bytes:.1f}%, "
        f"{med['noise_disk'] / points:.1f} bytes per point |",
        f"| generic PROV-JSON trace | {records:,} records, {r_bytes / 1e6:.1f} MB |",
        f"| import time | {med['records_s']:.2f} s = {records / med['records_s']:,.0f} records/s, "
        f"{r_bytes / 1e6 / med['records_s']:.1f} MB/s |",
        f"| export of that trace (`/prov/export?all=true`), PROV-JSON | {med['export_json_s']:.2f} s, "
        f"{med['export_json_bytes'] / 1e6:.1f} MB |",
        f"| export of that trace, PROV-N | {med['export_provn_s']:.2f} s |",
    ]
    lines += ["", f"Import memory against document size (layout A, series of {args.memory_series:,} points, "
              "one run each):", "",
              "| metric points | JSON | server RSS before | peak during the import |", "|---|---|---|---|"]
    lines += [f"| {pts:,} | {size / 1e6:.0f} MB | {base:.0f} MiB | {peak:.0f} MiB |" for pts, size, base, peak in memory]
    lines += [
        "",
        "Both metric documents hold ten series of a decaying curve plus uniform noise. In the first, every",
        "value is float32-exact, as the losses and accuracies of a model trained in float32 are",
        "(`loss.item()`), printed as float64 reprs the way yProv4ML writes them under numpy 2. The",
        "points are `ml.metric` rows (run, name, context, epoch, value, time) in zstd Parquet: the repeated",
        "strings and the epochs dictionary- or run-length-encode to almost nothing, the millisecond",
        "timestamps delta-encode, and floats are stored BYTE_STREAM_SPLIT, so the float64 bytes a",
        "float32 value leaves zero cost nothing. In the second document the noise fills all 52 mantissa",
        "bits (about 48 bits of entropy per value, 6 bytes): no lossless encoding gets under the 10%",
        "target there (5.2 bytes per point); only lossy storage (float32, as yProv4ML's NetCDF files",
        "do) would. Import memory does not grow with the document: the body is parsed as it arrives,",
        "parsed series are parked (in memory up to 2^20 points, then in a spill file), and the commit",
        "writes the points in 65,536-row chunks to staged Parquet segments it attaches. What is left",
        "is one record at a time: a single series of millions of inline points is parsed whole.",
    ]
    write_section(args.out, "prov", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
