"""Batch retrieval from files (what ``gsu retrieve`` runs): a store, a method and a file of requests in; positions and scores out.

File formats:

- **store**: a :class:`~gsu.retrieval.BehaviorStore` saved with ``store.save(path)``.
- **items**: an :class:`~gsu.retrieval.ItemTable` saved with ``table.save(path)``.
- **requests**: CSV with a header naming ``user,target`` and optionally ``time``
  (integer columns, any order, extra columns ignored), or ``.npz`` with int arrays
  ``user``, ``target`` and optionally ``time`` — one row per (user, target) pair. A
  ``time`` column applies the time cut (only behaviors with timestamp < time).
- **output** ``.npz``: ``user`` (S,), ``target`` (S,), ``positions`` (S, k) int64 (-1
  padded, positions into the user's history), ``scores`` (S, k) float32 (-inf padded),
  ``mask`` (S, k) bool, ``items`` (S, k) int64 behavior item ids (-1 padded),
  ``timestamps`` (S, k) int64 (-1 padded). For ``sdim``: ``vectors`` (S, d) float32 and
  ``mask`` (S,) bool instead.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gsu._validate import as_ids, as_ints
from gsu.errors import DataFormatError

log = logging.getLogger(__name__)

__all__ = ["read_requests", "retrieve_file"]


_I64 = (-(2**63), 2**63 - 1)


def read_requests(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(user (S,), target (S,), time (S,) | None)`` int64 from a CSV or ``.npz`` file.

    Errors name the file and, for a CSV, the line: a value that is not an integer or
    falls outside int64, a user or target id of -1 (reserved), a negative time, a row
    missing a column.
    """
    from gsu._format import open_regular

    p = Path(path)
    fd, _ = open_regular(p)  # a missing path or a folder: one clear line
    os.close(fd)
    suf = p.suffix.lower()
    if suf == ".npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                cols = {key: z[key] for key in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise DataFormatError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from None
        for name, v in cols.items():
            if name in ("user", "target", "time"):
                try:
                    cols[name] = as_ints(np.asarray(v).reshape(-1) if np.ndim(v) <= 1 else v, name=f"{p}: {name}")
                except ValueError as e:
                    raise DataFormatError(str(e)) from None
    elif suf in (".csv", ".txt"):
        with open(p, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip().lower() for h in next(reader)]
            except StopIteration:
                raise DataFormatError(f"{p}: empty requests file (expected a header 'user,target[,time]')") from None
            for need in ("user", "target"):
                if need not in header:
                    raise DataFormatError(f"{p}: line 1: header {header} lacks a {need!r} column (expected 'user,target[,time]')")
            names = [nm for nm in ("user", "target", "time") if nm in header]
            where = [header.index(nm) for nm in names]
            vals: dict[str, list[int]] = {nm: [] for nm in names}
            lines: list[int] = []
            for r in reader:
                if not r or not any(x.strip() for x in r):
                    continue
                ln = reader.line_num
                for nm, j in zip(names, where):
                    if j >= len(r):
                        raise DataFormatError(f"{p}: line {ln}: no {nm!r} column ({len(r)} values, header has {len(header)})")
                    txt = r[j].strip()
                    try:
                        v = int(txt)
                    except ValueError:
                        raise DataFormatError(f"{p}: line {ln}: column {nm!r}: {txt!r:.40} is not an integer") from None
                    if not _I64[0] <= v <= _I64[1]:
                        raise DataFormatError(f"{p}: line {ln}: column {nm!r}: {v} is outside int64")
                    if nm != "time" and v == -1:
                        raise DataFormatError(f"{p}: line {ln}: column {nm!r}: id -1 is reserved (it pads results)")
                    if nm == "time" and v < 0:
                        raise DataFormatError(f"{p}: line {ln}: column 'time': {v} is negative (request times are >= 0)")
                    vals[nm].append(v)
                lines.append(ln)
        cols = {nm: np.asarray(v, dtype=np.int64) for nm, v in vals.items()}
    else:
        raise DataFormatError(f"{p}: unknown requests suffix {suf!r} (expected .csv or .npz)")
    for need in ("user", "target"):
        if need not in cols:
            raise DataFormatError(f"{p}: missing {need!r} (expected arrays/columns user, target[, time])")
    try:
        user = as_ids(cols["user"], name=f"{p}: user")
        target = as_ids(cols["target"], name=f"{p}: target", n=user.shape[0])
        tt = None if "time" not in cols else as_ints(cols["time"], name=f"{p}: time", n=user.shape[0])
    except ValueError as e:
        raise DataFormatError(str(e)) from None
    if tt is not None and tt.size and tt.min() < 0:
        i = int(np.argmax(tt < 0))
        raise DataFormatError(f"{p}: time: {int((tt < 0).sum())} negative value(s), e.g. row {i}: {int(tt[i])} (request times are >= 0)")
    if user.shape[0] == 0:
        raise DataFormatError(f"{p}: no requests")
    return user, target, tt


