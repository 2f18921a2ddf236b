"""The benchmark harness: thread pinning, timing, tie-tolerant recall, result checks, JSONL, plots.

Every suite in :mod:`gsu.bench` uses these pieces so that numbers are comparable:

- :func:`pin_threads` fixes BLAS/OpenMP (threadpoolctl), numba, torch and faiss threads
  and returns what it set, which goes into every record;
- :func:`time_queries` / :func:`time_call` warm up, repeat, and report the median
  (and p50/p99 per-query latencies);
- :func:`recall_at_k` counts a hit when the returned item's true score is within
  ``eps`` of the true k-th score (ann-benchmarks' tie tolerance);
- :func:`check_results` trusts nothing: unique ids per row, scores recomputed from the
  data, the filter respected;
- :func:`write_jsonl` / :func:`pareto_plot` store results as data and a PNG.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from gsu.index.topk import recall_at_k

log = logging.getLogger(__name__)

__all__ = [
    "Timing",
    "pin_threads",
    "machine_info",
    "recall_at_k",
    "time_queries",
    "time_call",
    "check_results",
    "write_jsonl",
    "read_jsonl",
    "pareto_front",
    "method_style",
    "legend_outside",
    "pareto_plot",
    "line_plot",
    "format_table",
]


@dataclass(frozen=True)
class Timing:
    """Timing summary. ``median_s``: median wall time of one repeat (all queries);
    ``p50_ms``/``p99_ms``: per-query (or per-call) latency percentiles over all repeats;
    ``qps``: queries per second from the median repeat; ``repeats``: number of repeats."""

    median_s: float
    p50_ms: float
    p99_ms: float
    qps: float
    repeats: int


_PINNED: dict[str, Any] = {}
_LIMITERS: list[Any] = []


def pin_threads(n: int = 1) -> dict[str, Any]:
    """Pin BLAS/OpenMP, numba, torch and faiss to ``n`` threads; return what was set."""
    from threadpoolctl import threadpool_info, threadpool_limits

    if n < 1:
        raise ValueError(f"threads: expected >= 1, got {n}")
    _LIMITERS.clear()
    _LIMITERS.append(threadpool_limits(limits=n))
    out: dict[str, Any] = {"threads": n}
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        out["numba"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.set_num_threads(n)
        out["torch"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
        out["faiss"] = faiss.omp_get_max_threads()
    except ImportError:  # pragma: no cover
        pass
    out["blas"] = sorted({f"{i.get('internal_api')}:{i.get('num_threads')}" for i in threadpool_info()})
    _PINNED.clear()
    _PINNED.update(out)
    return out


def machine_threads() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def all_threads() -> Any:
    """Every core for the block (index builds: a user's build is not pinned to one thread),
    then the pins that held before it again. Yields the thread count."""
    prev = _PINNED.get("threads")
    n = machine_threads()
    pin_threads(n)
    try:
        yield n
    finally:
        if prev is not None:
            pin_threads(int(prev))


def machine_info() -> dict[str, Any]:
    """Machine, interpreter and library versions, plus the pinned thread counts."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "pinned": dict(_PINNED),
    }
    versions = {}
    for mod in ("numpy", "scipy", "numba", "faiss", "torch", "hnswlib", "pyroaring", "seismic"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "installed")
        except ImportError:
            versions[mod] = None
    from gsu import __version__

    versions["gsu"] = __version__
    info["versions"] = versions
    return info


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_queries(
    fn: Callable[[np.ndarray], Any],
    queries: Any,
    *,
    batch: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    max_seconds: float | None = None,
) -> Timing:
    """Time ``fn`` over ``queries`` in slices of ``batch`` rows (batch=1: one query at a time).

    ``queries`` may be an array (sliced on axis 0) or a sequence of per-query objects.
    ``warmup`` full passes are discarded; then ``repeats`` passes are timed (fewer if
    ``max_seconds`` is exceeded, but at least one). Reports the median pass and
    per-call latency percentiles.
    """
    n = len(queries)
    if n == 0:
        raise ValueError("time_queries: no queries")
    slices = [queries[i : i + batch] for i in range(0, n, batch)]
    for _ in range(warmup):
        for s in slices:
            fn(s)
    passes: list[float] = []
    lat: list[float] = []
    t_start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        for s in slices:
            t1 = time.perf_counter()
            fn(s)
            lat.append(time.perf_counter() - t1)
        passes.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
            break
    med = statistics.median(passes)
    per_call = np.asarray(lat) * 1e3
    return Timing(med, float(np.percentile(per_call, 50)), float(np.percentile(per_call, 99)), n / med if med > 0 else float("inf"), len(passes))


