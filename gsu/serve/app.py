"""The HTTP application (Starlette, served by uvicorn).

Endpoints:

- ``POST /indexes/{name}/search`` — top-k over a served index. Body: JSON
  ``{"queries": [[...], ...], "k": 10, "filter": {...}, "params": {...}}``, or
  ``application/x-npy`` (queries (nq, d) float32, then optionally the filter's ids as
  int64), or ``application/octet-stream`` (raw little-endian float32 rows). With a binary
  body ``k``, the filter and search settings come from the query string: ``k=10``,
  ``filter_name=NAME``, ``time_from=T0&time_to=T1``, ``ranges=LO:HI,LO:HI``,
  ``p.<setting>=VALUE``. A JSON filter holds any of ``ids`` (list), ``ranges``
  (``[[lo, hi], ...]``, hi exclusive), ``time`` (``[t0, t1)`` over the index's configured
  item times) and ``name`` (a stored filter); several are combined with AND.
  Answer: ``ids`` (nq, k), ``scores`` (nq, k), ``counts`` (nq,), ``index``, ``version``,
  ``generation`` — JSON, or ``.npy`` records ``ids, scores, counts`` when the request
  says ``Accept: application/x-npy`` (version in the ``X-Gsu-Version`` header).
- ``POST /retrieve`` — one user's top-k behaviors for each target. JSON
  ``{"user": 7, "targets": [...], "time": t or [t per target], "method": "soft", "k": 50,
  "store": "default", "esu": false}`` or ``application/x-npy`` (targets int64, then
  optionally one time per target) with ``user``, ``method``, ``k``, ``store``, ``time``,
  ``esu`` in the query string. Answer: ``positions``, ``items``, ``scores`` (T, k),
  ``counts`` (T,), and ``esu`` (T,) click probabilities when asked and a model is loaded.
- ``GET /healthz`` — what is served (versions, sizes); ``GET /metrics`` — Prometheus text.

Every client error is a 4xx with a JSON body ``{"error": "<one line>"}``: 400 (bad shape,
dtype, value, k above the cap), 404 (unknown index, store or user), 413 (body, queries,
filter or targets above their caps), 415 (unknown content type).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gsu._validate import as_ids
from gsu.index import Filter
from gsu.serve import protocol as P
from gsu.serve.batcher import MicroBatcher
from gsu.serve.config import ServeConfig, StoreConfig
from gsu.serve.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from gsu.serve.registry import IndexRegistry, Served, UnknownIndex

log = logging.getLogger(__name__)

__all__ = ["create_app", "app_from_env", "HTTPError", "CONFIG_ENV"]

#: environment variable through which ``gsu serve`` hands the config to worker processes
CONFIG_ENV = "GSU_SERVE_CONFIG"


class HTTPError(Exception):
    """A client error: HTTP ``status`` and a one-line ``reason``; ``kind`` labels the metric."""

    def __init__(self, status: int, reason: str, kind: str = "bad_request"):
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(str(reason).split())  # one line
        self.kind = kind


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return s or type(e).__name__


def pin_threads(n: int) -> None:
    """BLAS/OpenMP and numba (this thread) to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    try:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


