"""gsu behind ann-benchmarks' algorithm interface (``ann_benchmarks.algorithms.base.BaseANN``).

ann-benchmarks' runner constructs an algorithm from ``config.yml`` with the data set's
metric first (``base_args: ['@metric']``), then::

    algo.get_memory_usage()            # kB, before
    algo.fit(X_train)                  # build
    algo.get_memory_usage()            # kB, after: the difference is the index size
    for query_args in run_group.query_args:
        algo.set_query_arguments(*query_args)
        algo.query(v, count)           # per query: candidate row numbers of X_train
        algo.batch_query(X_test, count); algo.get_batch_results()   # --batch mode
    algo.get_additional(); algo.done()

and recomputes every candidate's distance itself. :class:`GsuANN` implements that
interface (it does not import ann-benchmarks, so it runs standalone too) plus filtered
queries: ``query_filtered(v, count, allowed)`` and ``batch_query_filtered(X, count,
allowed_lists)`` with allowed row numbers. :data:`CONFIG_YML` is the ``config.yml``
entry that registers it (save it as ``ann_benchmarks/algorithms/gsu/config.yml`` beside a
``module.py`` holding ``from gsu.bench.annb import GsuANN``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["GsuANN", "CONFIG_YML", "METRIC_MAP"]

# ann-benchmarks distance names -> gsu metrics
METRIC_MAP = {"angular": "cosine", "euclidean": "l2", "ip": "ip", "dot": "ip", "inner_product": "ip"}
# the one search setting set_query_arguments sets, per kind
_QUERY_ARG = {"flat": None, "hnsw": "ef", "ivf": "nprobe", "filtered": "effort"}

CONFIG_YML = """\
float:
  any:
  - base_args: ['@metric']
    constructor: GsuANN
    disabled: false
    docker_tag: ann-benchmarks-gsu
    module: ann_benchmarks.algorithms.gsu
    name: gsu-hnsw
    run_groups:
      M-16:
        args: [hnsw, {M: 16, ef_construction: 200}]
        query_args: [[10, 20, 40, 80, 120, 200, 400, 800]]
      M-32:
        args: [hnsw, {M: 32, ef_construction: 200}]
        query_args: [[10, 20, 40, 80, 120, 200, 400, 800]]
  - base_args: ['@metric']
    constructor: GsuANN
    disabled: false
    docker_tag: ann-benchmarks-gsu
    module: ann_benchmarks.algorithms.gsu
    name: gsu-ivf
    run_groups:
      default:
        args: [ivf, {}]
        query_args: [[1, 2, 4, 8, 16, 32, 64, 128]]
  - base_args: ['@metric']
    constructor: GsuANN
    disabled: false
    docker_tag: ann-benchmarks-gsu
    module: ann_benchmarks.algorithms.gsu
    name: gsu-filtered
    run_groups:
      M-32:
        args: [filtered, {M: 32, ef_construction: 200}]
        query_args: [[0.5, 0.75, 1.0, 2.0, 4.0]]
"""


class GsuANN:
    """One gsu index with ann-benchmarks' ``BaseANN`` methods.

    Args:
        metric: ann-benchmarks' distance name (``angular``, ``euclidean``) or a gsu metric
            (``ip``, ``cosine``, ``l2``).
        kind: ``"hnsw"`` (:class:`gsu.index.HNSWIndex`), ``"ivf"``, ``"flat"`` or
            ``"filtered"`` (:class:`gsu.index.FilteredIndex`).
        params: constructor settings of that index (e.g. ``{"M": 32, "ef_construction": 200}``);
            ``None`` for the defaults.

    ``set_query_arguments(value)`` sets the kind's one search setting: ``ef`` (hnsw),
    ``nprobe`` (ivf), ``effort`` (filtered); flat takes none.
    """

    def __init__(self, metric: str, kind: str = "hnsw", params: dict[str, Any] | None = None):
        gm = METRIC_MAP.get(metric, metric)
        if gm not in ("ip", "cosine", "l2"):
            raise ValueError(f"metric: {metric!r} is not supported; expected one of {sorted(METRIC_MAP)} or ip/cosine/l2")
        if kind not in _QUERY_ARG:
            raise ValueError(f"kind: expected one of {sorted(_QUERY_ARG)}, got {kind!r}")
        self.metric = gm
        self.kind = kind
        self.params = dict(params or {})
        self.search_params: dict[str, Any] = {}
        self.index: Any = None
        self.res: list[np.ndarray] = []
        self.name = f"gsu-{kind}({self.params})"

    # -- BaseANN ------------------------------------------------------------
    def fit(self, X: np.ndarray) -> None:
        """Build the index over ``X`` (n, d); results are row numbers of ``X``."""
        from gsu.index import FilteredIndex, FlatIndex, HNSWIndex, IVFIndex

        X = np.ascontiguousarray(X, dtype=np.float32)
        cls = {"flat": FlatIndex, "hnsw": HNSWIndex, "ivf": IVFIndex, "filtered": FilteredIndex}[self.kind]
        self.index = cls(X.shape[1], self.metric, **self.params)
        self.index.add(X)

    def set_query_arguments(self, value: Any = None) -> None:
        """Set the kind's search setting (``ef`` / ``nprobe`` / ``effort``)."""
        key = _QUERY_ARG[self.kind]
        if key is None:
            if value is not None:
                raise ValueError("kind='flat' takes no query arguments")
            return
        self.search_params = {key: value}
        self.name = f"gsu-{self.kind}({self.params}, {key}={value})"

    def query(self, q: np.ndarray, n: int) -> np.ndarray:
        """Row numbers of the ``n`` nearest rows to ``q`` (d,), nearest first."""
        r = self.index.search(np.asarray(q, dtype=np.float32).reshape(1, -1), n, **self.search_params)
        return r.ids[0][r.ids[0] >= 0]

    def batch_query(self, X: np.ndarray, n: int) -> None:
        """All queries in one call (gsu batches them itself); read with :meth:`get_batch_results`."""
        r = self.index.search(np.ascontiguousarray(X, dtype=np.float32), n, **self.search_params)
        self.res = [row[row >= 0] for row in r.ids]

    def get_batch_results(self) -> list[np.ndarray]:
        return self.res

    def get_memory_usage(self) -> float:
        """Resident memory of this process in kB (ann-benchmarks subtracts the value before ``fit``)."""
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0

    def get_additional(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, **self.search_params}

    def done(self) -> None:
        self.index = None

    def __str__(self) -> str:
        return self.name

    # -- filtered queries ---------------------------------------------------------
    def query_filtered(self, q: np.ndarray, n: int, allowed: Any) -> np.ndarray:
        """Like :meth:`query`, among the rows ``allowed`` (int array of row numbers)."""
        from gsu.index import Filter

        r = self.index.search(np.asarray(q, dtype=np.float32).reshape(1, -1), n, filter=Filter.from_ids(np.asarray(allowed, np.int64)),
                              **self.search_params)
        return r.ids[0][r.ids[0] >= 0]

    def batch_query_filtered(self, X: np.ndarray, n: int, allowed: list[Any]) -> None:
        """All queries in one call, query ``i`` among ``allowed[i]``; read with :meth:`get_batch_results`."""
        from gsu.index import Filter

        f = Filter.per_query([np.asarray(a, np.int64) for a in allowed])
        r = self.index.search(np.ascontiguousarray(X, dtype=np.float32), n, filter=f, **self.search_params)
        self.res = [row[row >= 0] for row in r.ids]