def time_call(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, max_seconds: float | None = None) -> Timing:
    """Time a no-argument call: warm-up, then the median of ``repeats`` (qps = calls/s)."""
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    t_start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - t_start > max_seconds:
            break
    med = statistics.median(ts)
    ms = np.asarray(ts) * 1e3
    return Timing(med, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), 1.0 / med if med > 0 else float("inf"), len(ts))


def check_results(
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    recompute: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    allowed: Callable[[int, np.ndarray], np.ndarray] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-3,
    name: str = "results",
) -> np.ndarray:
    """Verify a search result and return the recomputed scores (or ``scores``).

    - every row's valid ids (≥ 0) are unique and come first, padding is -1 / -inf;
    - ``recompute(q_index_array, ids_row)`` gives true scores: they must match ``scores``;
    - ``allowed(q, ids_row)`` gives a boolean array: every returned id must be allowed.

    Raises ``RuntimeError`` naming the first bad row.
    """
    ids = np.asarray(ids)
    scores = np.asarray(scores)
    true = np.array(scores, dtype=np.float64, copy=True)
    for q in range(ids.shape[0]):
        row = ids[q]
        valid = row >= 0
        nv = int(valid.sum())
        if not valid[:nv].all():
            raise RuntimeError(f"{name}: row {q} has -1 padding before valid ids")
        if np.unique(row[:nv]).size != nv:
            raise RuntimeError(f"{name}: row {q} returns duplicate ids")
        if np.any(np.isfinite(scores[q, nv:])):
            raise RuntimeError(f"{name}: row {q} has finite scores in the padding")
        if allowed is not None and nv and not np.all(allowed(q, row[:nv])):
            raise RuntimeError(f"{name}: row {q} returns ids the filter excludes")
        if recompute is not None and nv:
            rs = np.asarray(recompute(np.full(nv, q), row[:nv]), dtype=np.float64)
            true[q, :nv] = rs
            if not np.allclose(rs, scores[q, :nv], rtol=rtol, atol=atol):
                bad = int(np.argmax(~np.isclose(rs, scores[q, :nv], rtol=rtol, atol=atol)))
                raise RuntimeError(
                    f"{name}: row {q} reports score {scores[q, bad]:.5g} for id {row[bad]}, recomputed {rs[bad]:.5g}"
                )
    return true


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]], *, append: bool = False) -> Path:
    """Write ``records`` as JSON lines (numpy scalars converted), atomically (a temporary
    file, then a rename) unless ``append``. Every record that lacks them gets the run's
    provenance (:func:`gsu.bench.runner.provenance`: command, git commit, peak resident
    memory so far)."""
    from gsu._format import atomic_write_bytes
    from gsu.bench.runner import provenance

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    lines = []
    for r in records:
        for key, v in prov.items():
            r.setdefault(key, v)
        lines.append(json.dumps(r, default=_json_default, sort_keys=True) + "\n")
    text = "".join(lines).encode()
    if append:
        with open(path, "ab") as f:
            f.write(text)
    else:
        atomic_write_bytes(path, text)
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (x higher, y higher), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front: list[int] = []
    best_y = -np.inf
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


