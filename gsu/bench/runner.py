"""The benchmark runner the suites share: interleaved timing, provenance, outside data.

- :func:`time_interleaved` — the one timer of the suites: warm-up, rounds that run every
  method once each (so load drifting on a shared machine hits all alike), medians,
  per-call latency percentiles, per-method and total time budgets;
- :func:`provenance` — what every record carries besides its numbers: the exact command
  that reproduces it, the data spec, peak resident memory, machine and pinned threads;
- :func:`dense_suite_data` / :func:`sparse_suite_data` — a :class:`gsu.datasets.registry.Dataset`
  (``gsu bench ... --data SPEC``, ``--filters SPEC``) in the form the ``filtered`` and
  ``sparse`` suites run on.

Thread pinning, recall, result checks, JSON lines and plots live in
:mod:`gsu.bench.harness`; this module builds on it.
"""

from __future__ import annotations

import logging
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gsu.bench import harness

log = logging.getLogger(__name__)

__all__ = ["Calls", "Measured", "time_interleaved", "provenance", "command_line", "peak_rss_mb",
           "dense_vectors", "dense_suite_data", "sparse_suite_data"]


@dataclass(frozen=True)
class Calls:
    """A method timed call by call: ``fn(i)`` for ``i`` in ``range(n)`` is one pass
    (per-call latencies are recorded); ``n`` calls per pass."""

    fn: Callable[[int], Any]
    n: int


@dataclass
class Measured:
    """One method's timing: ``timing`` (median pass, qps = calls per second of the median
    pass, per-call p50/p99 in ms), every pass's seconds, and the calls per pass."""

    timing: harness.Timing
    passes: list[float]
    calls: int
    #: seconds of the cold pass (``time_interleaved(..., cold=...)``), else None
    cold_s: float | None = None
    best_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.best_s = min(self.passes)

    @property
    def qps_best(self) -> float:
        """Calls per second of the fastest pass."""
        return self.calls / self.best_s if self.best_s > 0 else float("inf")


def time_interleaved(
    methods: Mapping[str, Callable[[], Any] | Calls],
    *,
    rounds: int,
    warm: str = "once",
    max_seconds_each: float | None = None,
    max_seconds_total: float | None = None,
    fast_s: float | None = None,
    fast_rounds: int | None = None,
    cold: Callable[[], Any] | None = None,
) -> dict[str, Measured]:
    """Time every method over ``rounds`` rounds; one round runs each method's pass once.

    Args:
        methods: name -> a no-argument pass, or :class:`Calls` (timed call by call).
        rounds: rounds to run (at least one pass per method is always timed).
        warm: ``"once"`` — one untimed pass of every method before the first round;
            ``"each"`` — an untimed pass right before every timed pass, so each method is
            timed with its own data hot in cache (none profits from the method before it).
        max_seconds_each: a method whose timed passes add up to more than this sits out
            the later rounds.
        max_seconds_total: no new round starts after this many seconds.
        fast_s, fast_rounds: when every method's median pass is under ``fast_s``
            seconds, run ``fast_rounds`` rounds instead (short calls get more repeats).
        cold: when given, every method is first timed once right after ``cold()`` ran
            (e.g. a stream through memory that evicts the CPU caches), before any warm-up:
            ``Measured.cold_s``; that pass counts in no median.

    Returns:
        name -> :class:`Measured`.
    """
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    if warm not in ("once", "each"):
        raise ValueError(f"warm: expected 'once' or 'each', got {warm!r}")
    names = list(methods)
    passes: dict[str, list[float]] = {m: [] for m in names}
    lat: dict[str, list[float]] = {m: [] for m in names}

    def run_pass(m: str, timed: bool) -> None:
        f = methods[m]
        if isinstance(f, Calls):
            fn, n = f.fn, f.n
            if not timed:
                for i in range(n):
                    fn(i)
                return
            out = lat[m]
            t0 = time.perf_counter()
            for i in range(n):
                t1 = time.perf_counter()
                fn(i)
                out.append(time.perf_counter() - t1)
            passes[m].append(time.perf_counter() - t0)
        elif timed:
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            passes[m].append(dt)
            lat[m].append(dt)
        else:
            f()

    cold_s: dict[str, float] = {}
    if cold is not None:
        for m in names:
            cold()
            t0 = time.perf_counter()
            run_pass(m, False)
            cold_s[m] = time.perf_counter() - t0
    if warm == "once":
        for m in names:
            run_pass(m, False)
    t_start = time.perf_counter()
    want = rounds
    r = 0
    while r < want:
        for m in names:
            if r and max_seconds_each is not None and sum(passes[m]) > max_seconds_each:
                continue
            if warm == "each":
                run_pass(m, False)
            run_pass(m, True)
        r += 1
        if r == 1 and fast_s is not None and fast_rounds is not None:
            if max(statistics.median(passes[m]) for m in names) < fast_s:
                want = max(want, fast_rounds)
        if max_seconds_total is not None and time.perf_counter() - t_start > max_seconds_total:
            break
    out: dict[str, Measured] = {}
    for m in names:
        f = methods[m]
        calls = f.n if isinstance(f, Calls) else 1
        med = statistics.median(passes[m])
        ms = np.asarray(lat[m]) * 1e3
        t = harness.Timing(med, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)),
                           calls / med if med > 0 else float("inf"), len(passes[m]))
        out[m] = Measured(t, passes[m], calls, cold_s.get(m))
    return out


