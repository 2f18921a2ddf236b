"""Build benchmark: ``FilteredIndex`` against faiss ``IndexHNSWFlat`` and ``IndexIVFFlat`` at
each size step, every library built, saved and opened in a process of its own.

For each size ``n`` (× ``dim``, a clustered catalog — an anisotropic Gaussian mixture with
power-law cluster sizes — and optionally standard-normal vectors as the worst case):

- **build**: one child process per library loads the vectors (``np.load``, in memory),
  notes its resident memory, builds with ``threads`` threads (faiss's OpenMP, numba,
  BLAS), saves, and reports the build time (gsu: calibration included, as a user's
  ``add`` runs it), the peak resident memory of the process (``VmHWM``) and the memory
  the build added over the loaded data and both libraries' imported code, and the file
  size. Same ``M`` and
  ``efConstruction`` for the two HNSW builds, the same ``nlist`` for the two IVFs.
- **open**: another child opens each file (gsu ``load(mmap=True)``; faiss
  ``read_index``), median of 5 after one warm-up open, then one search.
- **search** (gsu only): recall@10 of the default ``search`` against the exact answer,
  one query per call with a fresh ``Filter`` built from an id array in the call, random
  filters at 0.1 / 1 / 10 / 50 % and time windows (id ranges) at 1 / 10 %, 100 queries each;
  median latency beside it.

Writes ``build.jsonl`` (one record per library and size, with provenance) and
``build.png`` into ``out_dir``; the vectors of each size are cached as ``.npy`` under
``cache`` (they take minutes to draw at 10^6).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LIBS = ("gsu", "faiss-hnsw", "faiss-ivf")


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _catalog(n: int, dim: int) -> Any:
    """The clustered catalog of the ``n`` × ``dim`` step (its mixture draws the step's second query kind)."""
    from gsu.datasets.synthetic import clustered_catalog

    return clustered_catalog(n, dim, n_clusters=max(64, int(np.sqrt(n) / 4)), seed=0)


def vectors(n: int, dim: int, kind: str, cache: Path) -> Path:
    """The cached ``.npy`` of ``n`` × ``dim`` vectors of ``kind`` (``clustered`` / ``random``)."""
    path = cache / f"build_{kind}_{n}x{dim}_s0.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        if kind == "clustered":
            x = _catalog(n, dim).vectors
        elif kind == "random":
            x = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        else:
            raise ValueError(f"unknown vector kind {kind!r}")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(x, dtype=np.float32))
        os.replace(tmp, path)
    return path


