"""``gsu serve``: every endpoint against exact answers, malformed and oversized requests,
micro-batching, hot swap under load, several worker processes, and the client.

The server runs in a thread of the test process (uvicorn on a free 127.0.0.1 port), so
tests can also look at its state (e.g. that a swapped-out index is freed)."""

from __future__ import annotations

import gc
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import uvicorn  # noqa: E402

from gsu.client import AsyncClient, Client, ServeError  # noqa: E402
from gsu.index import Filter, FilteredIndex, FlatIndex, load  # noqa: E402
from gsu.serve import ServeConfig, load_config  # noqa: E402
from gsu.serve.app import create_app  # noqa: E402
from gsu.serve.batcher import SearchJob, run_batch  # noqa: E402
from gsu.serve.protocol import decode_npy, encode_npy  # noqa: E402
from gsu.serve.registry import IndexRegistry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N, D = 3000, 16
CAPS = {"max_k": 50, "max_queries": 64, "max_filter_ids": 2500, "max_targets": 300, "max_body_bytes": 200_000}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn in a background thread on a free port."""

    def __init__(self, config: ServeConfig):
        self.port = config.server.port
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state(self):
        return self.app.state.gsu

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if not self.thread.is_alive() or time.time() - t0 > 120:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files on disk: two indexes, item times, a named filter, a behavior store, an item
    table and an ESU checkpoint; plus in-memory twins to compute the exact answers."""
    from gsu.ctr.checkpoint import save_checkpoint
    from gsu.ctr.model import ModelConfig, build_model
    from gsu.datasets import behavior_dataset
    from gsu.retrieval import BehaviorStore, ItemTable

    tmp = tmp_path_factory.mktemp("serve")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    flat = FlatIndex(D, "ip")
    flat.add(x)
    flat.save(tmp / "flat.gsu")
    ann = FilteredIndex(D, "ip", M=16, ef_construction=64, seed=0)
    ann.add(x)
    ann.save(tmp / "ann.gsu")
    times = rng.integers(0, 1000, N).astype(np.int64)
    np.save(tmp / "times.npy", times)
    even = np.arange(0, N, 2, dtype=np.int64)
    np.save(tmp / "even.npy", even)

    data = behavior_dataset(6, n_items=400, dim=8, n_categories=12, seq_len=(60, 200), seed=1)
    store = BehaviorStore.from_behavior_data(data)
    store.save(tmp / "store.gsu")
    items = ItemTable(embeddings=data.item_emb, category=data.item_category)
    items.save(tmp / "items.gsu")
    mcfg = ModelConfig(n_items=400, n_categories=12, n_behavior_types=int(store.column("behavior_type").max()) + 1
                       if store.column("behavior_type") is not None else 1, time_unit=60.0)
    model = build_model(mcfg, seed=0)
    save_checkpoint(tmp / "esu.pt", model)
    conf = {
        "server": {"port": free_port(), "max_wait_ms": 20.0, "watch_interval_s": 0.05, **CAPS},
        "indexes": {
            "flat": {"path": "flat.gsu", "times": "times.npy", "filters": {"even": "even.npy"}},
            "ann": {"path": "ann.gsu", "search": {"effort": 1.0}},
        },
        "stores": {"main": {"behaviors": "store.gsu", "items": "items.gsu", "model": "esu.pt", "default_method": "soft",
                            "methods": {"soft": {}, "hard": {"score": "ip"}, "exact": {}}}},
    }
    (tmp / "serve.json").write_text(json.dumps(conf))
    return {"tmp": tmp, "x": x, "flat": flat, "ann": ann, "times": times, "even": even, "store": store, "items": items,
            "model": model, "data": data, "config": load_config(tmp / "serve.json")}


@pytest.fixture(scope="module")
def server(world):
    with ThreadServer(world["config"]) as s:
        yield s


@pytest.fixture()
def client(server):
    with Client(server.url) as c:
        yield c


def raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.split("//")[1], int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def assert_exact(ans, truth) -> None:
    np.testing.assert_array_equal(ans.counts, truth.counts)
    np.testing.assert_array_equal(ans.ids, truth.ids)
    np.testing.assert_allclose(ans.scores, truth.scores, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- search
def test_healthz_lists_what_is_served(client, world):
    h = client.healthz()
    assert h["status"] == "ok"
    assert h["indexes"]["flat"]["items"] == N and h["indexes"]["flat"]["dim"] == D
    assert h["indexes"]["flat"]["filters"] == ["even"] and h["indexes"]["flat"]["times"] is True
    assert h["indexes"]["ann"]["kind"] == "filtered"
    assert h["indexes"]["flat"]["version"] == os.stat(world["tmp"] / "flat.gsu").st_mtime_ns
    assert h["stores"]["main"]["users"] == 6 and h["stores"]["main"]["esu"] is True
    assert sorted(h["stores"]["main"]["methods"]) == ["exact", "hard", "soft"]


@pytest.mark.parametrize("binary", [True, False])
def test_search_every_filter_kind_is_exact(server, world, binary):
    flat, times, even = world["flat"], world["times"], world["even"]
    rng = np.random.default_rng(1)
    q = rng.standard_normal((5, D)).astype(np.float32)
    allowed = rng.choice(N, 700, replace=False)
    win = np.flatnonzero((times >= 100) & (times < 350))
    rng_ids = np.r_[10:400, 2000:2100]
    cases = [
        ({}, None),
        ({"filter_ids": allowed}, Filter.from_ids(allowed)),
        ({"filter_ranges": [(10, 400), (2000, 2100)]}, Filter.from_ids(rng_ids)),
        ({"time_window": (100, 350)}, Filter.from_ids(win)),
        ({"filter_name": "even"}, Filter.from_ids(even)),
        ({"filter_ids": allowed, "filter_name": "even", "filter_ranges": [(0, 1500)]},
         Filter.from_ids(np.intersect1d(np.intersect1d(allowed, even), np.arange(1500)))),
        ({"filter_ids": np.array([N + 5, N + 7])}, Filter.from_ids(np.array([N + 5]))),  # unknown ids: never returned
    ]
    with Client(server.url, binary=binary) as c:
        for kw, f in cases:
            ans = c.search("flat", q, 7, **kw)
            assert_exact(ans, flat.search(q, 7, filter=f))
            assert ans.version == os.stat(world["tmp"] / "flat.gsu").st_mtime_ns and ans.generation == 1
        one = c.search("flat", q[0], 3)  # a single vector is a batch of one
        assert_exact(one, flat.search(q[:1], 3))
        big_k = c.search("flat", q[:2], 10, filter_ids=[4, 8, 15])  # k above the allowed count: padded
        assert big_k.counts.tolist() == [3, 3] and (big_k.ids[:, 3:] == -1).all() and np.isneginf(big_k.scores[:, 3:]).all()


def test_search_raw_float32_body(server, world):
    q = np.random.default_rng(2).standard_normal((3, D)).astype("<f4")
    st, hdr, body = raw(server.url, "POST", "/indexes/flat/search?k=4&ranges=0:1000&filter_name=even", q.tobytes(),
                        {"Content-Type": "application/octet-stream"})
    assert st == 200
    d = json.loads(body)
    truth = world["flat"].search(q, 4, filter=Filter.from_ids(np.arange(0, 1000, 2)))
    assert d["ids"] == truth.ids.tolist() and d["counts"] == truth.counts.tolist()
    np.testing.assert_allclose(np.array(d["scores"], np.float32), truth.scores, rtol=1e-5)
    assert int(hdr["x-gsu-version"]) == d["version"]


def test_search_settings_reach_the_index(client, world):
    q = np.random.default_rng(3).standard_normal((4, D)).astype(np.float32)
    allowed = np.random.default_rng(4).choice(N, 1500, replace=False)
    exact = world["flat"].search(q, 5, filter=allowed)
    assert_exact(client.search("ann", q, 5, filter_ids=allowed, params={"route": "exact"}), exact)
    for effort in (0.5, 2.0):
        ans = client.search("ann", q, 5, filter_ids=allowed, params={"effort": effort, "route": "ivf"})
        truth = world["ann"].search(q, 5, filter=Filter.from_ids(allowed), effort=effort, route="ivf")
        assert_exact(ans, truth)
    with pytest.raises(ServeError) as e:
        client.search("ann", q, 5, params={"nprobe": 3})
    assert e.value.status == 400 and "nprobe" in e.value.reason


def test_concurrent_requests_are_batched_and_exact(server, world):
    """16 threads with their own per-request filters: every answer exact, and the
    server ran some of them together (the batch histogram says so)."""
    flat = world["flat"]
    before = _metric(server, 'gsu_batch_requests_count{index="flat"}'), _metric(server, 'gsu_batch_requests_sum{index="flat"}')

    def worker(seed: int) -> int:
        rng = np.random.default_rng(100 + seed)
        with Client(server.url) as c:
            for _ in range(12):
                q = rng.standard_normal((int(rng.integers(1, 4)), D)).astype(np.float32)
                allowed = rng.choice(N, int(rng.integers(50, 2000)), replace=False)
                kw = {"filter_ids": allowed} if rng.random() < 0.8 else {}
                ans = c.search("flat", q, 6, **kw)
                assert_exact(ans, flat.search(q, 6, filter=allowed if kw else None))
        return 12

    with ThreadPoolExecutor(16) as ex:
        assert sum(ex.map(worker, range(16))) == 192
    n_batches = _metric(server, 'gsu_batch_requests_count{index="flat"}') - before[0]
    n_requests = _metric(server, 'gsu_batch_requests_sum{index="flat"}') - before[1]
    assert n_requests == 192
    assert n_batches < n_requests  # at least one batch held several requests


def test_run_batch_equals_separate_calls(world):
    """The batcher's grouping: request filters, a stored filter, no filter, different k
    and settings in one batch — each answer equals its own call (a request filter as a
    one-entry-per-row per-query filter, a stored filter as a shared one)."""
    import asyncio

    reg = IndexRegistry({"ann": world["config"].indexes["ann"]}, warm=False)
    reg.load_all()
    served = reg.get("ann")
    rng = np.random.default_rng(5)
    named = Filter.from_ids(world["even"])
    loop = asyncio.new_event_loop()
    jobs, calls = [], []
    for i in range(12):
        q = rng.standard_normal((int(rng.integers(1, 4)), D)).astype(np.float32)
        kind = i % 4
        flt = None if kind == 0 else named if kind == 1 else Filter.from_ids(rng.choice(N, int(rng.integers(10, 3000)), replace=False))
        k = 5 if i % 3 else 9
        params = {"effort": 1.0} if i % 5 else {"effort": 2.0, "route": "exact"}
        jobs.append(SearchJob(q, k, flt, params, loop.create_future(), shared=kind == 1))
        as_sent = flt if kind < 2 else Filter.per_query([flt] * q.shape[0])
        calls.append(lambda q=q, k=k, f=as_sent, params=params: served.index.search(q, k, filter=f, **params))
    out = run_batch(served, jobs)
    alone = [run_batch(served, [j])[0] for j in jobs]  # the same answers unbatched
    loop.close()
    for a, b in zip(out, alone):
        np.testing.assert_array_equal(a.ids, b.ids)
    for r, call in zip(out, calls):
        t = call()
        if isinstance(r, BaseException):
            raise r
        np.testing.assert_array_equal(r.ids, t.ids)
        np.testing.assert_array_equal(r.counts, t.counts)


# --------------------------------------------------------------------------- retrieve
@pytest.mark.parametrize("binary", [True, False])
def test_retrieve_every_method_is_exact(server, world, binary):
    from gsu.retrieval.registry import make_method

    store, items = world["store"], world["items"]
    rng = np.random.default_rng(6)
    with Client(server.url, binary=binary) as c:
        for method, params in (("soft", {}), ("hard", {"score": "ip"}), ("exact", {})):
            m = make_method(method, items, k=50, **params)
            for user in (0, 3):
                h = store.history(user)
                targets = rng.choice(400, 17, replace=False)
                cut = int(h.timestamps[len(h) // 2])
                per = np.sort(rng.choice(h.timestamps, 17))
                for time_ in (None, cut, per):
                    ans = c.retrieve(user, targets, time=time_, method=method, k=8)
                    t = m.retrieve(h, targets, k=8, target_time=time_)
                    np.testing.assert_array_equal(ans.positions, t.positions)
                    np.testing.assert_allclose(ans.scores, t.scores, rtol=1e-5)
                    np.testing.assert_array_equal(ans.counts, t.counts)
                    np.testing.assert_array_equal(ans.items, np.where(t.positions >= 0, h.items[np.maximum(t.positions, 0)], -1))
                    assert ans.esu is None
        dflt = c.retrieve(1, [3, 4, 5])  # default method (soft) and k (50)
        t = make_method("soft", items, k=50).retrieve(store.history(1), np.array([3, 4, 5]))
        np.testing.assert_array_equal(dflt.positions, t.positions)


def test_retrieve_esu_scores(client, world):
    """ESU click probabilities equal the model run on the retrieved behaviors, with the
    features laid out as the training pipeline lays them out."""
    import torch

    from gsu.ctr.layers import TemporalEncoding
    from gsu.ctr.model import BehaviorFeatures, TargetFeatures
    from gsu.retrieval.registry import make_method

    store, items, model = world["store"], world["items"], world["model"]
    h = store.history(2)
    targets = np.arange(20, 45)
    now = int(h.timestamps[-5])
    ans = client.retrieve(2, targets, time=now, method="soft", k=16, esu=True)
    r = make_method("soft", items, k=16).retrieve(h, targets, k=16, target_time=now)
    mask = r.positions >= 0
    p = np.where(mask, r.positions, 0)
    bt = h.behavior_type[p].astype(np.int64) if h.behavior_type is not None else np.zeros(p.shape, np.int64)
    offs = ((now - h.timestamps[p]) / 60.0).astype(np.float32)
    beh = BehaviorFeatures(torch.from_numpy(np.where(mask, h.items[p], 0)), torch.from_numpy(np.where(mask, h.category[p], 0)),
                           torch.from_numpy(np.where(mask, bt, 0)), TemporalEncoding.bucketize(torch.from_numpy(offs), 24))
    with torch.no_grad():
        want = torch.sigmoid(model(TargetFeatures(torch.from_numpy(targets), torch.from_numpy(items.category[targets])), beh,
                                   torch.from_numpy(mask))).numpy()
    np.testing.assert_allclose(ans.esu, want, rtol=1e-5, atol=1e-6)
    assert ans.esu.shape == (25,) and ((ans.esu > 0) & (ans.esu < 1)).all()


# --------------------------------------------------------------------------- bad input
def _npy_body(*arrays) -> bytes:
    return encode_npy(*arrays)


def bad_requests(world):
    q = np.zeros((2, D), np.float32)
    jh = {"Content-Type": "application/json"}
    nh = {"Content-Type": "application/x-npy"}
    big_filter = {"queries": q.tolist(), "filter": {"ids": list(range(2600))}}
    return [
        # (method, path, body, headers, status, words in the reason)
        ("POST", "/indexes/nope/search", json.dumps({"queries": q.tolist()}), jh, 404, "unknown index"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": np.zeros((2, 8)).tolist()}), jh, 400, "shape"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": [[1, 2], [3]]}), jh, 400, "queries"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": [["a"] * D]}), jh, 400, "queries"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": []}), jh, 400, "shape"),
        ("POST", "/indexes/flat/search", '{"queries": [[NaN' + ", 0" * (D - 1) + "]]}", jh, 400, "NaN"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "k": 0}), jh, 400, "k"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "k": "ten"}), jh, 400, "k"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "k": 51}), jh, 400, "cap"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": np.zeros((65, D)).tolist()}), jh, 413, "cap"),
        ("POST", "/indexes/flat/search", json.dumps(big_filter), jh, 413, "cap"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"ids": ["a", "b"]}}), jh, 400, "filter ids"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"ids": [1.5]}}), jh, 400, "filter ids"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"ranges": [[5, 1]]}}), jh, 400, "hi < lo"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"ranges": 3}}), jh, 400, "ranges"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"color": 1}}), jh, 400, "unknown key"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"name": "odd"}}), jh, 404, "odd"),
        ("POST", "/indexes/ann/search", json.dumps({"queries": q.tolist(), "filter": {"time": [0, 5]}}), jh, 400, "no item times"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "filter": {"time": [0, "x"]}}), jh, 400, "number"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "params": {"effort": 2}}), jh, 400, "unknown search setting"),
        ("POST", "/indexes/flat/search", json.dumps({"queries": q.tolist(), "extra": 1}), jh, 400, "unknown key"),
        ("POST", "/indexes/flat/search", "{not json", jh, 400, "JSON"),
        ("POST", "/indexes/flat/search", "[1, 2]", jh, 400, "object"),
        ("POST", "/indexes/flat/search", b"x" * 300_000, {"Content-Type": "application/octet-stream"}, 413, "cap"),
        ("POST", "/indexes/flat/search", "queries", {"Content-Type": "text/plain"}, 415, "Content-Type"),
        ("POST", "/indexes/flat/search", np.zeros((2, D), np.float64).tobytes()[:-4], {"Content-Type": "application/octet-stream"}, 400, "float32 rows"),
        ("POST", "/indexes/flat/search", _npy_body(np.zeros((2, D), np.float64)), nh, 400, "float32"),
        ("POST", "/indexes/flat/search", _npy_body(np.zeros((2, D), np.int32)), nh, 400, "float32"),
        ("POST", "/indexes/flat/search", _npy_body(np.zeros((2, 3, D), np.float32)), nh, 400, "shape"),
        ("POST", "/indexes/flat/search", _npy_body(q, np.array([1.5, 2.0])), nh, 400, "filter ids"),
        ("POST", "/indexes/flat/search", _npy_body(q, np.arange(2600)), nh, 413, "cap"),
        ("POST", "/indexes/flat/search", _npy_body(q)[:-10], nh, 400, "past the end"),
        ("POST", "/indexes/flat/search", b"\x93NUMPY garbage", nh, 400, "npy"),
        ("POST", "/indexes/flat/search?k=3&bogus=1", _npy_body(q), nh, 400, "bogus"),
        ("POST", "/indexes/flat/search?time_from=3", _npy_body(q), nh, 400, "time_to"),
        ("POST", "/indexes/flat/search?ranges=1-5", _npy_body(q), nh, 400, "ranges"),
        ("GET", "/indexes/flat/search", None, {}, 405, ""),
        ("POST", "/retrieve", json.dumps({"user": 999, "targets": [1, 2]}), jh, 404, "unknown user"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 2], "store": "x"}), jh, 404, "unknown store"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 2], "method": "magic"}), jh, 400, "not served"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 99999]}), jh, 400, "unknown item"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": []}), jh, 400, "empty"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": "abc"}), jh, 400, "targets"),
        ("POST", "/retrieve", json.dumps({"user": "one", "targets": [1]}), jh, 400, "user"),
        ("POST", "/retrieve", json.dumps({"targets": [1]}), jh, 400, "missing"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": list(range(301))}), jh, 413, "cap"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 2], "k": 51}), jh, 400, "cap"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 2], "time": [1]}), jh, 400, "one integer time per target"),
        ("POST", "/retrieve", json.dumps({"user": 1, "targets": [1, 2], "esu": "yes"}), jh, 400, "esu"),
        ("POST", "/retrieve?user=1", _npy_body(np.array([1.0, 2.0])), nh, 400, "integer"),
        ("POST", "/retrieve", _npy_body(np.array([1, 2])), nh, 400, "user"),
        ("POST", "/retrieve", b"user=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type"),
        ("GET", "/nowhere", None, {}, 404, ""),
    ]