def retrieve_file(
    store_path: str | os.PathLike,
    items_path: str | os.PathLike,
    method: str,
    requests_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    k: int = 100,
    params: dict[str, Any] | None = None,
    index_path: str | os.PathLike | None = None,
    n_threads: int = 1,
    mmap: bool = True,
) -> dict[str, Any]:
    """Run ``method`` over the requests and write the output ``.npz`` (see module docstring).

    Args:
        store_path / items_path: saved BehaviorStore / ItemTable (memory-mapped when ``mmap``).
        method: a :func:`gsu.retrieval.make_method` name (``exact``, ``hard``, ``soft``,
            ``simhash``, ``sdim``, ``sparse``, ``twin``, ``hybrid:hard+soft`` ...).
        requests_path: CSV/npz of ``user,target[,time]``.
        k: behaviors per request; params: method constructor settings.
        index_path: a saved gsu index over the catalog (ids = item ids) for ``soft`` /
            ``sparse`` (their long-history route).
        n_threads: threads over users.

    Returns a summary dict: requests, users, method, k, seconds, out.
    """
    from gsu.retrieval.batch import retrieve_batch
    from gsu.retrieval.registry import make_method
    from gsu.retrieval.items import ItemTable
    from gsu.retrieval.result import SDIMResult
    from gsu.retrieval.store import BehaviorStore

    from gsu._format import check_output_path

    out = check_output_path(out_path)  # a folder or a wrong suffix fails before any work
    if out.suffix != ".npz":
        raise ValueError(f"{out}: the output must be an .npz file")
    store = BehaviorStore.load(store_path, mmap=mmap)
    items = ItemTable.load(items_path, mmap=mmap)
    index = None
    if index_path is not None:
        import gsu.index

        index = gsu.index.load(index_path, mmap=mmap)
    m = make_method(method, items, k=k, index=index, **(params or {}))
    user, target, tt = read_requests(requests_path)
    late = 0
    if tt is not None:
        ts = store.column("timestamps")
        newest = int(ts.max()) if ts.shape[0] else None
        late = int((tt > newest).sum()) if newest is not None else int(tt.shape[0])
        if late:
            log.warning("%s: %d of %d request times are after the store's newest behavior (%s): their time cut removes nothing",
                        requests_path, late, tt.shape[0], newest)
    if tt is None or m.fit_serves_time_cuts:
        m.fit(store)  # the method's offline step (category index, SDIM's tables, ...)
    t0 = time.perf_counter()
    res = retrieve_batch(m, store, user, target, target_time=tt, n_threads=n_threads)
    secs = time.perf_counter() - t0
    if isinstance(res, SDIMResult):
        arrays = {"user": user, "target": target, "vectors": res.vectors, "mask": res.mask}
    else:
        arrays = {
            "user": user,
            "target": target,
            "positions": res.positions,
            "scores": res.scores,
            "mask": res.mask,
            "items": store.gather(user, res.positions, "items"),
            "timestamps": store.gather(user, res.positions, "timestamps"),
        }
    from gsu._format import atomic_savez

    atomic_savez(out, **arrays)
    summary = {
        "requests": int(user.shape[0]),
        "users": int(np.unique(user).shape[0]),
        "method": method,
        "k": int(k),
        "seconds": round(secs, 4),
        "requests_per_s": round(user.shape[0] / secs, 1) if secs > 0 else None,
        "out": str(out),
    }
    if tt is not None:
        summary["times_after_newest_behavior"] = late
    log.info("retrieve: %s", summary)
    return summary
