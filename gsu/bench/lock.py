"""Suite ``lock``: what the concurrency contract costs a search.

Every index's ``search`` runs under the read side of its readers-writer lock after the
per-call caps are checked (:mod:`gsu.index.base`). This suite times one query per call
— the hot path of a GSU serving one user — through the locked ``search`` and through
the same function unwrapped (``type(idx).search.__wrapped__``, no lock, no caps), and
through a plain forwarding wrapper (same ``*args, **kwargs`` call, no lock, no caps) as a
control for the cost of one more Python frame; interleaved in blocks so that drift on a
shared machine hits both alike; it reports the median time of each and the median
per-block differences. It also times an uncontended read acquire + release of the lock
alone.

Writes ``lock.jsonl`` and ``lock.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gsu.bench import harness

log = logging.getLogger(__name__)


def _indexes(n: int, dim: int, seed: int) -> list[tuple[str, Any, Any, dict[str, Any]]]:
    import scipy.sparse as sp

    from gsu.datasets.synthetic import catalog_queries, clustered_catalog
    from gsu.index import Filter, FilteredIndex, FlatIndex, HNSWIndex, SeismicIndex

    cat = clustered_catalog(n, dim, seed=seed)
    x = cat.vectors
    q = catalog_queries(cat, 64, seed=seed + 1)
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Any, Any, dict[str, Any]]] = []
    flat = FlatIndex(dim)
    flat.add(x)
    out.append(("flat", flat, q, {}))
    hnsw = HNSWIndex(dim, M=16, ef_construction=100)
    hnsw.add(x)
    out.append(("hnsw", hnsw, q, {"ef": 64}))
    fi = FilteredIndex(dim, M=16, ef_construction=100)
    fi.add(x)
    allowed = Filter.from_ids(np.sort(rng.choice(n, n // 10, replace=False)))
    out.append(("filtered 10%", fi, q, {"filter": allowed}))
    docs = sp.random(n, 3000, density=0.01, format="csr", random_state=seed, dtype=np.float32)
    docs.data = np.abs(docs.data) + 0.01
    docs = docs + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, 3000, n))), shape=(n, 3000))
    seis = SeismicIndex.build(docs.tocsr(), n_postings=max(1, docs.nnz // 3000))
    qs = docs[rng.choice(n, 64, replace=False)].tocsr()
    out.append(("seismic", seis, qs, {}))
    return out


def _blocks(fa: Callable[[int], Any], fb: Callable[[int], Any], nq: int, *, blocks: int, per_block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-block mean seconds of ``fa(i)`` and ``fb(i)`` over ``per_block`` queries, alternating which goes first."""
    ta = np.empty(blocks)
    tb = np.empty(blocks)
    for b in range(blocks):
        order = (fa, fb) if b % 2 == 0 else (fb, fa)
        res = []
        for f in order:
            t0 = time.perf_counter()
            for i in range(per_block):
                f((b * per_block + i) % nq)
            res.append((time.perf_counter() - t0) / per_block)
        ta[b], tb[b] = (res[0], res[1]) if b % 2 == 0 else (res[1], res[0])
    return ta, tb


def run(*, out_dir: Path, quick: bool = False, threads: int = 1, n: int | None = None, dim: int = 64, k: int = 10,
        seed: int = 0) -> list[dict[str, Any]]:
    """Run the suite; write ``lock.jsonl`` and ``lock.png`` into ``out_dir``; return the records."""
    from gsu._rwlock import RWLock

    out_dir = Path(out_dir)
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    n = n or 20_000
    blocks = 20 if quick else 40
    per_block = 50 if quick else 200
    records: list[dict[str, Any]] = []

    lock = RWLock()
    acq, rel = lock.acquire_read, lock.release_read

    def locked_empty() -> None:
        acq()
        rel()

    reps = 200_000
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(reps):
            locked_empty()
        t1 = time.perf_counter()
        for _ in range(reps):
            pass
        t2 = time.perf_counter()
        samples.append(((t1 - t0) - (t2 - t1)) / reps)
    records.append({"suite": "lock", "index": "lock alone", "what": "read acquire + release, uncontended",
                    "overhead_us": round(float(np.median(samples)) * 1e6, 3), "threads": pinned, "machine": machine})

    for name, idx, q, params in _indexes(n, dim, seed):
        raw = type(idx).search.__wrapped__
        rows = [q[i : i + 1] for i in range(q.shape[0])]

        def locked(i: int, idx=idx, rows=rows, params=params) -> Any:
            return idx.search(rows[i], k, **params)

        def unlocked(i: int, idx=idx, rows=rows, params=params, raw=raw) -> Any:
            return raw(idx, rows[i], k, **params)

        def forward(self: Any, queries: Any, kk: Any, *args: Any, raw=raw, **kwargs: Any) -> Any:
            return raw(self, queries, kk, *args, **kwargs)

        def forwarded(i: int, idx=idx, rows=rows, params=params, forward=forward) -> Any:
            return forward(idx, rows[i], k, **params)

        for i in range(len(rows)):  # warm up (numba compilation, caches on reused filters)
            np.testing.assert_array_equal(locked(i).ids, unlocked(i).ids)
            forwarded(i)
        ta, tb = _blocks(locked, unlocked, len(rows), blocks=blocks, per_block=per_block)
        tf, tb2 = _blocks(forwarded, unlocked, len(rows), blocks=blocks, per_block=per_block)
        d, df = (ta - tb) * 1e6, (tf - tb2) * 1e6
        rec = {
            "suite": "lock", "index": name, "n": n, "dim": dim, "k": k, "queries_per_call": 1,
            "locked_us": round(float(np.median(ta)) * 1e6, 2), "unlocked_us": round(float(np.median(tb)) * 1e6, 2),
            "overhead_us": round(float(np.median(d)), 3),
            "overhead_iqr_us": [round(float(np.percentile(d, 25)), 3), round(float(np.percentile(d, 75)), 3)],
            "plain_frame_us": round(float(np.median(df)), 3),
            "lock_and_caps_us": round(float(np.median(d) - np.median(df)), 3),
            "blocks": blocks, "per_block": per_block, "threads": pinned, "machine": machine,
        }
        log.info("lock %s: %s", name, rec)
        records.append(rec)
    harness.write_jsonl(out_dir / "lock.jsonl", records)
    _plot(records, out_dir / "lock.png")
    print(harness.format_table(records, ["index", "locked_us", "unlocked_us", "overhead_us", "plain_frame_us", "lock_and_caps_us"]))
    return records


def _plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in records if "locked_us" in r]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(rs))
    ax.bar(x - 0.2, [r["unlocked_us"] for r in rs], 0.4, label="search, unlocked")
    ax.bar(x + 0.2, [r["locked_us"] for r in rs], 0.4, label="search, locked (contract)")
    for i, r in enumerate(rs):
        ax.annotate(f"+{r['overhead_us']:.2f} µs", (x[i], max(r["locked_us"], r["unlocked_us"])), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [r["index"] for r in rs])
    ax.set_ylabel("µs per one-query call (median)")
    ax.set_title("Cost of the readers-writer lock per search")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