def test_malformed_and_oversized_requests_get_their_4xx(server, world):
    for method, path, body, headers, status, words in bad_requests(world):
        b = body.encode() if isinstance(body, str) else body
        st, hdr, out = raw(server.url, method, path, b, headers)
        assert st == status, (path, body[:80] if body else body, st, out[:200])
        if path.startswith(("/indexes", "/retrieve")) and st != 405:
            reason = json.loads(out)["error"]
            assert "\n" not in reason and words.lower() in reason.lower(), (path, reason)
    # the server is unharmed and counted the errors by reason; none was a 500
    with Client(server.url) as c:
        assert c.healthz()["status"] == "ok"
        text = c.metrics()
    assert 'reason="too_large"' in text and 'reason="unknown_user"' in text and 'reason="unknown_index"' in text
    assert 'reason="internal"' not in text and 'status="500"' not in text


def test_body_cap_holds_without_content_length(server):
    """A chunked body (no Content-Length) is cut off at the cap too."""
    host, port = "127.0.0.1", server.port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(b"POST /indexes/flat/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"\x00" * 65536
        try:
            for _ in range(5):
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = b""
        while b"\r\n\r\n" not in resp:
            part = s.recv(4096)
            if not part:
                break
            resp += part
    assert resp.startswith(b"HTTP/1.1 413"), resp[:100]


def test_client_errors_and_async_client(server, world):
    import asyncio

    with Client(server.url) as c:
        with pytest.raises(ServeError) as e:
            c.search("flat", np.zeros((1, D)), 100)
        assert e.value.status == 400 and "cap of 50" in e.value.reason
        with pytest.raises(ServeError) as e:
            c.retrieve(12345, [1])
        assert e.value.status == 404
    q = np.random.default_rng(9).standard_normal((2, D)).astype(np.float32)

    async def go():
        async with AsyncClient(server.url) as ac:
            outs = [await ac.search("flat", q, 4, filter_ids=np.arange(0, N, 3)) for _ in range(3)]
            h = await ac.healthz()
            r = await ac.retrieve(0, [1, 2, 3], k=5, method="hard")
        return outs, h, r

    outs, h, r = asyncio.run(go())
    truth = world["flat"].search(q, 4, filter=np.arange(0, N, 3))
    for o in outs:
        assert_exact(o, truth)
    assert h["status"] == "ok" and r.positions.shape == (3, 5)
    with pytest.raises(ValueError):
        Client("ftp://x")


def test_npy_codec_roundtrip_and_rejects_pickles():
    a, b = np.arange(6, dtype=np.int64).reshape(2, 3), np.asfortranarray(np.ones((3, 2), np.float32))
    x, y = decode_npy(encode_npy(a, b))
    np.testing.assert_array_equal(x, a)
    np.testing.assert_array_equal(y, b)
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="dtype"):
        decode_npy(buf.getvalue())


