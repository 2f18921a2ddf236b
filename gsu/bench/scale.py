"""Scale benchmark: open time of a memory-mapped index (per-array checksums deferred vs
the whole-file check), the cost of ``remove`` / ``upsert`` / ``compact`` and of search
with tombstones, and a ``ShardedIndex`` on Dask against one index.

Writes ``scale.jsonl`` and ``scale.png`` into ``out_dir``. ``open_file`` (optional): a
large saved index to time (else one of ``quick`` size is written under ``out_dir``);
``before_pythonpath``: a checkout of the code before per-array checksums, timed on the
same file in its own process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_OPEN_SCRIPT = r"""
import json, os, statistics, sys, time
import numpy as np
path, reps = sys.argv[1], int(sys.argv[2])
from gsu.index import load
load(path, mmap=True)  # imports and page cache warm
ts = []
for _ in range(reps):
    t = time.perf_counter(); idx = load(path, mmap=True); ts.append(time.perf_counter() - t)
q = np.random.default_rng(0).standard_normal((1, idx.dim)).astype(np.float32)
t = time.perf_counter(); idx.search(q, 10); first = time.perf_counter() - t
t = time.perf_counter(); idx.search(q, 10); second = time.perf_counter() - t
print(json.dumps({"kind": type(idx).KIND, "file_bytes": os.path.getsize(path), "n": int(idx.ntotal), "dim": int(idx.dim),
                  "open_ms_median": 1000 * statistics.median(ts), "open_ms_all": [1000 * t for t in ts],
                  "first_search_ms": 1000 * first, "second_search_ms": 1000 * second}))
