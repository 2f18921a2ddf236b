"""CTR tasks from behavior logs — your own (Parquet / CSV + a :class:`~gsu.datasets.logs.LogSchema`),
MovieLens and Taobao — built so that **no sample depends on a later event**.

:func:`log_task` turns an :class:`~gsu.datasets.logs.EventLog` into a :class:`~gsu.ctr.data.CTRTask`:

- **History** (what the GSU searches): the clicked rows (``history="positives"``, the default
  with a label) or every row (``"all"``; a label then becomes the behavior type). A sample at
  time ``t`` sees only history rows with timestamp ``< t``.
- **Samples**: the log's rows — impressions with their labels, or, in a positives-only log,
  clicks with label 1 — kept with probability ``sample_rate`` (decided by a hash of the row,
  not by how many rows the user has) and when the user has at least ``min_history`` visible
  behaviors. ``negatives`` extra samples with label 0 per kept row (default 1 for a
  positives-only log, 0 with labels) are items drawn **from the events logged before t**, in
  proportion to their counts there, rejecting items the user had touched at or before ``t``.
  Every random choice is a hash of (seed, the row's user and item ids, its time, draw number),
  so adding or changing later events leaves every earlier sample exactly as it was (tested).
- **Item features**: category and the extra categorical / numeric columns take the value of
  the item's *earliest* row (numeric values as ``sign(x) log(1 + |x|)``, no global statistics);
  item embeddings come from a file (frozen content vectors, the retrieval space of SIM-soft,
  ETA and SDIM) or, without one, the model learns item ids from the training samples only.
- **Split** by time 70/15/15 over the samples. TIN's time unit is fixed (60 s), not fit to data.

:func:`movielens_task` and :func:`taobao_task` are this builder with fixed schemas; ``gsu
train`` and ``gsu bench ctr`` call the same functions with the same defaults, so they build the
same task.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from gsu.ctr.data import CTRTask, fingerprint, split_by_time

logger = logging.getLogger(__name__)

__all__ = ["log_task", "task_from_log", "movielens_task", "taobao_task", "read_item_vectors", "MOVIELENS_SCHEMA",
           "TAOBAO_SCHEMA", "TIME_UNIT"]

TIME_UNIT = 60.0
MOVIELENS_SCHEMA = {"user": "userId", "item": "movieId", "timestamp": "timestamp", "label": "rating",
                    "label_threshold": 4.0, "history": "all"}
TAOBAO_SCHEMA = {"user": "user_id", "item": "item_id", "timestamp": "timestamp", "category": "category_id",
                 "behavior": "behavior_type"}
_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(*keys: Any) -> np.ndarray:
    """Uniform [0, 1) floats from a hash of the broadcast integer keys."""
    arrs = np.broadcast_arrays(*[np.asarray(k).astype(np.int64) for k in keys])
    h = np.zeros(arrs[0].shape, np.uint64)
    for a in arrs:
        h = _mix(h ^ a.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _first_rows(item: np.ndarray, ts: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) row of each item's earliest event (ties: first in file order), -1 if none."""
    order = np.lexsort((np.arange(item.shape[0]), ts))
    first = np.full(n_items, -1, np.int64)
    it = item[order]
    seen_first = np.unique(it, return_index=True)
    first[seen_first[0]] = order[seen_first[1]]
    return first