# --------------------------------------------------------------------------- hot swap
def _metric(server, series: str) -> float:
    with Client(server.url) as c:
        for line in c.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0.0


def test_hot_swap_under_load(world, tmp_path):
    """Replace the index file three times (two good versions, one corrupt file) while
    8 clients search: every answer is 200 and exactly one version's answer; the corrupt
    file is refused (old index keeps serving); the swapped-out index is freed."""
    rng = np.random.default_rng(11)
    path = tmp_path / "live.gsu"
    contents = {}

    def write(seed: int, offset: int) -> FlatIndex:
        x = np.random.default_rng(seed).standard_normal((N, D)).astype(np.float32)
        idx = FlatIndex(D, "ip")
        idx.add(x, np.arange(offset, offset + N, dtype=np.int64))
        time.sleep(0.02)  # distinct modification times
        staged = tmp_path / f"staged-{seed}.gsu"
        idx.save(staged)
        contents[os.stat(staged).st_mtime_ns] = idx  # known before the server can see it
        os.replace(staged, path)  # what `gsu build` does: a rename over the served file
        return idx

    write(1, 0)
    conf = ServeConfig.from_dict({"server": {"port": free_port(), "watch_interval_s": 0.02, "max_wait_ms": 2.0},
                                  "indexes": {"live": {"path": str(path)}}})
    stop = threading.Event()
    seen: list[int] = []
    errors: list[str] = []

    with ThreadServer(conf) as srv:
        first = weakref.ref(srv.state.registry.get("live").index)

        def load_loop(seed: int) -> int:
            r = np.random.default_rng(seed)
            n = 0
            with Client(srv.url) as c:
                while not stop.is_set() or n < 5:
                    q = r.standard_normal((int(r.integers(1, 3)), D)).astype(np.float32)
                    allowed = r.integers(0, 2 * N + 1000, 800)
                    try:
                        ans = c.search("live", q, 5, filter_ids=allowed)
                    except Exception as e:  # noqa: BLE001 - recorded and failed below
                        errors.append(repr(e))
                        continue
                    idx = contents.get(ans.version)
                    if idx is None:
                        errors.append(f"unknown version {ans.version}")
                        continue
                    truth = idx.search(q, 5, filter=allowed)
                    if not (np.array_equal(ans.ids, truth.ids) and np.allclose(ans.scores, truth.scores, rtol=1e-5, atol=1e-5)):
                        errors.append(f"answer of version {ans.version} differs from that version's exact answer")
                    seen.append(ans.version)
                    n += 1
            return n

        def wait_version(v: int) -> None:
            t0 = time.time()
            while srv.state.registry.get("live").version != v:
                assert time.time() - t0 < 60, "the new file was not picked up"
                time.sleep(0.01)
            time.sleep(0.3)  # let requests run on it

        with ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(load_loop, s) for s in range(8)]
            time.sleep(0.3)
            write(2, 10 * N)
            v2 = os.stat(path).st_mtime_ns
            wait_version(v2)
            # a corrupt file (renamed in, as a build would) is refused; version 2 keeps serving
            bad = tmp_path / ".live.tmp"
            bad.write_bytes(b"GSUFILE\x00" + b"\x01" * 100)
            os.replace(bad, path)
            t0 = time.time()
            while _metric(srv, 'gsu_index_load_errors_total{index="live"}') < 1:
                assert time.time() - t0 < 30
                time.sleep(0.02)
            assert srv.state.registry.get("live").version == v2
            time.sleep(0.2)
            write(3, 20 * N)
            v3 = os.stat(path).st_mtime_ns
            wait_version(v3)
            stop.set()
            counts = [f.result() for f in futs]
        assert not errors, errors[:5]
        assert all(c >= 5 for c in counts)
        assert set(seen) == set(contents) and len(contents) == 3
        assert _metric(srv, 'gsu_index_swaps_total{index="live"}') == 2
        assert _metric(srv, 'gsu_index_version{index="live"}') == pytest.approx(float(v3))
        gc.collect()
        assert first() is None, "the swapped-out index is still referenced"