def child_build(lib: str, data: str, out: str, M: int, efc: int, threads: int) -> dict[str, Any]:
    """Build ``lib`` over the vectors in ``data``, save it to ``out``; the measurements."""
    from gsu.bench import harness

    harness.pin_threads(threads)
    import faiss  # noqa: F401  (both libraries' code loaded before the baseline: the build's memory is what it adds)

    import gsu.index  # noqa: F401

    x = np.load(data)
    n, d = x.shape
    base = _rss_mb("VmRSS")
    t = time.perf_counter()
    if lib == "gsu":
        from gsu.index import FilteredIndex

        idx = FilteredIndex(d, "ip", M=M, ef_construction=efc)
        idx.add(x)
        build = time.perf_counter() - t
        extra = {"nlist": int(idx.ivf.nlist), "calibrated": idx.calibration is not None,
                 "calibration_s": None if idx.calibration is None else float(idx.calibration.seconds)}
        idx.save(out)
    else:
        import faiss

        from gsu.index.ivf import default_nlist

        if lib == "faiss-hnsw":
            idx = faiss.IndexHNSWFlat(d, M, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = efc
            idx.add(x)
            extra = {}
        elif lib == "faiss-ivf":
            nlist = default_nlist(n)
            quant = faiss.IndexFlatIP(d)
            idx = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
            idx.train(x)
            idx.add(x)
            extra = {"nlist": nlist}
        else:
            raise ValueError(f"unknown library {lib!r}")
        build = time.perf_counter() - t
        tmp = out + ".tmp"
        faiss.write_index(idx, tmp)
        os.replace(tmp, out)
    return {"lib": lib, "n": n, "dim": d, "M": M, "ef_construction": efc, "threads": threads, "build_s": build,
            "peak_rss_mb": _rss_mb("VmHWM"), "data_rss_mb": base, "build_rss_mb": _rss_mb("VmHWM") - base,
            "file_bytes": os.path.getsize(out), **extra}


def child_open(lib: str, path: str, reps: int = 5) -> dict[str, Any]:
    """Open time (median of ``reps`` after a warm-up open) and the first search."""
    import statistics

    if lib == "gsu":
        from gsu.index import load

        opener = lambda: load(path, mmap=True)  # noqa: E731
    else:
        import faiss

        opener = lambda: faiss.read_index(path)  # noqa: E731
    opener()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        idx = opener()
        ts.append(time.perf_counter() - t)
    q = np.random.default_rng(0).standard_normal((1, idx.d if lib != "gsu" else idx.dim)).astype(np.float32)
    t = time.perf_counter()
    idx.search(q, 10)
    first = time.perf_counter() - t
    return {"open_ms_median": 1000 * statistics.median(ts), "open_ms_all": [1000 * v for v in ts],
            "first_search_ms": 1000 * first}


def child_search(path: str, data: str, n_queries: int = 100) -> dict[str, Any]:
    """Recall@10 and median latency of the default search, fresh filter per call, one thread.

    Queries: rows plus isotropic noise of norm ~0.49 (0.05 per axis at 96 d: about a row's
    distance to its nearest neighbour at 10^6, farther than that at 2·10^6), keys
    ``{kind}_{selectivity}``; on the clustered catalog also fresh draws from its mixture (the
    filtered suite's query kind, :func:`gsu.datasets.synthetic.catalog_queries`), keys
    ``{kind}_{selectivity}_mixture``, on the same filters."""
    from gsu.bench import harness
    from gsu.index import Filter, load

    harness.pin_threads(1)
    x = np.load(data, mmap_mode="r")
    n = x.shape[0]
    idx = load(path, mmap=True)
    rng = np.random.default_rng(1)
    qrows = rng.choice(n, n_queries, replace=False)
    q = np.asarray(x[qrows], dtype=np.float32) + 0.05 * rng.standard_normal((n_queries, x.shape[1])).astype(np.float32)
    kinds = [("", q)]
    if "clustered" in Path(data).name:
        from gsu.datasets.synthetic import catalog_queries

        cat = _catalog(n, x.shape[1])
        probe = rng.choice(n, 16, replace=False)
        if not np.array_equal(cat.vectors[probe], np.asarray(x[probe])):
            raise RuntimeError(f"{data}: not the step's clustered catalog (rows differ from a regenerated one)")
        kinds.append(("_mixture", catalog_queries(cat, n_queries, seed=2)))
        del cat
    out: dict[str, Any] = {}
    for kind, s in (("random", 0.001), ("random", 0.01), ("random", 0.1), ("random", 0.5), ("range", 0.01), ("range", 0.1)):
        m = max(10, int(s * n))
        if kind == "random":
            sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(n_queries)]
        else:
            sets = [np.arange(a, a + m, dtype=np.int64) for a in rng.integers(0, n - m, n_queries)]
        for suffix, qq in kinds:
            for i in range(min(10, n_queries)):  # warm-up (compilation, first touch)
                idx.search(qq[i], 10, filter=Filter(sets[i]))
            ts, hits = [], 0
            for i in range(n_queries):
                t = time.perf_counter()
                res = idx.search(qq[i], 10, filter=Filter(sets[i]))
                ts.append(time.perf_counter() - t)
                allowed = sets[i]
                sc = np.asarray(x[allowed], dtype=np.float64) @ qq[i].astype(np.float64)
                kth = np.partition(sc, -10)[-10]
                got = res.ids[0][res.ids[0] >= 0]
                hits += int((np.asarray(x[np.sort(got)], dtype=np.float64) @ qq[i].astype(np.float64) >= kth - 1e-6).sum())
            out[f"{kind}_{s:g}{suffix}"] = {"recall": hits / (10 * n_queries), "ms_median": 1000 * float(np.median(ts))}
    return out