# --------------------------------------------------------------------------- request parsing
def _int(v: Any, name: str) -> int:
    if isinstance(v, bool):
        raise HTTPError(400, f"{name}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    raise HTTPError(400, f"{name}: expected an integer, got {v!r}")


def _number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise HTTPError(400, f"{name}: expected a number, got {v!r}")
    try:
        x = float(v)
    except ValueError:
        raise HTTPError(400, f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(x):
        raise HTTPError(400, f"{name}: expected a finite number, got {v!r}")
    return x


def _scalar(v: str) -> Any:
    """A query-string value: int, float, true/false or the string itself."""
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


@dataclass
class _TimeTable:
    """Item times sorted once, so a time window is two binary searches."""

    times: np.ndarray
    ids: np.ndarray

    @classmethod
    def load(cls, times_path: str, ids_path: str | None) -> "_TimeTable":
        t = np.load(times_path, mmap_mode="r")
        if t.ndim != 1 or t.dtype.kind not in "iuf":
            raise ValueError(f"{times_path}: expected a 1-D numeric array of item times, got {t.dtype} {t.shape}")
        ids = np.arange(t.shape[0], dtype=np.int64) if ids_path is None else as_ids(np.load(ids_path), name=ids_path, n=t.shape[0])
        order = np.argsort(t, kind="stable")
        return cls(np.ascontiguousarray(t[order]), np.ascontiguousarray(ids[order]))

    def window(self, lo: float, hi: float) -> np.ndarray:
        a, b = np.searchsorted(self.times, [lo, hi], side="left")
        return self.ids[a:b]


@dataclass
class _StoreState:
    name: str
    config: StoreConfig
    store: Any
    items: Any
    methods: dict[str, Any]
    model: Any
    model_config: Any


class _State:
    """Everything the handlers share (one per app, i.e. per worker process)."""

    def __init__(self, config: ServeConfig, *, warm: bool):
        self.config = config
        self.s = config.server
        self.metrics = ServerMetrics()
        m = self.metrics
        self.registry = IndexRegistry(config.indexes, warm=warm, on_swap=self._on_swap,
                                      on_load_error=lambda name, e: m.load_errors.labels(name).inc())
        self.batchers: dict[str, MicroBatcher] = {}
        self.receiving: dict[str, int] = {n: 0 for n in config.indexes}
        self.named: dict[str, dict[str, Filter]] = {}
        self.times: dict[str, _TimeTable] = {}
        self.stores: dict[str, _StoreState] = {}
        self.executor: ThreadPoolExecutor | None = None
        self.loader: ThreadPoolExecutor | None = None
        self.searcher: ThreadPoolExecutor | None = None
        self.watch_task: asyncio.Task | None = None
        self.started = time.time()

    def _on_swap(self, served: Served) -> None:
        self.metrics.index_version.labels(served.name).set(served.version)
        self.metrics.index_items.labels(served.name).set(served.index.ntotal)
        if served.generation > 1:
            self.metrics.swaps.labels(served.name).inc()

    # -- start / stop --------------------------------------------------------
    def load(self) -> None:
        """Load every index, filter, time table and store (blocking)."""
        pin_threads(self.s.threads)
        self.registry.load_all()
        for name, ic in self.config.indexes.items():
            served = self.registry.get(name)
            bad = set(ic.search) - served.search_params
            if bad:
                raise ValueError(f"indexes.{name}.search: unknown setting(s) {sorted(bad)} for a {served.index.KIND} index "
                                 f"(known: {sorted(served.search_params)})")
            self.named[name] = {fn: Filter.from_ids(np.load(fp)) for fn, fp in ic.filters.items()}
            if ic.times is not None:
                self.times[name] = _TimeTable.load(ic.times, ic.time_ids)
        for name, sc in self.config.stores.items():
            self.stores[name] = self._load_store(name, sc)

    def _load_store(self, name: str, sc: StoreConfig) -> _StoreState:
        from gsu.retrieval import BehaviorStore, ItemTable
        from gsu.retrieval.registry import make_method

        store = BehaviorStore.load(sc.behaviors, mmap=True)
        items = ItemTable.load(sc.items, mmap=True)
        methods = {}
        for mname, params in sc.methods.items():
            m = make_method(mname, items, k=sc.default_k, **params)
            if m.output != "positions":
                raise ValueError(f"stores.{name}.methods.{mname}: {type(m).__name__} returns aggregated vectors, not behaviors; "
                                 "not served by /retrieve")
            methods[mname] = m
        model = model_config = None
        if sc.model is not None:
            import torch

            from gsu.ctr.checkpoint import load_checkpoint

            torch.set_num_threads(self.s.threads)
            model, info = load_checkpoint(sc.model)
            model_config = info["model_config"]
            if model_config.kind != "attention":
                raise ValueError(f"stores.{name}.model: {sc.model} is an SDIM model; /retrieve serves target-attention models")
        log.info("store %s: %d users, %d behaviors, methods %s%s", name, store.n_users, store.n_behaviors, sorted(methods),
                 f", ESU {sc.model}" if model is not None else "")
        return _StoreState(name, sc, store, items, methods, model, model_config)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        pin_threads(self.s.threads)  # the event loop's thread runs the searches
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="gsu-retrieve", initializer=pin_threads,
                                           initargs=(self.s.threads,))
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="gsu-loader", initializer=pin_threads, initargs=(self.s.threads,))
        await loop.run_in_executor(self.loader, self.load)
        searcher = None
        if self.s.search_threads:
            searcher = ThreadPoolExecutor(self.s.search_threads, thread_name_prefix="gsu-batch", initializer=pin_threads,
                                          initargs=(self.s.threads,))
            self.searcher = searcher
        for name in self.config.indexes:
            b = MicroBatcher(name, self.registry, searcher, max_batch=self.s.max_batch, max_wait_s=self.s.max_wait_ms / 1000,
                             in_flight=lambda n=name: self.receiving[n], on_batch=self._on_batch)
            b.start()
            self.batchers[name] = b
        if self.config.indexes:
            self.watch_task = loop.create_task(self._watch(), name="gsu-index-watcher")

    def _on_batch(self, served: Served, n_requests: int, n_queries: int) -> None:
        self.metrics.batch_requests.labels(served.name).observe(n_requests)
        self.metrics.batch_queries.labels(served.name).observe(n_queries)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.s.watch_interval_s)
            if self.loader is None or getattr(self.loader, "_shutdown", False):
                return  # stopping
            try:
                await loop.run_in_executor(self.loader, self.registry.check_all)
            except Exception:  # noqa: BLE001 - the watcher must keep running
                log.exception("index watcher")

    async def stop(self) -> None:
        if self.watch_task is not None:
            self.watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watch_task
        for b in self.batchers.values():
            await b.stop()
        for ex in (self.executor, self.loader, self.searcher):
            if ex is not None:
                ex.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- handlers