def read_item_vectors(path: str | Path, item_values: np.ndarray, *, id_column: str = "item",
                      vector_column: str = "vector") -> np.ndarray:
    """Item embeddings aligned with a log's items: ``(n_items, d)`` float32.

    ``path``: Parquet with an id column and a list/array vector column (names ``id_column``,
    ``vector_column``), or ``.npz`` with ``ids`` (n,) and ``vectors`` (n, d). Items of the log
    missing from the file raise ``DataFormatError`` naming the file and the first missing id.
    """
    from gsu.errors import DataFormatError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such item embedding file")
    if p.suffix.lower() == ".npz":
        z = np.load(p, allow_pickle=False)
        if "ids" not in z.files or "vectors" not in z.files:
            raise DataFormatError(f"{p}: expected members 'ids' and 'vectors', got {z.files}")
        ids, vec = z["ids"], np.asarray(z["vectors"], np.float32)
    elif p.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        t = pq.read_table(p)
        for c in (id_column, vector_column):
            if c not in t.column_names:
                raise DataFormatError(f"{p}: column {c!r} absent; the file has {t.column_names}")
        ids = t.column(id_column).to_numpy(zero_copy_only=False)
        vec = np.asarray(t.column(vector_column).to_pylist(), dtype=np.float32)
    else:
        raise DataFormatError(f"{p}: item embeddings must be .parquet or .npz (ids + vectors)")
    if vec.ndim != 2 or vec.shape[0] != ids.shape[0]:
        raise DataFormatError(f"{p}: expected one vector per id, got ids {ids.shape} and vectors {vec.shape}")
    if not np.isfinite(vec).all():
        raise DataFormatError(f"{p}: vectors hold NaN or infinite values")
    ids = ids.astype(item_values.dtype) if item_values.dtype.kind in "iu" else ids.astype(str)
    order = np.argsort(ids, kind="stable")
    sid = ids[order]
    pos = np.searchsorted(sid, item_values)
    ok = (pos < sid.shape[0]) & (sid[np.minimum(pos, sid.shape[0] - 1)] == item_values)
    if not ok.all():
        raise DataFormatError(f"{p}: {int((~ok).sum())} item(s) of the log have no vector (first: {item_values[~ok][0]!r})")
    return np.ascontiguousarray(vec[order[pos]])