def _child(args: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gsu.bench.build", "--child", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                                    os.environ.get("PYTHONPATH", "")] if p)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd="/")
    if r.returncode != 0:
        raise RuntimeError(f"child {' '.join(args[:2])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gsu.bench import harness

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    for ax, key, label in zip(axes, ("build_s", "peak_rss_mb", "file_bytes"),
                              ("build time [s]", "peak resident memory [MB]", "index file [MB]")):
        for lib in LIBS:
            for kind in sorted({r["data"] for r in rows}):
                pts = sorted((r["n"], r[key] / (1e6 if key == "file_bytes" else 1)) for r in rows
                             if r["lib"] == lib and r["data"] == kind)
                if pts:
                    st = harness.method_style(lib)
                    ax.plot(*zip(*pts), marker=st["marker"], color=st["color"], ls="-" if kind == "clustered" else ":",
                            label=f"{lib} ({kind})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("vectors")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    harness.legend_outside(fig, axes)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def run(*, out_dir: str | os.PathLike, quick: bool = False, threads: int = 2, sizes: tuple[int, ...] | None = None,
        dim: int | None = None, kinds: tuple[str, ...] = ("clustered",), M: int | None = None, ef_construction: int | None = None,
        libs: tuple[str, ...] = LIBS, cache: str | os.PathLike = "results/cache", say: Any = print) -> list[dict[str, Any]]:
    """The suite (``gsu bench build``): default 10^5 and 10^6 × 96, M 32, efConstruction 200;
    ``quick``: 20,000 × 32, M 16, efConstruction 64. ``threads``: build threads."""
    from gsu.bench import harness, runner

    sizes = sizes or ((20_000,) if quick else (100_000, 1_000_000))
    dim = dim or (32 if quick else 96)
    M = M or (16 if quick else 32)
    ef_construction = ef_construction or (64 if quick else 200)

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache).resolve()
    files = Path(os.environ.get("GSU_BUILD_FILES", str(cache / "build_files")))
    files.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for n in sizes:
            data = vectors(n, dim, kind, cache)
            for lib in libs:
                path = files / f"{lib}_{kind}_{n}x{dim}_M{M}_efc{ef_construction}.{'gsu' if lib == 'gsu' else 'faiss'}"
                say(f"build: {lib} {kind} {n} x {dim} ...")
                prov = runner.provenance(suite="build")
                prov["driver_peak_rss_mb"] = prov.pop("peak_rss_mb")  # the record's peak is the build process's
                rec = {"data": kind, **prov,
                       **_child(["build", lib, str(data), str(path), str(M), str(ef_construction), str(threads)])}
                rec.update(_child(["open", lib, str(path)]))
                if lib == "gsu":
                    rec["search"] = _child(["search", str(path), str(data)])
                rows.append(rec)
                harness.write_jsonl(out / "build.jsonl", [rec], append=True)
                say(f"  {lib}: build {rec['build_s']:.1f} s, peak {rec['peak_rss_mb']:.0f} MB "
                    f"(+{rec['build_rss_mb']:.0f} over the data), file {rec['file_bytes'] / 1e6:.0f} MB, "
                    f"open {rec['open_ms_median']:.1f} ms")
                if lib == "gsu":
                    say("  search: " + ", ".join(f"{k} recall {v['recall']:.3f} {v['ms_median']:.2f} ms"
                                                 for k, v in rec["search"].items()))
    plot(harness.read_jsonl(out / "build.jsonl"), out / "build.png")
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        logging.basicConfig(level=logging.WARNING)
        what, args = sys.argv[2], sys.argv[3:]
        if what == "build":
            res = child_build(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]))
        elif what == "open":
            res = child_open(args[0], args[1])
        elif what == "search":
            res = child_search(args[0], args[1])
        else:
            raise SystemExit(f"unknown child {what!r}")
        print(json.dumps(res))
    else:
        import argparse

        ap = argparse.ArgumentParser(description="FilteredIndex builds against faiss, one process per library")
        ap.add_argument("--out", default="results")
        ap.add_argument("--sizes", default="100000,1000000")
        ap.add_argument("--dim", type=int, default=96)
        ap.add_argument("--kinds", default="clustered")
        ap.add_argument("--libs", default=",".join(LIBS))
        ap.add_argument("-M", type=int, default=32)
        ap.add_argument("--ef-construction", type=int, default=200)
        ap.add_argument("--threads", type=int, default=2)
        ap.add_argument("--cache", default="results/cache")
        a = ap.parse_args()
        run(out_dir=a.out, sizes=tuple(int(s) for s in a.sizes.split(",")), dim=a.dim, kinds=tuple(a.kinds.split(",")),
            M=a.M, ef_construction=a.ef_construction, threads=a.threads, libs=tuple(a.libs.split(",")), cache=a.cache)