#: the methods of the suites, in the order they take the styles below (others follow in order of first use)
_KNOWN_METHODS = (
    "gsu-filtered", "gsu-filtered (cached filter)", "numpy-prefilter", "faiss-flat+sel", "faiss-hnsw+sel", "faiss-ivf+sel",
    "hnswlib+callback", "gsu", "gsu-default", "gsu-batch", "pyseismic", "exact", "gsu-flat", "gsu-flat (cached filter)",
    "faiss-flat",
)
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
           "#000000", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d")
_STYLES: dict[str, dict[str, str]] = {}


def method_style(name: str) -> dict[str, str]:
    """``{"color": ..., "marker": ...}`` of a method: the same in every plot, and no two
    methods share both (20 colours × 13 markers, assigned in step: distinct for the first
    260 names)."""
    st = _STYLES.get(name)
    if st is None:
        if not _STYLES:
            for m in _KNOWN_METHODS:
                i = len(_STYLES)
                _STYLES[m] = {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}
        if name not in _STYLES:
            i = len(_STYLES)
            _STYLES[name] = {"color": _COLORS[i % len(_COLORS)], "marker": _MARKERS[i % len(_MARKERS)]}
        st = _STYLES[name]
    return st


def legend_outside(fig: Any, axes: Iterable[Any] | None = None, *, fontsize: float = 7) -> None:
    """One legend for the whole figure, right of the panels (the figure must use the
    ``constrained`` layout), listing every labelled artist of ``axes`` (default: all) once,
    so that no legend box covers a point."""
    handles: dict[str, Any] = {}
    for ax in (axes if axes is not None else fig.axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=fontsize)


def _new_axes(path: str | os.PathLike) -> tuple[Path, Any, Any, Any]:
    """``(path, plt, fig, ax)`` for one PNG plot (Agg backend, constrained layout; the folder is created)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110, layout="constrained")
    return path, plt, fig, ax


def _group_points(records: Sequence[dict[str, Any]], x: str, y: str, group: str) -> dict[str, list[tuple[float, float]]]:
    """(x, y) points of the records that have both, per value of ``group``."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if r.get(x) is None or r.get(y) is None:
            continue
        groups.setdefault(str(r.get(group)), []).append((float(r[x]), float(r[y])))
    return groups


def _finish(plt: Any, fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str, legend: bool) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if legend:
        legend_outside(fig, [ax])
    fig.savefig(path)
    plt.close(fig)
    return path


def pareto_plot(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    x: str = "recall",
    y: str = "qps",
    group: str = "method",
    title: str = "",
    logy: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
    target: float | None = None,
) -> Path:
    """Scatter every record (x, y) per ``group`` and draw each group's Pareto front; PNG.
    ``target``: a vertical line at that x (the recall target), labelled."""
    path, plt, fig, ax = _new_axes(path)
    groups = _group_points(records, x, y, group)
    for g, pts in sorted(groups.items()):
        st = method_style(g)
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=14, alpha=0.45, color=st["color"], marker=st["marker"])
        fr = pareto_front(pts)
        ax.plot([pts[i][0] for i in fr], [pts[i][1] for i in fr], "-", ms=4, label=g, **st)
    if target is not None:
        ax.axvline(target, color="grey", ls="--", lw=0.8, label=f"target {x} {target:g}")
    if logy:
        ax.set_yscale("log")
    return _finish(plt, fig, ax, path, xlabel=xlabel or x, ylabel=ylabel or y, title=title, legend=bool(groups))


def line_plot(
    records: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    x: str,
    y: str,
    group: str = "method",
    title: str = "",
    logx: bool = True,
    logy: bool = True,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """One line per ``group`` through its (x, y) points sorted by x; PNG. ``xlabel`` /
    ``ylabel``: the axis labels with their units (default: the field names)."""
    path, plt, fig, ax = _new_axes(path)
    groups = _group_points(records, x, y, group)
    for g, pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", ms=4, label=g, **method_style(g))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    return _finish(plt, fig, ax, path, xlabel=xlabel or x, ylabel=ylabel or y, title=title, legend=bool(groups))


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, floatfmt: str = ".4g") -> str:
    """A plain-text (Markdown) table of ``rows`` restricted to ``columns``."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(list(columns)), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)