async def _read_body(request: Request, cap: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise HTTPError(400, f"bad Content-Length header {cl!r}") from None
        if n > cap:
            raise HTTPError(413, f"request body of {n} bytes is above the cap of {cap} bytes", "too_large")
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise HTTPError(413, f"request body is above the cap of {cap} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _wants_npy(request: Request) -> bool:
    return P.NPY in request.headers.get("accept", "")


def _check_k(k: Any, cap: int) -> int:
    k = _int(k, "k")
    if k < 1:
        raise HTTPError(400, f"k: expected a positive integer, got {k}")
    if k > cap:
        raise HTTPError(400, f"k: {k} is above the cap of {cap}", "too_large")
    return k


def _json_body(body: bytes) -> dict[str, Any]:
    import json

    try:
        d = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HTTPError(400, f"body is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise HTTPError(400, f"body: expected a JSON object, got {type(d).__name__}")
    return d


def _npy(body: bytes) -> list[np.ndarray]:
    try:
        return P.decode_npy(body)
    except ValueError as e:
        raise HTTPError(400, _one_line(e)) from None


class _Search:
    """Parsing and answering ``POST /indexes/{name}/search``."""

    def __init__(self, st: _State):
        self.st = st

    def _queries(self, q: Any, dim: int, *, from_json: bool) -> np.ndarray:
        if from_json:
            try:
                arr = np.asarray(q, dtype=np.float64)
            except (ValueError, TypeError):
                raise HTTPError(400, "queries: expected a list of equal-length lists of numbers") from None
            if arr.ndim == 1:
                arr = arr[None, :]
            arr = arr.astype(np.float32)
        else:
            arr = q
            if arr.dtype != np.float32:
                raise HTTPError(400, f"queries: expected dtype float32, got {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
            raise HTTPError(400, f"queries: expected shape (nq, {dim}) with nq >= 1, got {tuple(arr.shape)}")
        if arr.shape[0] > self.st.s.max_queries:
            raise HTTPError(413, f"queries: {arr.shape[0]} rows is above the cap of {self.st.s.max_queries}", "too_large")
        if not np.isfinite(arr).all():
            raise HTTPError(400, "queries: contain NaN or inf")
        return np.ascontiguousarray(arr)

    def _ids(self, ids: Any) -> np.ndarray:
        a = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        if a.ndim != 1:
            raise HTTPError(400, f"filter ids: expected a 1-D list of integer ids, got shape {a.shape}")
        if a.shape[0] > self.st.s.max_filter_ids:
            raise HTTPError(413, f"filter ids: {a.shape[0]} ids is above the cap of {self.st.s.max_filter_ids}", "too_large")
        if a.size and a.dtype.kind not in "iu":
            raise HTTPError(400, f"filter ids: expected integers, got {a.dtype if a.dtype.kind != 'U' else 'strings'}")
        return a.astype(np.int64, copy=False)

    def _filter(self, name: str, spec: dict[str, Any]) -> Filter | None:
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise HTTPError(400, "filter: expected an object with any of ids, ranges, time, name")
        bad = set(spec) - {"ids", "ranges", "time", "name"}
        if bad:
            raise HTTPError(400, f"filter: unknown key(s) {sorted(bad)}; expected any of ids, ranges, time, name")
        parts: list[Filter] = []
        if spec.get("ids") is not None:
            parts.append(Filter.from_ids(self._ids(spec["ids"])))
        if spec.get("ranges") is not None:
            rs = spec["ranges"]
            if not isinstance(rs, list) or not rs or not all(isinstance(r, (list, tuple)) and len(r) == 2 for r in rs):
                raise HTTPError(400, "filter ranges: expected a non-empty list of [lo, hi] pairs")
            f = None
            for lo, hi in rs:
                lo, hi = _int(lo, "filter range lo"), _int(hi, "filter range hi")
                if hi < lo:
                    raise HTTPError(400, f"filter range [{lo}, {hi}): hi < lo")
                r = Filter.range(lo, hi)
                f = r if f is None else f | r
            parts.append(f)
        if spec.get("time") is not None:
            t = spec["time"]
            if not isinstance(t, (list, tuple)) or len(t) != 2:
                raise HTTPError(400, "filter time: expected [from, to)")
            tt = self.st.times.get(name)
            if tt is None:
                raise HTTPError(400, f"filter time: index {name!r} has no item times configured")
            parts.append(Filter.from_ids(tt.window(_number(t[0], "filter time from"), _number(t[1], "filter time to"))))
        if spec.get("name") is not None:
            fn = spec["name"]
            f = self.st.named.get(name, {}).get(fn) if isinstance(fn, str) else None
            if f is None:
                known = sorted(self.st.named.get(name, {}))
                raise HTTPError(404, f"filter name {fn!r} is not stored for index {name!r} (stored: {known})", "unknown_filter")
            parts.append(f)
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return out

    def _params(self, served: Served, params: Any) -> dict[str, Any]:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise HTTPError(400, "params: expected an object of search settings")
        merged = dict(self.st.config.indexes[served.name].search)
        for key, v in params.items():
            if key not in served.search_params:
                raise HTTPError(400, f"params: unknown search setting {key!r} for a {served.index.KIND} index "
                                     f"(known: {sorted(served.search_params)})")
            if not isinstance(v, (int, float, str, bool)) or v is None:
                raise HTTPError(400, f"params.{key}: expected a number, string or boolean")
            merged[key] = v
        return merged

    def _query_string(self, request: Request) -> dict[str, Any]:
        qp = request.query_params
        out: dict[str, Any] = {"k": qp.get("k", 10), "params": {}}
        spec: dict[str, Any] = {}
        for key, v in qp.multi_items():
            if key == "k":
                continue
            if key == "filter_name":
                spec["name"] = v
            elif key in ("time_from", "time_to"):
                spec.setdefault("time", [None, None])[0 if key == "time_from" else 1] = v
            elif key == "ranges":
                try:
                    spec["ranges"] = [[int(a) for a in r.split(":")] for r in v.split(",") if r]
                except ValueError:
                    raise HTTPError(400, f"ranges: expected LO:HI,LO:HI..., got {v!r}") from None
            elif key.startswith("p."):
                out["params"][key[2:]] = _scalar(v)
            else:
                raise HTTPError(400, f"unknown query parameter {key!r}")
        if "time" in spec and None in spec["time"]:
            raise HTTPError(400, "time filter: give both time_from and time_to")
        out["filter"] = spec or None
        return out

    async def __call__(self, request: Request) -> Response:
        st = self.st
        name = request.path_params["name"]
        try:
            served = st.registry.get(name)
        except UnknownIndex:
            raise HTTPError(404, f"unknown index {name!r} (served: {st.registry.names})", "unknown_index") from None
        st.receiving[name] += 1
        try:
            body = await _read_body(request, st.s.max_body_bytes)
            ctype = P.media_type(request.headers.get("content-type"))
            if ctype == P.JSON or (ctype == "" and body[:1] in (b"{", b"[")):
                d = _json_body(body)
                bad = set(d) - {"queries", "k", "filter", "params"}
                if bad:
                    raise HTTPError(400, f"body: unknown key(s) {sorted(bad)}; expected queries, k, filter, params")
                if "queries" not in d:
                    raise HTTPError(400, "body: missing 'queries'")
                queries = self._queries(d["queries"], served.dim, from_json=True)
                k = _check_k(d.get("k", 10), st.s.max_k)
                flt = self._filter(name, d.get("filter"))
                params = self._params(served, d.get("params"))
            elif ctype in (P.NPY, P.RAW):
                qs = self._query_string(request)
                if ctype == P.NPY:
                    arrays = _npy(body)
                    if len(arrays) > 2:
                        raise HTTPError(400, f"npy body: expected queries and optionally filter ids, got {len(arrays)} arrays")
                    q = arrays[0]
                    if len(arrays) == 2:
                        spec = dict(qs["filter"] or {})
                        spec["ids"] = arrays[1]
                        qs["filter"] = spec
                else:
                    if len(body) % (4 * served.dim):
                        raise HTTPError(400, f"raw body: {len(body)} bytes is not a whole number of float32 rows of dimension {served.dim}")
                    q = np.frombuffer(body, dtype="<f4").reshape(-1, served.dim)
                queries = self._queries(q, served.dim, from_json=False)
                k = _check_k(qs["k"], st.s.max_k)
                flt = self._filter(name, qs["filter"])
                params = self._params(served, qs["params"])
            else:
                raise HTTPError(415, f"unsupported Content-Type {ctype or '(none)'!r}; send {P.JSON}, {P.NPY} or {P.RAW}",
                                "unsupported_media")
        except ValueError as e:  # from gsu's own checks (filter ids, ...)
            raise HTTPError(400, _one_line(e)) from None
        finally:
            st.receiving[name] -= 1
        try:
            shared = flt is not None and any(flt is f for f in st.named.get(name, {}).values())
            res, served = await st.batchers[name].submit(queries, k, flt, params, shared=shared)
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _one_line(e)) from None
        headers = {"X-Gsu-Index": name, "X-Gsu-Version": str(served.version), "X-Gsu-Generation": str(served.generation)}
        if _wants_npy(request):
            return Response(P.encode_npy(res.ids, res.scores, res.counts), media_type=P.NPY, headers=headers)
        out = {"index": name, "version": served.version, "generation": served.generation, "ids": res.ids.tolist(),
               "scores": P.json_matrix(res.scores), "counts": res.counts.tolist()}
        return Response(P.dumps(out), media_type=P.JSON, headers=headers)


class _Retrieve:
    """Parsing and answering ``POST /retrieve``."""

    def __init__(self, st: _State):
        self.st = st

    def _store(self, name: Any) -> _StoreState:
        stores = self.st.stores
        if name is None:
            if len(stores) != 1:
                raise HTTPError(400 if stores else 404, f"store: name one of {sorted(stores)}" if stores else "no behavior store is served",
                                "unknown_store")
            return next(iter(stores.values()))
        s = stores.get(name) if isinstance(name, str) else None
        if s is None:
            raise HTTPError(404, f"unknown store {name!r} (served: {sorted(stores)})", "unknown_store")
        return s

    async def __call__(self, request: Request) -> Response:
        st = self.st
        body = await _read_body(request, st.s.max_body_bytes)
        ctype = P.media_type(request.headers.get("content-type"))
        times: Any = None
        if ctype == P.JSON or (ctype == "" and body[:1] == b"{"):
            d = _json_body(body)
            bad = set(d) - {"user", "targets", "time", "method", "k", "store", "esu"}
            if bad:
                raise HTTPError(400, f"body: unknown key(s) {sorted(bad)}; expected user, targets, time, method, k, store, esu")
            for key in ("user", "targets"):
                if key not in d:
                    raise HTTPError(400, f"body: missing {key!r}")
            targets = np.asarray(d["targets"]) if isinstance(d["targets"], list) else None
            if targets is None or targets.ndim != 1 or (targets.size and targets.dtype.kind not in "iu"):
                raise HTTPError(400, "targets: expected a list of integer item ids")
            t = d.get("time")
            if t is not None:
                if isinstance(t, list):
                    times = np.asarray(t)
                    if times.ndim != 1 or times.shape[0] != targets.shape[0] or (times.size and times.dtype.kind not in "iu"):
                        raise HTTPError(400, f"time: expected one integer time per target ({targets.shape[0]})")
                else:
                    times = _int(t, "time")
            user, method, k, store, esu = d["user"], d.get("method"), d.get("k"), d.get("store"), d.get("esu", False)
            if not isinstance(esu, bool):
                raise HTTPError(400, f"esu: expected true or false, got {esu!r}")
        elif ctype == P.NPY:
            arrays = _npy(body)
            if len(arrays) > 2:
                raise HTTPError(400, f"npy body: expected targets and optionally one time per target, got {len(arrays)} arrays")
            targets = arrays[0]
            if targets.ndim != 1 or targets.dtype.kind not in "iu":
                raise HTTPError(400, f"targets: expected a 1-D integer array, got {targets.dtype} {targets.shape}")
            if len(arrays) == 2:
                times = arrays[1]
                if times.shape != targets.shape or times.dtype.kind not in "iu":
                    raise HTTPError(400, f"time: expected one integer time per target {targets.shape}, got {times.dtype} {times.shape}")
            qp = request.query_params
            bad = set(qp) - {"user", "method", "k", "store", "time", "esu"}
            if bad:
                raise HTTPError(400, f"unknown query parameter(s) {sorted(bad)}")
            if "user" not in qp:
                raise HTTPError(400, "query string: missing 'user'")
            user, method, k, store = qp["user"], qp.get("method"), qp.get("k"), qp.get("store")
            if "time" in qp:
                if times is not None:
                    raise HTTPError(400, "time: give it in the query string or as an array, not both")
                times = _int(qp["time"], "time")
            esu = _scalar(qp.get("esu", "false"))
            if not isinstance(esu, bool):
                raise HTTPError(400, f"esu: expected true or false, got {qp.get('esu')!r}")
        else:
            raise HTTPError(415, f"unsupported Content-Type {ctype or '(none)'!r}; send {P.JSON} or {P.NPY}", "unsupported_media")
        s = self._store(store)
        user = _int(user, "user")
        if targets.shape[0] == 0:
            raise HTTPError(400, "targets: empty (expected at least one target item id)")
        if targets.shape[0] > st.s.max_targets:
            raise HTTPError(413, f"targets: {targets.shape[0]} is above the cap of {st.s.max_targets}", "too_large")
        mname = method if method is not None else (s.config.default_method or next(iter(s.methods)))
        m = s.methods.get(mname) if isinstance(mname, str) else None
        if m is None:
            raise HTTPError(400, f"method {mname!r} is not served for store {s.name!r} (served: {sorted(s.methods)})")
        k = _check_k(k if k is not None else s.config.default_k, st.s.max_k)
        if not s.store.has_user(user):
            raise HTTPError(404, f"unknown user {user} (store {s.name!r} has {s.store.n_users} users)", "unknown_user")
        if esu and s.model is None:
            raise HTTPError(400, f"esu: no model is configured for store {s.name!r}")
        targets = targets.astype(np.int64, copy=False)
        if isinstance(times, np.ndarray):
            times = times.astype(np.int64, copy=False)
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(st.executor, _retrieve, s, m, user, targets, times, k, esu)
        except (ValueError, TypeError) as e:
            raise HTTPError(400, _one_line(e)) from None
        if _wants_npy(request):
            arrays = [out["positions"], out["items"], out["scores"], out["counts"]]
            if "esu" in out:
                arrays.append(out["esu"])
            return Response(P.encode_npy(*arrays), media_type=P.NPY, headers={"X-Gsu-Method": mname})
        js = {"user": user, "store": s.name, "method": mname, "k": k, "positions": out["positions"].tolist(),
              "items": out["items"].tolist(), "scores": P.json_matrix(out["scores"]), "counts": out["counts"].tolist()}
        if "esu" in out:
            js["esu"] = out["esu"].tolist()
        return Response(P.dumps(js), media_type=P.JSON)


def _retrieve(s: _StoreState, method: Any, user: int, targets: np.ndarray, times: Any, k: int, esu: bool) -> dict[str, np.ndarray]:
    """Run in a worker thread: retrieve, gather item ids, optionally score with the ESU."""
    h = s.store.history(user)
    res = method.retrieve(h, targets, k=k, target_time=times)
    pos = res.positions
    out = {"positions": pos, "items": h.gather(pos, "items"), "scores": res.scores, "counts": res.counts}
    if esu:
        out["esu"] = _esu_scores(s, h, targets, times, pos, res.mask)
    return out


def _esu_scores(s: _StoreState, h: Any, targets: np.ndarray, times: Any, pos: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The ESU's click probability (T,) float32 of each target over its retrieved behaviors,
    with the features laid out as :func:`gsu.ctr.data.make_batch` lays them out."""
    import torch

    from gsu.ctr.layers import TemporalEncoding
    from gsu.ctr.model import BehaviorFeatures, TargetFeatures

    cfg = s.model_config
    T = targets.shape[0]
    L = len(h)
    if s.items.category is None:
        raise ValueError("esu: the item table has no categories, which the model needs")
    tcat = s.items.categories(targets)
    p = np.where(mask, pos, 0) if L else np.zeros_like(pos)
    items = np.where(mask, h.items[p], 0)
    cats = np.where(mask, h.category[p] if h.category is not None else s.items.categories(h.items[p].reshape(-1)).reshape(p.shape), 0)
    btype = np.where(mask, h.behavior_type[p].astype(np.int64), 0) if h.behavior_type is not None else np.zeros_like(items)
    if max(int(targets.max()), int(items.max())) >= cfg.n_items:
        raise ValueError(f"esu: item ids reach {max(int(targets.max()), int(items.max()))} but the model knows {cfg.n_items} items")
    if cfg.temporal == "position":
        vis = np.full(T, L, np.int64) if times is None else np.searchsorted(h.timestamps, np.broadcast_to(times, (T,)), side="left")
        offs = (vis[:, None] - 1 - pos).astype(np.float32)
    else:
        if h.timestamps is None:
            offs = np.zeros(pos.shape, np.float32)
        else:
            t = np.full(T, int(h.timestamps[-1]) + 1, np.int64) if times is None else np.broadcast_to(np.asarray(times, np.int64), (T,))
            offs = ((t[:, None] - h.timestamps[p]) / cfg.time_unit).astype(np.float32)
    buckets = TemporalEncoding.bucketize(torch.from_numpy(offs), cfg.n_time_buckets)
    target = TargetFeatures(torch.from_numpy(np.array(targets, np.int64)), torch.from_numpy(np.array(tcat, np.int64)))
    beh = BehaviorFeatures(torch.from_numpy(items), torch.from_numpy(cats.astype(np.int64)), torch.from_numpy(btype), buckets)
    with torch.no_grad():
        logits = s.model(target, beh, torch.from_numpy(np.ascontiguousarray(mask)))
    return torch.sigmoid(logits).numpy().astype(np.float32)


# --------------------------------------------------------------------------- the app
def _endpoint(st: _State, label: str, fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    m = st.metrics

    async def handler(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            resp = await fn(request)
        except HTTPError as e:
            m.errors.labels(label, e.kind).inc()
            resp = Response(P.dumps({"error": e.reason}), status_code=e.status, media_type=P.JSON)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug must not take the worker down
            log.exception("%s: internal error", label)
            m.errors.labels(label, "internal").inc()
            resp = Response(P.dumps({"error": f"internal error: {_one_line(e)}"}), status_code=500, media_type=P.JSON)
        m.requests.labels(label, str(resp.status_code)).inc()
        m.latency.labels(label).observe(time.perf_counter() - t0)
        return resp

    return handler


def create_app(config: ServeConfig, *, warm: bool = True) -> Starlette:
    """The Starlette app serving ``config``; files are loaded when the app starts
    (uvicorn's lifespan), in every worker process."""
    st = _State(config, warm=warm)

    async def healthz(request: Request) -> Response:
        idx = {}
        for name in st.registry.names:
            sv = st.registry.get(name)
            idx[name] = {"kind": sv.index.KIND, "items": int(sv.index.ntotal), "dim": sv.dim, "version": sv.version,
                         "generation": sv.generation, "path": st.config.indexes[name].path,
                         "filters": sorted(st.named.get(name, {})), "times": name in st.times}
        stores = {n: {"users": int(s.store.n_users), "behaviors": int(s.store.n_behaviors), "methods": sorted(s.methods),
                      "esu": s.model is not None} for n, s in st.stores.items()}
        return Response(P.dumps({"status": "ok", "worker": os.getpid(), "uptime_s": round(time.time() - st.started, 3),
                                 "indexes": idx, "stores": stores}), media_type=P.JSON)

    async def metrics(request: Request) -> Response:
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await st.start()
        try:
            yield
        finally:
            await st.stop()

    routes = [
        Route("/indexes/{name}/search", _endpoint(st, "search", _Search(st)), methods=["POST"]),
        Route("/retrieve", _endpoint(st, "retrieve", _Retrieve(st)), methods=["POST"]),
        Route("/healthz", _endpoint(st, "healthz", healthz), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gsu = st
    return app


def app_from_env() -> Starlette:
    """The app factory of ``gsu serve`` worker processes: the config comes as JSON in
    :data:`CONFIG_ENV`."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set; start the server with `gsu serve`")
    return create_app(ServeConfig.from_json(text))
