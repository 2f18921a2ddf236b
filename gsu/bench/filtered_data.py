"""The ``filtered`` suite's view of a data set: :class:`DenseSet`, built from a registry SPEC.

Every data set the suite runs — its own named sets (:mod:`gsu.datasets.named`: synthetic
catalogs of 32 to 768 dimensions, MovieLens and docstring MiniLM embeddings) and a user's
``--data SPEC`` — comes from :func:`gsu.datasets.registry.load_dataset` and goes through
:func:`gsu.bench.runner.dense_suite_data`, one path. A :class:`DenseSet` holds item vectors,
held-out queries, a time attribute (time windows are ranges of it), a cluster label per
item (query-correlated filters draw from the clusters nearest the query) and, for real
text, a real category per item (category filters).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsu.datasets.named import NAMED_SETS, QUICK_SETS, Unavailable, load_named_set

log = logging.getLogger(__name__)

__all__ = ["DenseSet", "DATASETS", "QUICK_DATASETS", "load_dataset", "from_registry"]

#: the suite's named data sets (name -> description), each ``gen:NAME`` in the registry
DATASETS = NAMED_SETS
QUICK_DATASETS = QUICK_SETS


@dataclass
class DenseSet:
    """One data set: ``x`` (n, d) float32 items, ``q`` (nq, d) float32 held-out queries,
    ``time`` (n,) int64 attribute of time windows, ``labels`` (n,) int64 cluster of each
    item and ``centers`` (c, d) float32 their centres (query-correlated filters),
    ``categories`` (n,) int64 real category ids or None, ``category_names``."""

    name: str
    x: np.ndarray
    q: np.ndarray
    time: np.ndarray
    labels: np.ndarray
    centers: np.ndarray
    description: str
    categories: np.ndarray | None = None
    category_names: list[str] | None = None
    #: a user's own filters (``gsu bench filtered --data ... --filters ...``): the cells
    #: (filter kind, selectivity) and one sorted row array per query for each
    cells: list[tuple[str, float]] | None = None
    filter_sets: dict[tuple[str, float], list[np.ndarray]] | None = None
    #: what the data set is (spec, file, metric, sizes) for the records
    info: dict | None = None
    #: ``"ip"`` (inner product; cosine data arrives normalised) or ``"l2"``: every method searches in it
    metric: str = "ip"


def from_registry(spec: str, filters: str | None = None, *, nq: int, seed: int) -> DenseSet:
    """A data set named by a SPEC (:mod:`gsu.datasets.registry`: a file, a generator or a
    named set) as a :class:`DenseSet` in its own metric (:func:`gsu.bench.runner.dense_suite_data`:
    cosine normalised to inner products, l2 kept), queries cut to ``nq`` unless ``filters``
    gives one filter per query."""
    from gsu.datasets.registry import load_dataset as load_spec

    return _dense_set(load_spec(spec), filters, nq=nq, seed=seed)


def _dense_set(ds: Any, filters: str | None, *, nq: int, seed: int) -> DenseSet:
    from gsu.bench import runner

    d = runner.dense_suite_data(ds, filters, seed=seed)
    q = d["q"] if filters else np.ascontiguousarray(d["q"][:nq])
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(d["name"]))[:80]
    describe = d.get("describe", {})
    return DenseSet(name, d["x"], q, d["time"], d["labels"], d["centers"],
                    describe.get("description") or json.dumps(describe, default=str, sort_keys=True),
                    categories=d.get("categories"), category_names=d.get("category_names"),
                    cells=d.get("cells"), filter_sets=d.get("filter_sets"), info={**describe, "nq": int(q.shape[0])},
                    metric=d["metric"])


def load_dataset(name: str, cache: Path, *, quick: bool, nq: int, seed: int) -> DenseSet | None:
    """The named set ``name`` (``gen:NAME`` of the registry; text embeddings cached under
    ``cache``); None, with a message, when its source is not on this machine."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")
    try:
        ds = load_named_set(name, nq=nq, seed=seed, quick=quick, cache=cache)
    except Unavailable as e:
        print(f"[filtered] skipping {name}: {e}")
        return None
    return _dense_set(ds, None, nq=nq, seed=seed)