def log_task(
    log: Any,
    *,
    negatives: int | None = None,
    sample_rate: float = 1.0,
    min_history: int = 1,
    item_vectors: np.ndarray | None = None,
    content_vectors: np.ndarray | None = None,
    item_category: np.ndarray | None = None,
    item_dim: int = 16,
    seed: int = 0,
    name: str = "log",
    max_attempts: int = 16,
) -> CTRTask:
    """Build a :class:`CTRTask` from an :class:`~gsu.datasets.logs.EventLog` (see the module
    docstring for what is built and why it is causal).

    Args:
        log: the log (:func:`gsu.datasets.logs.read_log`).
        negatives: sampled negatives per kept row (None: 1 without a label column, else 0).
        sample_rate: share of the log's rows kept as samples (a hash decides each row).
        min_history: a row becomes a sample only when its user has this many visible behaviors.
        item_vectors: ``(n_items, d)`` float32 frozen item embeddings (rows = the log's dense
            item index) or None (learned ids).
        content_vectors: ``(n_items, d_c)`` float32 second space for MUSE-cosine, or None.
        item_category: ``(n_items,)`` int64 category override (e.g. MovieLens genres), else
            the log's category column at each item's earliest row.
        item_dim: width of learned item-id embeddings when no ``item_vectors`` are given.
        seed: seed of sampling (rows and negatives).
        name: the task's name in reports.
    """
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.store import BehaviorStore

    schema = log.schema
    n_items = log.n_items
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate: expected a number in (0, 1], got {sample_rate!r}")
    if negatives is None:
        negatives = 1 if log.label is None else 0
    if isinstance(negatives, bool) or not isinstance(negatives, (int, np.integer)) or negatives < 0:
        raise ValueError(f"negatives: expected an integer >= 0, got {negatives!r}")
    label = log.label if log.label is not None else np.ones(len(log), np.int8)
    if schema.effective_history == "positives":
        hist = label == 1
        btype = log.behavior
    else:
        hist = np.ones(len(log), bool)
        btype = log.behavior if log.behavior is not None else (log.label if log.label is not None else None)
    if not hist.any():
        raise ValueError(f"{log.source}: no row is a behavior (no positive label)")
    first = _first_rows(log.item, log.timestamp, n_items)
    if item_category is None:
        item_category = np.zeros(n_items, np.int64) if log.category is None else log.category[first]
    item_category = np.asarray(item_category, np.int64)
    hu, hi, ht = log.user[hist], log.item[hist], log.timestamp[hist]
    store = BehaviorStore.from_arrays(hu, hi, ht, behavior_type=None if btype is None else btype[hist],
                                      category=item_category[hi])
    # --- samples: log rows (hash-selected), with at least min_history visible behaviors
    ukey, ikey = log.user_keys[log.user], log.item_keys[log.item]
    keep = _uniform(seed, 1, ukey, ikey, log.timestamp, _row_rank(log)) < sample_rate
    in_store = np.isin(log.user, store.user_ids)
    keep &= in_store
    rows = np.flatnonzero(keep)
    vis = _visible(store, log.user[rows], log.timestamp[rows])
    rows = rows[vis >= min_history]
    s_user, s_item, s_time, s_label = log.user[rows], log.item[rows], log.timestamp[rows], label[rows]
    s_imp = np.ones(rows.shape[0], bool)
    # --- negatives: popularity among events strictly before t, not touched by the user by t
    if negatives and rows.size:
        ev_order = np.lexsort((np.arange(len(log)), log.timestamp))
        ev_ts, ev_item = log.timestamp[ev_order], log.item[ev_order]
        n_before = np.searchsorted(ev_ts, s_time, side="left")
        pair = log.user.astype(np.int64) * n_items + log.item
        # earliest time the user touched each (user, item) pair, keyed user * n_items + item
        o = np.lexsort((log.timestamp, pair))
        ps = pair[o]
        starts = np.r_[0, np.flatnonzero(ps[1:] != ps[:-1]) + 1]
        touched_key, first_touch = ps[starts], log.timestamp[o][starts]
        neg_u, neg_i, neg_t = [], [], []
        su_key, si_key = log.user_keys[s_user], log.item_keys[s_item]
        for j in range(int(negatives)):
            cand = np.full(rows.size, -1, np.int64)
            todo = np.flatnonzero(n_before > 0)
            for a in range(max_attempts):
                if todo.size == 0:
                    break
                u = _uniform(seed, 2, su_key[todo], si_key[todo], s_time[todo], j, a)
                c = ev_item[np.minimum((u * n_before[todo]).astype(np.int64), n_before[todo] - 1)]
                key = s_user[todo].astype(np.int64) * n_items + c
                p = np.searchsorted(touched_key, key)
                hit = (p < touched_key.shape[0]) & (touched_key[np.minimum(p, touched_key.shape[0] - 1)] == key)
                bad = hit & (first_touch[np.minimum(p, touched_key.shape[0] - 1)] <= s_time[todo])
                good = ~bad
                cand[todo[good]] = c[good]
                todo = todo[bad]
            ok = cand >= 0
            neg_u.append(s_user[ok])
            neg_i.append(cand[ok])
            neg_t.append(s_time[ok])
        nu, ni, nt = np.concatenate(neg_u), np.concatenate(neg_i), np.concatenate(neg_t)
        s_user, s_item, s_time = np.r_[s_user, nu], np.r_[s_item, ni], np.r_[s_time, nt]
        s_label = np.r_[s_label, np.zeros(nu.shape[0], np.int8)]
        s_imp = np.r_[s_imp, np.zeros(nu.shape[0], bool)]
    order = np.lexsort((s_item, ~s_imp, s_time, s_user))
    samples = {
        "user": s_user[order].astype(np.int64), "target": s_item[order].astype(np.int64),
        "time": s_time[order].astype(np.int64), "label": s_label[order].astype(np.int8),
        "impression": s_imp[order],
    }
    if samples["user"].shape[0] < 3:
        raise ValueError(f"{log.source}: only {samples['user'].shape[0]} sample(s) (lower min_history or raise sample_rate)")
    # store user ids are the dense user index: samples use the same
    # --- item features (values at each item's earliest row)
    feats: dict[str, np.ndarray] | None = None
    sizes: dict[str, Any] = {}
    if log.categorical or log.numeric:
        feats = {}
        safe = np.maximum(first, 0)
        if log.categorical:
            cat = np.stack([np.where(first >= 0, v[safe], 0) for v in log.categorical.values()], axis=1)
            feats["categorical"] = cat.astype(np.int64)
            sizes["categorical_sizes"] = [int(v.max()) + 1 for v in log.categorical.values()]
            sizes["categorical_names"] = list(log.categorical)
        else:
            feats["categorical"] = np.zeros((n_items, 0), np.int64)
        if log.numeric:
            num = np.stack([np.where(first >= 0, v[safe], np.nan) for v in log.numeric.values()], axis=1)
            num = np.where(np.isfinite(num), np.sign(num) * np.log1p(np.abs(num)), 0.0)
            feats["numeric"] = num.astype(np.float32)
            sizes["n_numeric"] = len(log.numeric)
            sizes["numeric_names"] = list(log.numeric)
        else:
            feats["numeric"] = np.zeros((n_items, 0), np.float32)
    vec = None if item_vectors is None else np.ascontiguousarray(item_vectors, np.float32)
    if vec is not None and vec.shape[0] != n_items:
        raise ValueError(f"item_vectors: expected {n_items} rows (one per item of the log), got {vec.shape[0]}")
    tables = {"ctr": ItemTable(embeddings=vec, category=item_category)}
    if content_vectors is not None:
        cv = np.ascontiguousarray(content_vectors, np.float32)
        if cv.shape[0] != n_items:
            raise ValueError(f"content_vectors: expected {n_items} rows, got {cv.shape[0]}")
        tables["content"] = ItemTable(embeddings=vec if vec is not None else cv, retrieval_embeddings=cv,
                                      category=item_category)
    n_types = int(btype[hist].max()) + 1 if btype is not None else 1
    settings = {"source": log.source, "schema": schema.to_dict(), "negatives": int(negatives),
                "sample_rate": float(sample_rate), "min_history": int(min_history), "seed": int(seed),
                "n_rows": len(log), "embeddings": vec is not None}
    info = {"name": name, **settings, "content": content_vectors is not None,
            "fingerprint": fingerprint({"name": name, **settings}),
            "n_users": int(store.n_users), "n_items": n_items, "n_behaviors": int(store.n_behaviors),
            "n_samples": int(samples["label"].shape[0]), "item_dim": 0 if vec is not None else int(item_dim),
            "item_features": sizes, "time_unit": TIME_UNIT,
            "negatives_rule": f"{negatives} per kept row, drawn from events before the sample, popularity-weighted, "
                              "excluding items the user touched by then"}
    return CTRTask(name=name, store=store, item_category=item_category, item_vectors=vec, item_tables=tables,
                   samples=samples, splits=split_by_time(samples["time"]), n_behavior_types=max(n_types, 1),
                   time_unit=TIME_UNIT, info=info, item_features=feats)