# ------------------------------------------------------------------------- provenance


def command_line() -> str:
    """The command that started this process, shell-quoted (``gsu bench ...`` when run
    through the CLI)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/gsu", "gsu")):
        argv[0] = "gsu"
    return " ".join(shlex.quote(a) for a in argv)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage``; Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def source_commit() -> str | None:
    """The git commit of the gsu tree that runs (``+dirty`` when it has uncommitted changes);
    ``None`` outside a git checkout (an installed wheel)."""
    global _COMMIT
    if _COMMIT is None:
        import subprocess
        from pathlib import Path

        root = Path(__file__).resolve().parents[2]
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "gsu"],
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            _COMMIT = head + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            _COMMIT = ""
    return _COMMIT or None


_COMMIT: str | None = None


def provenance(**extra: Any) -> dict[str, Any]:
    """Fields every record carries: ``command``, ``commit`` (:func:`source_commit`), ``cpu``
    (the processor's model name: records taken on VMs of one kind differ by host processor, and
    ratios between libraries move with it), ``cores`` (usable by this process),
    ``peak_rss_mb``, plus ``extra``."""
    return {"command": command_line(), "commit": source_commit(), "cpu": harness.cpu_model(),
            "cores": harness.machine_threads(), "peak_rss_mb": round(peak_rss_mb(), 1), **extra}


# ------------------------------------------------------------------------- outside data


def dense_vectors(ds: Any, suite: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x, q, metric)`` of a dense data set as every method of a suite searches it: float32,
    C-contiguous; ``cosine`` normalised and searched by inner product (``"ip"``), ``ip`` and
    ``l2`` as they are."""
    if ds.kind != "dense":
        raise ValueError(f"{ds.spec}: the {suite} suite needs dense vectors; this data set is {ds.kind} (try gsu bench sparse)")
    x, q = ds.base, ds.queries
    if ds.metric == "cosine":
        from gsu.index.vectors import normalize_rows

        x, q = normalize_rows(x), normalize_rows(q)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(q, np.float32), ("l2" if ds.metric == "l2" else "ip")


def dense_suite_data(ds: Any, filters: str | None = None, *, seed: int = 0) -> dict[str, Any]:
    """A dense :class:`~gsu.datasets.registry.Dataset` as the ``filtered`` suite's data dict.

    ``metric`` is the one every method — gsu and each peer — searches in natively: ``cosine``
    data is normalised and searched by inner product (the same ranking), ``ip`` and ``l2``
    as they are (faiss ``METRIC_L2``, hnswlib ``"l2"``, ``FilteredIndex(d, "l2")``); recall
    is against the exact answer in that metric. ``labels``/``centers`` (for ``correlated``
    filters) come from a spherical k-means (faiss) when the data has no clusters; ``time``
    is the data set's ``time`` attribute or the row order. With ``filters`` (a ``--filters``
    SPEC), ``cells`` lists the (kind, selectivity) cells and ``filter_sets`` their rows.
    """
    from gsu.datasets.registry import load_filters

    x, q, metric = dense_vectors(ds, "filtered")
    centers = ds.info.get("_centers")
    labels = ds.attributes.get("cluster")
    if centers is None or labels is None or ds.metric != "ip":
        import faiss

        nc = int(max(1, min(64, x.shape[0] // 40)))
        km = faiss.Kmeans(x.shape[1], nc, niter=15, seed=seed, spherical=ds.metric != "l2", verbose=False)
        km.train(x)
        _, lab = km.index.search(x, 1)
        labels, centers = lab[:, 0].astype(np.int64), np.ascontiguousarray(km.centroids, np.float32)
    data: dict[str, Any] = {"name": ds.name, "x": x, "q": q, "metric": metric,
                            "categories": ds.attributes.get("category"), "category_names": ds.info.get("_category_names"),
                            "labels": np.asarray(labels, np.int64), "centers": centers,
                            "time": np.asarray(ds.attributes.get("time", np.arange(x.shape[0])), np.int64),
                            "describe": ds.describe()}
    if filters:
        cells = load_filters(filters, ds)
        data["cells"] = [(c.kind, c.selectivity) for c in cells]
        data["filter_sets"] = {(c.kind, c.selectivity): c.rows for c in cells}
        data["describe"] = {**data["describe"], "filter_spec": filters}
    return data


def sparse_suite_data(ds: Any) -> dict[str, Any]:
    """A sparse :class:`~gsu.datasets.registry.Dataset` as the ``sparse`` suite's data dict."""
    if ds.kind != "sparse":
        raise ValueError(f"{ds.spec}: the sparse suite needs sparse vectors; this data set is {ds.kind} (try gsu bench filtered)")
    if ds.base.nnz and ds.base.data.min() < 0:
        raise ValueError(f"{ds.spec}: {int((ds.base.data < 0).sum())} negative weights; the Seismic-style index needs weights >= 0")
    return {"name": ds.name, "docs": ds.base.tocsr(), "queries": ds.queries.tocsr(), "synthetic": False,
            "describe": ds.describe()}