def test_versions_never_go_back_for_one_client(world, tmp_path):
    """A client's consecutive answers carry non-decreasing generations across a swap."""
    path = tmp_path / "mono.gsu"
    a = FlatIndex(D)
    a.add(np.random.default_rng(0).standard_normal((500, D)).astype(np.float32))
    a.save(path)
    conf = ServeConfig.from_dict({"server": {"port": free_port(), "watch_interval_s": 0.02},
                                  "indexes": {"mono": {"path": str(path)}}})
    with ThreadServer(conf) as srv, Client(srv.url) as c:
        gens = []
        q = np.ones((1, D), np.float32)
        for i in range(60):
            gens.append(c.search("mono", q, 3).generation)
            if i == 20:
                time.sleep(0.02)
                a.save(path)
            time.sleep(0.01)
        assert gens == sorted(gens) and gens[0] == 1 and gens[-1] == 2


# --------------------------------------------------------------------------- config and CLI
def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to serve"):
        ServeConfig.from_dict({})
    with pytest.raises(ValueError, match="unknown key"):
        ServeConfig.from_dict({"server": {"portt": 1}, "indexes": {"a": {"path": "a.gsu"}}})
    with pytest.raises(ValueError, match="max_k"):
        ServeConfig.from_dict({"server": {"max_k": 0}, "indexes": {"a": {"path": "a.gsu"}}})
    p = tmp_path / "c.toml"
    p.write_text('[indexes.items]\npath = "items.gsu"\n[indexes.items.filters]\nrecent = "r.npy"\n')
    c = load_config(p)
    assert c.indexes["items"].path == str(tmp_path / "items.gsu") and c.server.host == "127.0.0.1"
    assert c.indexes["items"].filters == {"recent": str(tmp_path / "r.npy")}
    assert ServeConfig.from_json(c.to_json()) == c
    p.write_text("[indexes.items\n")
    with pytest.raises(ValueError, match="TOML"):
        load_config(p)