def _row_rank(log: Any) -> np.ndarray:
    """Rank of each row among the user's rows with the same (item, timestamp): 0 for the
    first. Keys a row by what it is, not by where it sits in the file."""
    n = len(log)
    o = np.lexsort((np.arange(n), log.timestamp, log.item, log.user))
    ku = np.c_[log.user[o], log.item[o], log.timestamp[o]]
    new = np.r_[True, (ku[1:] != ku[:-1]).any(axis=1)]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[o] = np.arange(n) - start
    return rank


def _visible(store: Any, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    rows = store.rows(users)
    ts = store.column("timestamps")
    ip = store.indptr
    out = np.zeros(users.shape[0], np.int64)
    order = np.argsort(rows, kind="stable")
    rs = rows[order]
    for grp in np.split(order, np.flatnonzero(np.diff(rs)) + 1):
        if grp.size:
            r = rows[grp[0]]
            out[grp] = np.searchsorted(ts[ip[r]:ip[r + 1]], times[grp], side="left")
    return out


def task_from_log(path: str | Path, *, schema: Any, item_embeddings: str | Path | None = None,
                  negatives: int | None = None, sample_rate: float = 1.0, min_history: int = 1, seed: int = 0,
                  name: str | None = None) -> CTRTask:
    """:func:`log_task` on a file: ``schema`` is a :class:`~gsu.datasets.logs.LogSchema`, a dict
    or a JSON file; ``item_embeddings`` an optional Parquet (``item``, ``vector``) or ``.npz``
    (``ids``, ``vectors``) file of item vectors."""
    from gsu.datasets.logs import read_log

    if schema is None:
        raise ValueError(f"{path}: a log needs a schema (--schema FILE.json naming the user, item and timestamp columns)")
    log = read_log(path, schema)
    vec = read_item_vectors(item_embeddings, log.item_values) if item_embeddings is not None else None
    return log_task(log, negatives=negatives, sample_rate=sample_rate, min_history=min_history, item_vectors=vec,
                    seed=seed, name=name or Path(path).stem)


def movielens_task(folder: str | Path, *, titles: bool = False, sample_rate: float = 0.25, negatives: int = 1,
                   seed: int = 0, cache_dir: str | Path | None = None) -> CTRTask:
    """MovieLens (``ratings.csv`` + ``movies.csv``) through :func:`log_task`: every rating is a
    behavior (type = liked, rating >= 4), a hash-chosen ``sample_rate`` of the rating events are
    samples (label = liked) with ``negatives`` sampled movies each (drawn from ratings logged
    before the event, not yet rated by the user), category = primary genre, learned item ids;
    ``titles``: MiniLM title embeddings (offline) as MUSE-cosine's space (cached in
    ``cache_dir``)."""
    from gsu.datasets import read_movielens_movies
    from gsu.datasets.logs import read_log

    folder = Path(folder)
    if not (folder / "ratings.csv").is_file():
        raise FileNotFoundError(f"{folder}: no ratings.csv (expected a MovieLens folder)")
    log = read_log(folder / "ratings.csv", MOVIELENS_SCHEMA)
    movies = read_movielens_movies(folder / "movies.csv")
    rows = np.searchsorted(movies["movie_id"], log.item_values)
    rows = np.minimum(rows, movies["movie_id"].shape[0] - 1)
    if (movies["movie_id"][rows] != log.item_values).any():
        raise ValueError(f"{folder}: ratings of movies absent from movies.csv")
    content = None
    if titles:
        content = _title_vectors(folder, movies, cache_dir)
        content = None if content is None else content[rows]
    return log_task(log, negatives=negatives, sample_rate=sample_rate, min_history=1,
                    item_category=movies["category"][rows], content_vectors=content, item_dim=16, seed=seed,
                    name="movielens")


def _title_vectors(folder: Path, movies: dict[str, Any], cache_dir: str | Path | None) -> np.ndarray | None:
    import os

    cache = Path(cache_dir) / "movielens_title_minilm.npy" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        v = np.load(cache)
        if v.shape[0] == len(movies["title"]):
            return v
    try:
        from gsu.datasets.text import embed_texts
    except ImportError as e:
        logger.warning("MUSE-cosine on MovieLens skipped: %s", e)
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    v = embed_texts(list(movies["title"]), batch_size=128, progress=False)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, v)
    return v


def taobao_task(path: str | Path, *, negatives: int = 1, sample_rate: float = 1.0, seed: int = 0) -> CTRTask:
    """The Taobao UserBehavior format (``user_id, item_id, category_id, behavior_type,
    timestamp``; Parquet with those column names, or the raw headerless CSV) through
    :func:`log_task`: every behavior is a positive, ``negatives`` sampled per row."""
    from gsu.datasets.logs import read_log

    p = Path(path)
    schema = dict(TAOBAO_SCHEMA)
    if p.suffix.lower() in (".csv", ".txt"):
        schema["columns"] = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    log = read_log(p, schema)
    return log_task(log, negatives=negatives, sample_rate=sample_rate, seed=seed, name="taobao")
