"""Python client of ``gsu serve``.

```python
from gsu.client import Client
with Client("http://127.0.0.1:8000") as c:
    res = c.search("items", queries, k=10, filter_ids=user_item_ids)   # ids, scores, counts, version
    out = c.retrieve(user=7, targets=[3, 14, 15], k=50, method="soft")  # positions, items, scores, counts
    c.healthz(); c.metrics()
```

:class:`Client` is synchronous (one keep-alive connection; use one client per thread);
:class:`AsyncClient` is its asyncio twin (one connection per client, for load
generators). Both send queries and filter ids as ``.npy`` records and ask for ``.npy``
answers (``binary=False`` uses JSON instead). A 4xx/5xx answer raises
:class:`ServeError` carrying the status and the server's one-line reason. Only the
standard library and numpy are needed.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlencode, urlsplit

import numpy as np

__all__ = ["Client", "AsyncClient", "ServeError", "SearchAnswer", "RetrieveAnswer"]

JSON = "application/json"
NPY = "application/x-npy"


class ServeError(Exception):
    """The server answered with an error: ``status`` (HTTP code) and ``reason`` (one line)."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class SearchAnswer:
    """``ids`` (nq, k) int64 (-1 padded), ``scores`` (nq, k) float32 (-inf padded),
    ``counts`` (nq,) int64, and the ``version`` / ``generation`` of the index that answered."""

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    version: int
    generation: int


@dataclass(frozen=True)
class RetrieveAnswer:
    """Per target: ``positions`` (T, k) int64 into the user's history (-1 padded),
    ``items`` (T, k) int64 item ids, ``scores`` (T, k) float32, ``counts`` (T,) int64, and
    ``esu`` (T,) float32 click probabilities when asked for (else ``None``)."""

    positions: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    esu: np.ndarray | None