def test_cli_serve_bad_files_fail_fast(world, tmp_path):
    """A missing or broken file is a one-line error naming it (exit code 2), before any
    server starts."""
    from gsu.cli import main

    bad = tmp_path / "bad.gsu"
    bad.write_bytes(b"not a gsu file at all")
    for spec, words in ((f"a={tmp_path / 'missing.gsu'}", "missing.gsu"), (f"a={bad}", "bad.gsu")):
        r = subprocess.run([sys.executable, "-m", "gsu.cli", "serve", "--index", spec, "--port", str(free_port())],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(SystemExit):
        main(["serve"])


def test_cli_serve_two_workers(world, tmp_path):
    """`gsu serve --index` with two worker processes: both answer exactly from the same
    memory-mapped file, /metrics adds up the workers, SIGINT stops it."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "gsu.cli", "serve", "--index", f"flat={world['tmp'] / 'flat.gsu'}", "--port", str(port),
           "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        t0 = time.time()
        while True:
            try:
                with Client(url, timeout=2) as c:
                    c.healthz()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                assert time.time() - t0 < 120, "server did not come up"
                time.sleep(0.2)
        q = np.random.default_rng(12).standard_normal((3, D)).astype(np.float32)
        truth = world["flat"].search(q, 5, filter=np.arange(100, 2000))
        for _ in range(30):
            with Client(url) as c:  # new connections: the kernel spreads them over the workers
                assert_exact(c.search("flat", q, 5, filter_ranges=[(100, 2000)]), truth)
        t0 = time.time()
        while True:  # both workers up: one version gauge per worker pid
            with Client(url) as c:
                text = c.metrics()
            pids = {line.split('pid="')[1].split('"')[0] for line in text.splitlines() if line.startswith("gsu_index_version{")}
            if len(pids) == 2 or time.time() - t0 > 120:
                break
            time.sleep(0.2)
        assert len(pids) == 2, text
        total = sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith('gsu_requests_total{endpoint="search"'))
        assert total >= 30
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stdout.read().decode()[-2000:]