"""


def _median_ms(fn: Any, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def bench_open(path: str, pythonpath: str, label: str, reps: int = 7) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    # cwd "/": ``python -c`` puts the working folder ahead of PYTHONPATH on sys.path
    out = subprocess.run([sys.executable, "-c", _OPEN_SCRIPT, path, str(reps)], env=env, capture_output=True, text=True,
                         check=True, cwd="/")
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return {"bench": "open", "code": label, **rec}


def bench_mutable(n: int, dim: int, threads: int, reps: int = 5) -> list[dict[str, Any]]:
    from gsu.index import FlatIndex, HNSWIndex, IVFIndex

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    q = rng.standard_normal((200, dim)).astype(np.float32)
    rows: list[dict[str, Any]] = []
    for name, make, params in (("flat", lambda: FlatIndex(dim), {}), ("ivf", lambda: IVFIndex(dim), {"nprobe": 16}),
                               ("hnsw", lambda: HNSWIndex(dim, M=16, ef_construction=100), {"ef": 64})):
        idx = make()
        idx.compact_threshold = 1.0
        t = time.perf_counter()
        idx.add(x)
        build = time.perf_counter() - t
        for qi in q[:5]:
            idx.search(qi, 10, **params)
        search0 = _median_ms(lambda: [idx.search(qi, 10, **params) for qi in q], 3) / q.shape[0]
        batch = max(1, n // 1000)  # 0.1 % of the items per call
        rem_ms, up_ms = [], []
        for r in range(reps):
            ids = rng.choice(idx.live_ids, batch, replace=False)
            t = time.perf_counter()
            idx.remove(ids)
            rem_ms.append(1000 * (time.perf_counter() - t))
            up = rng.choice(idx.live_ids, batch, replace=False)
            v = rng.standard_normal((batch, dim)).astype(np.float32)
            t = time.perf_counter()
            idx.upsert(v, up)
            up_ms.append(1000 * (time.perf_counter() - t))
        # 10 % tombstones, then compact
        idx.remove(rng.choice(idx.live_ids, n // 10 - idx.n_dead, replace=False))
        for qi in q[:5]:
            idx.search(qi, 10, **params)
        search10 = _median_ms(lambda: [idx.search(qi, 10, **params) for qi in q], 3) / q.shape[0]
        dead = idx.n_dead
        t = time.perf_counter()
        idx.compact()
        compact = time.perf_counter() - t
        search_c = _median_ms(lambda: [idx.search(qi, 10, **params) for qi in q], 3) / q.shape[0]
        rows.append({"bench": "mutable", "kind": name, "n": n, "dim": dim, "threads": threads, "batch": batch,
                     "build_s": build, "remove_ms_median": statistics.median(rem_ms), "upsert_ms_median": statistics.median(up_ms),
                     "search_ms_per_query": search0, "search_ms_per_query_10pct_dead": search10, "dead_rows_compacted": dead,
                     "compact_s": compact, "search_ms_per_query_after_compact": search_c, "params": params})
        log.info("mutable %s: %s", name, rows[-1])
    return rows


def bench_sharded(n: int, dim: int, threads: int, n_shards: int, folder: Path, reps: int = 5) -> list[dict[str, Any]]:
    import distributed

    from gsu.index import Filter, FlatIndex, build_shards

    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    q = rng.standard_normal((256, dim)).astype(np.float32)
    single = FlatIndex(dim)
    single.add(x)
    allowed = rng.choice(n, n // 100, replace=False)
    rows: list[dict[str, Any]] = []
    want = {None: single.search(q, 10), "ids1pct": single.search(q, 10, filter=Filter.from_ids(allowed))}

    def run(label: str, fn: Any) -> None:
        for fname in (None, "ids1pct"):
            f = None if fname is None else Filter.from_ids(allowed)
            res = fn(f)
            equal = bool(np.array_equal(res.ids, want[fname].ids))
            ms = _median_ms(lambda: fn(None if fname is None else Filter.from_ids(allowed)), reps)
            rows.append({"bench": "sharded", "scheduler": label, "n": n, "dim": dim, "n_shards": n_shards if label != "single" else 1,
                         "nq": q.shape[0], "k": 10, "filter": fname or "none", "batch_ms_median": ms, "equal_to_single": equal,
                         "threads": threads})
            log.info("sharded %s: %s", label, rows[-1])

    run("single", lambda f: single.search(q, 10, filter=f))
    sh = build_shards(functools.partial(FlatIndex, dim), x, n_shards=n_shards, folder=folder / "shards")
    run("threads", lambda f: sh.search(q, 10, filter=f))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            sh.client = client
            sh.search(q, 10)  # each worker maps its shards and verifies them once
            run("localcluster-2w", lambda f: sh.search(q, 10, filter=f))
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    op = [r for r in rows if r["bench"] == "open"]
    if op:
        ax = axes[0]
        ax.bar([r["code"] for r in op], [r["open_ms_median"] for r in op], color=["tab:gray", "tab:blue"][: len(op)])
        ax.set_yscale("log")
        ax.set_ylabel("open ms (median, log)")
        ax.set_title(f"load(mmap=True), {op[0]['file_bytes'] / 1e9:.2f} GB {op[0]['kind']}")
        for i, r in enumerate(op):
            ax.text(i, r["open_ms_median"], f"{r['open_ms_median']:.1f}", ha="center", va="bottom")
    mu = [r for r in rows if r["bench"] == "mutable"]
    if mu:
        ax = axes[1]
        w = 0.2
        xs = np.arange(len(mu))
        for j, (key, lab) in enumerate((("search_ms_per_query", "search"), ("search_ms_per_query_10pct_dead", "search, 10% dead"),
                                        ("search_ms_per_query_after_compact", "after compact"))):
            ax.bar(xs + (j - 1) * w, [r[key] for r in mu], w, label=lab)
        ax.set_xticks(xs, [f"{r['kind']}\nremove {r['remove_ms_median']:.1f} ms\nupsert {r['upsert_ms_median']:.1f} ms" for r in mu])
        ax.set_ylabel("ms per query")
        ax.set_title(f"tombstones, n={mu[0]['n']}, {mu[0]['batch']} ids per call")
        ax.legend(fontsize=8)
    sh = [r for r in rows if r["bench"] == "sharded"]
    if sh:
        ax = axes[2]
        labels = [f"{r['scheduler']}\n{r['filter']}" for r in sh]
        ax.bar(range(len(sh)), [r["batch_ms_median"] for r in sh], color=["tab:green" if r["equal_to_single"] else "tab:red" for r in sh])
        ax.set_xticks(range(len(sh)), labels, fontsize=7)
        ax.set_ylabel(f"ms per batch of {sh[0]['nq']} queries")
        ax.set_title(f"ShardedIndex (Flat, n={sh[0]['n']}) vs one index; green = equal")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run(*, out_dir: str | os.PathLike, quick: bool = False, threads: int = 1, open_file: str | None = None,
        before_pythonpath: str | None = None) -> list[dict[str, Any]]:
    from gsu.bench.harness import pin_threads

    pin_threads(threads)
    out = Path(out_dir).resolve()  # the open benchmark reads the file from a child process started in "/"
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    here = str(Path(__file__).resolve().parents[2])
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        if open_file is None:
            from gsu.index import FlatIndex

            n = 20_000 if quick else 1_000_000
            idx = FlatIndex(96)
            idx.add(np.random.default_rng(0).standard_normal((n, 96)).astype(np.float32))
            open_file = str(Path(tmp) / "flat.gsu")
            idx.save(open_file)
            del idx
        if before_pythonpath:
            rows.append(bench_open(open_file, before_pythonpath, "before (whole-file sha256)"))
        rows.append(bench_open(open_file, here, "after (per-array, on first use)"))
        rows += bench_mutable(5_000 if quick else 50_000, 32, threads)
        rows += bench_sharded(20_000 if quick else 400_000, 64, threads, 4, Path(tmp))
    from gsu.bench.harness import write_jsonl

    write_jsonl(out / "scale.jsonl", rows)
    plot(rows, out / "scale.png")
    return rows


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--open-file", default=None)
    ap.add_argument("--before", default=None, help="PYTHONPATH of the code before per-array checksums")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    for r in run(out_dir=a.out, quick=a.quick, threads=a.threads, open_file=a.open_file, before_pythonpath=a.before):
        print(json.dumps(r))