def _npy(*arrays: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    for a in arrays:
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _read_npy(body: bytes) -> list[np.ndarray]:
    try:  # the server's decoder: numeric arrays only, numpy's usual header parsed without ``ast``
        from gsu.serve.protocol import decode_npy
    except ImportError:  # pragma: no cover - the client alone (no serve extra)
        import io

        f = io.BytesIO(body)
        out = []
        while f.tell() < len(body):
            out.append(np.lib.format.read_array(f, allow_pickle=False))
        return out
    return decode_npy(body)


def _matrix(rows: list[list[Any]], dtype: Any, fill: float) -> np.ndarray:
    a = np.array([[fill if v is None else v for v in r] for r in rows], dtype=dtype)
    return a.reshape(len(rows), -1) if rows else np.zeros((0, 0), dtype)


def _search_request(index: str, queries: Any, k: int, filter_ids: Any, filter_ranges: Sequence[tuple[int, int]] | None,
                    time_window: tuple[float, float] | None, filter_name: str | None, params: dict[str, Any] | None,
                    binary: bool) -> tuple[str, bytes, dict[str, str]]:
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    path = f"/indexes/{index}/search"
    if not binary:
        flt: dict[str, Any] = {}
        if filter_ids is not None:
            flt["ids"] = np.asarray(filter_ids, dtype=np.int64).reshape(-1).tolist()
        if filter_ranges is not None:
            flt["ranges"] = [[int(a), int(b)] for a, b in filter_ranges]
        if time_window is not None:
            flt["time"] = [float(time_window[0]), float(time_window[1])]
        if filter_name is not None:
            flt["name"] = filter_name
        body = {"queries": q.tolist(), "k": int(k), "filter": flt or None, "params": params or {}}
        return path, json.dumps(body).encode(), {"Content-Type": JSON, "Accept": JSON}
    qs: list[tuple[str, Any]] = [("k", int(k))]
    if filter_name is not None:
        qs.append(("filter_name", filter_name))
    if filter_ranges is not None:
        qs.append(("ranges", ",".join(f"{int(a)}:{int(b)}" for a, b in filter_ranges)))
    if time_window is not None:
        qs += [("time_from", repr(float(time_window[0]))), ("time_to", repr(float(time_window[1])))]
    for key, v in (params or {}).items():
        qs.append((f"p.{key}", json.dumps(v) if isinstance(v, bool) else v))
    arrays = [q] if filter_ids is None else [q, np.asarray(filter_ids, dtype=np.int64).reshape(-1)]
    return f"{path}?{urlencode(qs)}", _npy(*arrays), {"Content-Type": NPY, "Accept": NPY}


def _search_answer(status: int, headers: dict[str, str], body: bytes) -> SearchAnswer:
    if status >= 400:
        raise ServeError(status, _reason(body))
    if headers.get("content-type", "").startswith(NPY):
        ids, scores, counts = _read_npy(body)
        return SearchAnswer(ids, scores, counts, int(headers.get("x-gsu-version", -1)), int(headers.get("x-gsu-generation", -1)))
    d = json.loads(body)
    return SearchAnswer(_matrix(d["ids"], np.int64, -1), _matrix(d["scores"], np.float32, -np.inf),
                        np.asarray(d["counts"], np.int64), int(d["version"]), int(d["generation"]))


def _retrieve_request(user: int, targets: Any, time: Any, method: str | None, k: int | None, store: str | None, esu: bool,
                      binary: bool) -> tuple[str, bytes, dict[str, str]]:
    t = np.asarray(targets, dtype=np.int64).reshape(-1)
    if not binary:
        body: dict[str, Any] = {"user": int(user), "targets": t.tolist(), "esu": bool(esu)}
        if time is not None:
            body["time"] = np.asarray(time, dtype=np.int64).tolist()
        for key, v in (("method", method), ("k", k), ("store", store)):
            if v is not None:
                body[key] = v
        return "/retrieve", json.dumps(body).encode(), {"Content-Type": JSON, "Accept": JSON}
    qs: list[tuple[str, Any]] = [("user", int(user))]
    for key, v in (("method", method), ("k", k), ("store", store)):
        if v is not None:
            qs.append((key, v))
    if esu:
        qs.append(("esu", "true"))
    arrays = [t]
    if time is not None:
        if np.ndim(time) == 0:
            qs.append(("time", int(time)))
        else:
            arrays.append(np.asarray(time, dtype=np.int64).reshape(-1))
    return f"/retrieve?{urlencode(qs)}", _npy(*arrays), {"Content-Type": NPY, "Accept": NPY}


def _retrieve_answer(status: int, headers: dict[str, str], body: bytes) -> RetrieveAnswer:
    if status >= 400:
        raise ServeError(status, _reason(body))
    if headers.get("content-type", "").startswith(NPY):
        arrays = _read_npy(body)
        return RetrieveAnswer(*arrays[:4], arrays[4] if len(arrays) > 4 else None)
    d = json.loads(body)
    esu = np.asarray(d["esu"], np.float32) if "esu" in d else None
    return RetrieveAnswer(_matrix(d["positions"], np.int64, -1), _matrix(d["items"], np.int64, -1),
                          _matrix(d["scores"], np.float32, -np.inf), np.asarray(d["counts"], np.int64), esu)


def _reason(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")


def _host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``http://HOST[:PORT]`` server address (port 80 by default)."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise ValueError(f"url: expected http://HOST:PORT, got {url!r}")
    return u.hostname, u.port or 80


class Client:
    """Synchronous client over one keep-alive HTTP/1.1 connection (thread-safe through a
    lock; for parallel requests use one client per thread).

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"``.
        timeout: seconds per request.
        binary: send/receive ``.npy`` (default) or JSON.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 30.0, binary: bool = True):
        self.host, self.port = _host_port(url)
        self.timeout = float(timeout)
        self.binary = bool(binary)
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            for attempt in (0, 1):
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                try:
                    self._conn.request(method, path, body=body, headers=headers or {})
                    r = self._conn.getresponse()
                    data = r.read()
                    hdrs = {k.lower(): v for k, v in r.getheaders()}
                    if hdrs.get("connection", "").lower() == "close":
                        self.close_connection()
                    return r.status, hdrs, data
                except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest, BrokenPipeError):
                    self.close_connection()
                    if attempt:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

    def close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_connection()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def search(self, index: str, queries: Any, k: int = 10, *, filter_ids: Any = None,
               filter_ranges: Sequence[tuple[int, int]] | None = None, time_window: tuple[float, float] | None = None,
               filter_name: str | None = None, params: dict[str, Any] | None = None) -> SearchAnswer:
        """Top-``k`` of each row of ``queries`` (nq, d) (or one (d,) vector) in index ``index``.

        Filters (combined with AND): ``filter_ids`` (allowed item ids), ``filter_ranges``
        (``[(lo, hi), ...]``, hi exclusive), ``time_window`` (``(t0, t1)`` over the index's
        configured item times), ``filter_name`` (a stored filter). ``params``: search
        settings of the index (e.g. ``{"effort": 1.5}``)."""
        path, body, headers = _search_request(index, queries, k, filter_ids, filter_ranges, time_window, filter_name, params,
                                              self.binary)
        return _search_answer(*self._request("POST", path, body, headers))

    def retrieve(self, user: int, targets: Any, *, time: Any = None, method: str | None = None, k: int | None = None,
                 store: str | None = None, esu: bool = False) -> RetrieveAnswer:
        """The top-``k`` behaviors of ``user`` for each of ``targets`` (T,) item ids;
        ``time``: one cut for all targets or one per target (behaviors at or after it are
        not visible); ``esu``: also the ESU model's click probability per target."""
        path, body, headers = _retrieve_request(user, targets, time, method, k, store, esu, self.binary)
        return _retrieve_answer(*self._request("POST", path, body, headers))

    def healthz(self) -> dict[str, Any]:
        status, _, body = self._request("GET", "/healthz")
        if status >= 400:
            raise ServeError(status, _reason(body))
        return json.loads(body)

    def metrics(self) -> str:
        status, _, body = self._request("GET", "/metrics")
        if status >= 400:
            raise ServeError(status, _reason(body))
        return body.decode()


class AsyncClient:
    """The asyncio twin of :class:`Client`: one keep-alive connection, one request at a
    time (open several clients for concurrency). HTTP/1.1 with ``Content-Length`` bodies
    only, which is what ``gsu serve`` sends."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, timeout: float = 30.0, binary: bool = True):
        self.host, self.port = _host_port(url)
        self.timeout = float(timeout)
        self.binary = bool(binary)
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        return await asyncio.wait_for(self._exchange(method, path, body, headers or {}), self.timeout)

    async def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in (0, 1):
            if self._rw is None:
                self._rw = await asyncio.open_connection(self.host, self.port)
            reader, writer = self._rw
            head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            try:
                writer.write(head.encode() + body)
                await writer.drain()
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("server closed the connection")
                status = int(status_line.split(b" ", 2)[1])
                hdrs: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = line.decode("latin-1").partition(":")
                    hdrs[k.strip().lower()] = v.strip()
                n = int(hdrs.get("content-length", "0"))
                data = await reader.readexactly(n) if n else b""
                if hdrs.get("connection", "").lower() == "close":
                    await self.aclose()
                return status, hdrs, data
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.aclose()
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        if self._rw is not None:
            w = self._rw[1]
            self._rw = None
            w.close()
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def search(self, index: str, queries: Any, k: int = 10, *, filter_ids: Any = None,
                     filter_ranges: Sequence[tuple[int, int]] | None = None, time_window: tuple[float, float] | None = None,
                     filter_name: str | None = None, params: dict[str, Any] | None = None) -> SearchAnswer:
        """See :meth:`Client.search`."""
        path, body, headers = _search_request(index, queries, k, filter_ids, filter_ranges, time_window, filter_name, params,
                                              self.binary)
        return _search_answer(*await self._request("POST", path, body, headers))

    async def retrieve(self, user: int, targets: Any, *, time: Any = None, method: str | None = None, k: int | None = None,
                       store: str | None = None, esu: bool = False) -> RetrieveAnswer:
        """See :meth:`Client.retrieve`."""
        path, body, headers = _retrieve_request(user, targets, time, method, k, store, esu, self.binary)
        return _retrieve_answer(*await self._request("POST", path, body, headers))

    async def healthz(self) -> dict[str, Any]:
        status, _, body = await self._request("GET", "/healthz")
        if status >= 400:
            raise ServeError(status, _reason(body))
        return json.loads(body)
