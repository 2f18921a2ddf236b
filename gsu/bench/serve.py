"""Suite ``serve``: ``gsu serve`` under load against a vector-database server, same data, same filters.

Data: a 1,000,000 × 64 clustered catalog (:func:`gsu.datasets.clustered_catalog`; 50,000
with ``--quick``) and R requests, each one query drawn from the catalog's mixture plus a
*behavior filter*: between 1,000 and 10,000 allowed item ids (uniform count), 70 % of
them from the three clusters nearest the query (a user's interests near the candidate),
the rest uniform. Every request's exact top-10 comes from :class:`~gsu.index.FlatIndex`.

Systems, all reached over HTTP/gRPC on 127.0.0.1 by a bounded load generator in this
process (one connection per concurrent client; at concurrency c, c requests are always
in flight; each level stops after ``max_requests`` requests or ``max_seconds``):

- ``gsu-flat``: ``gsu serve`` (2 worker processes, 1 thread each, micro-batching) over the
  exact ``FlatIndex`` — recall 1 by construction; the client sends the query and the
  filter ids as ``.npy``, the server builds a fresh ``Filter`` per request;
- ``gsu-filtered``: the same server's ``FilteredIndex`` (planner: exact scan, filter-aware
  IVF or HNSW per query, effort 1);
- ``milvus-lite``: Milvus Lite (the ``milvus-lite`` PyPI server, FLAT index = exact,
  inner product) through pymilvus, the filter as ``id in [...]``, threads sharing one
  client, one repeat per level (it is 2-3 orders of magnitude slower, so a level of
  ``max_seconds`` holds few requests); run by :mod:`gsu.bench._milvus_peer` under the interpreter given by
  ``GSU_SERVE_PEER_PYTHON`` (default ``/work/venvs/serve-peer/bin/python``) — skipped with
  a message when it is absent;
- ``retrieve``: ``POST /retrieve`` for one user (history 1,000–10,000 behaviors) and
  1,000 candidate targets, methods ``simhash`` (ETA) and ``soft`` (SIM soft search),
  k = 50; a sample of answers is checked against the in-process method.

The load generator and the servers share the machine's cores (2 here): the numbers are
what a client on the same host sees, load generation included. Every answer is checked
against the exact answer (recall@10). Writes ``serve.jsonl`` (one record per run and one
median summary per system × endpoint × concurrency) and ``serve.png`` (p99 and
throughput against concurrency).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gsu.bench import harness

log = logging.getLogger(__name__)

__all__ = ["run"]

CONCURRENCY = (1, 8, 64)
PEER_PYTHON = "/work/venvs/serve-peer/bin/python"


# -- data -----------------------------------------------------------------------------
def _cache_dir(out_dir: Path) -> Path:
    c = Path(os.environ.get("GSU_SERVE_CACHE") or (out_dir / "cache"))
    c.mkdir(parents=True, exist_ok=True)
    return c.resolve()  # the server's config names these files; it resolves relative paths against its own folder


def _catalog(cache: Path, n: int, dim: int, seed: int) -> tuple[Any, Path]:
    from gsu.datasets import clustered_catalog

    cat = clustered_catalog(n, dim, seed=seed)
    vpath = cache / f"clustered_{n}x{dim}_s{seed}.npy"
    if not vpath.exists() or np.load(vpath, mmap_mode="r").shape != cat.vectors.shape:
        np.save(vpath, cat.vectors)
    return cat, vpath


def _index_file(path: Path, x: np.ndarray, build: Any) -> Path:
    """``path`` if it holds an index over exactly ``x`` (checked on a sample of rows), else built."""
    from gsu.index import load

    if path.exists():
        try:
            idx = load(path, mmap=True, verify=False)
            vec = idx.vectors if hasattr(idx, "vectors") else idx.hnsw.vectors
            rows = np.random.default_rng(0).choice(x.shape[0], min(2000, x.shape[0]), replace=False)
            if idx.ntotal == x.shape[0] and np.array_equal(np.asarray(vec[rows]), x[rows]):
                return path
            log.warning("%s holds other data: rebuilding", path)
        except Exception as e:  # noqa: BLE001 - a stale or broken cache is rebuilt
            log.warning("rebuilding %s (%s)", path, e)
    t0 = time.perf_counter()
    idx = build()
    idx.add(x)
    idx.save(path)
    print(f"[serve] built {path.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return path


def _requests(cat: Any, R: int, seed: int, lo: int = 1000, hi: int = 10000) -> tuple[np.ndarray, list[np.ndarray]]:
    """R queries and their behavior filters (see the module docstring)."""
    from gsu.datasets import catalog_queries

    rng = np.random.default_rng(seed + 1)
    q = catalog_queries(cat, R, seed=seed + 2)
    n = cat.vectors.shape[0]
    hi = min(hi, n // 2)
    lo = min(lo, hi)
    order = np.argsort(cat.labels, kind="stable")
    starts = np.searchsorted(cat.labels[order], np.arange(cat.centers.shape[0] + 1))
    sets = []
    for i in range(R):
        m = int(rng.integers(lo, hi + 1))
        near = np.argsort(-(cat.centers @ q[i]))[:3]
        pool = np.concatenate([order[starts[c] : starts[c + 1]] for c in near])
        a = rng.choice(pool, min(int(0.7 * m), pool.shape[0]), replace=False)
        b = rng.choice(n, m - a.shape[0], replace=False)
        sets.append(np.unique(np.concatenate([a, b])).astype(np.int64))
    return q, sets


def _truth(x: np.ndarray, q: np.ndarray, sets: list[np.ndarray], k: int) -> np.ndarray:
    from gsu.index import Filter, FlatIndex

    flat = FlatIndex(x.shape[1], "ip")
    flat.add(x)
    out = []
    for s in range(0, q.shape[0], 256):
        out.append(flat.search(q[s : s + 256], k, filter=Filter.per_query(sets[s : s + 256])).ids)
    return np.concatenate(out)


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean over requests of |got ∩ truth| / |truth| (truth rows -1 padded)."""
    vals = []
    for g, t in zip(got, truth):
        t = t[t >= 0]
        vals.append(len(np.intersect1d(g[g >= 0], t)) / max(1, t.shape[0]))
    return float(np.mean(vals)) if vals else float("nan")


def _store_files(cache: Path, n_users: int, n_items: int, dim: int, seed: int) -> tuple[Path, Path]:
    from gsu.datasets import behavior_dataset
    from gsu.retrieval import BehaviorStore, ItemTable

    sp = cache / f"store_u{n_users}_i{n_items}_d{dim}_s{seed}.gsu"
    ip = cache / f"items_u{n_users}_i{n_items}_d{dim}_s{seed}.gsu"
    if not (sp.exists() and ip.exists()):
        data = behavior_dataset(n_users, n_items=n_items, dim=dim, seq_len=(1000, 10000), seed=seed)
        BehaviorStore.from_behavior_data(data).save(sp)
        ItemTable(embeddings=data.item_emb, category=data.item_category).save(ip)
    return sp, ip


# -- the server -----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``gsu serve CONFIG`` as a child process."""

    def __init__(self, config: dict[str, Any], workdir: Path):
        self.port = config["server"]["port"]
        self.path = workdir / "serve.json"
        self.path.write_text(json.dumps(config))
        self.workers = config["server"]["workers"]
        self.log = open(workdir / "serve.log", "w")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "gsu.cli", "serve", str(self.path)], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 600) -> None:
        from gsu.client import Client

        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = Path(self.log.name).read_text(errors="replace")[-2000:].strip()
                raise RuntimeError(f"gsu serve exited with {self.proc.returncode}: {tail or '(no output)'}")
            try:
                with Client(self.url, timeout=5) as c:
                    c.healthz()
                    text = c.metrics()
                if self.workers == 1:
                    return
                # every worker has loaded its indexes: one version gauge per worker pid
                pids = {ln.split('pid="')[1].split('"')[0] for ln in text.splitlines() if ln.startswith("gsu_index_version{") and 'pid="' in ln}
                if len(pids) >= self.workers:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("gsu serve did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the load generator ---------------------------------------------------------------
async def _load(url: str, concurrency: int, n_req: int, start: int, max_requests: int, max_seconds: float, call: Any) -> dict[str, Any]:
    """``concurrency`` clients each keep one request in flight: request numbers
    ``start, start+1, ...`` (mod ``n_req``) until ``max_requests`` or ``max_seconds``."""
    from gsu.client import AsyncClient

    clients = [AsyncClient(url, timeout=120) for _ in range(concurrency)]
    nxt = 0
    lat: list[float] = []
    req: list[int] = []
    answers: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds

    async def worker(c: Any) -> None:
        nonlocal nxt
        while nxt < max_requests and loop.time() < deadline:
            r = (start + nxt) % n_req
            nxt += 1
            t0 = time.perf_counter()
            ans = await call(c, r)
            lat.append(time.perf_counter() - t0)
            req.append(r)
            answers.append(ans)

    pids = [(await c.healthz())["worker"] for c in clients]  # opens each connection: which worker took it
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    split = sorted(np.unique(pids, return_counts=True)[1].tolist(), reverse=True)
    return {"latency": np.asarray(lat), "request": np.asarray(req, np.int64), "answers": answers, "wall": time.perf_counter() - t0,
            "connections_per_worker": split}


def _run_async(coro: Any) -> Any:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)


def _stats(lat: np.ndarray, wall: float) -> dict[str, float]:
    ms = lat * 1e3
    return {"n_requests": int(lat.shape[0]), "wall_s": wall, "throughput": lat.shape[0] / wall if wall > 0 else 0.0,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def _summaries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["system"], r["endpoint"], r.get("method"), r["concurrency"]), []).append(r)
    out = []
    for (system, endpoint, method, c), rs in groups.items():
        s = {"record": "summary", "system": system, "endpoint": endpoint, "method": method, "concurrency": c, "repeats": len(rs)}
        for key in ("throughput", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "recall", "n_requests"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            s[key] = float(np.median(vals)) if vals else None
        out.append(s)
    return out


# -- entry point ----------------------------------------------------------------------
def run(
    *,
    out_dir: Path,
    quick: bool = False,
    threads: int = 1,
    n: int | None = None,
    dim: int = 64,
    k: int = 10,
    seed: int = 0,
    workers: int = 2,
    repeats: int | None = None,
    max_seconds: float | None = None,
    parts: tuple[str, ...] = ("search", "retrieve", "peer"),
    indexes: tuple[str, ...] = ("flat", "filtered"),
    max_wait_ms: float = 0.0,
) -> list[dict[str, Any]]:
    """Run the suite; write ``serve.jsonl`` and ``serve.png`` into ``out_dir``; return the records.

    ``parts``: which of ``"search"``, ``"retrieve"``, ``"peer"`` to run (default all)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _cache_dir(out_dir)
    n = n or (50_000 if quick else 1_000_000)
    R = 400 if quick else 3000
    repeats = repeats or (1 if quick else 3)
    max_seconds = max_seconds or (3.0 if quick else 8.0)
    max_requests = 400 if quick else 3000
    from gsu.index import FilteredIndex, FlatIndex

    t0 = time.perf_counter()
    cat, vpath = _catalog(cache, n, dim, seed)
    x = cat.vectors
    flat_path = _index_file(cache / f"flat_clustered_{n}x{dim}_s{seed}.gsu", x, lambda: FlatIndex(dim, "ip"))
    M, efc = (16, 100) if quick else (32, 200)
    filt_path = _index_file(cache / f"filtered_clustered_{n}x{dim}_M{M}_efc{efc}_s{seed}.gsu", x,
                            lambda: FilteredIndex(dim, "ip", M=M, ef_construction=efc, seed=seed))
    q, sets = _requests(cat, R, seed)
    truth = _truth(x, q, sets, k)
    n_users, n_items = (20, 20_000) if quick else (100, 100_000)
    store_path, items_path = _store_files(cache, n_users, n_items, dim, seed)
    sizes = np.array([s.shape[0] for s in sets])
    # the data and the indexes are built with every core; the load generator and the
    # in-process checks run pinned
    pinned = harness.pin_threads(threads)
    machine = harness.machine_info()
    print(f"[serve] data ready in {time.perf_counter() - t0:.0f}s: {n:,} x {dim}, {R} requests, filter sizes "
          f"{sizes.min()}-{sizes.max()} (median {int(np.median(sizes))})", flush=True)
    base = {"suite": "serve", "n": n, "dim": dim, "k": k, "filter_ids": [int(sizes.min()), int(sizes.max())], "threads": threads,
            "server_workers": workers, "machine": machine, "pinned": pinned}

    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gsu-bench-serve-") as tmp:
        config = {
            "server": {"port": _free_port(), "workers": workers, "threads": threads, "max_filter_ids": 20_000, "max_targets": 2000,
                       "max_k": 100, "watch_interval_s": 5.0, "max_wait_ms": max_wait_ms},
            "indexes": {"flat": {"path": str(flat_path)}, "filtered": {"path": str(filt_path)}},
            "stores": {"main": {"behaviors": str(store_path), "items": str(items_path), "default_k": 50,
                                "methods": {"simhash": {"n_bits": 128}, "soft": {}}}},
        }
        server = _Server(config, Path(tmp))
        try:
            server.wait_ready()
            if "search" in parts:
                records += _bench_search(server.url, q, sets, truth, k, repeats=repeats, max_requests=max_requests,
                                         max_seconds=max_seconds, base=base, indexes=indexes)
            if "retrieve" in parts:
                records += _bench_retrieve(server.url, store_path, items_path, repeats=repeats, max_requests=max_requests // 3,
                                           max_seconds=max_seconds, base=base, seed=seed)
        finally:
            server.stop()
            log_text = (Path(tmp) / "serve.log").read_text()[-3000:]
        if "Traceback" in log_text:
            print(f"[serve] server log tail:\n{log_text}", flush=True)
        if "peer" in parts:
            records += _bench_peer(cache, vpath, q, sets, truth, k, n, dim, seed, repeats=repeats, max_requests=max_requests,
                                   max_seconds=max_seconds, base=base, tmp=Path(tmp))

    summaries = _summaries([r for r in records if r.get("record") == "run"])
    for s in summaries:
        s.update({key: base[key] for key in ("suite", "n", "dim", "k", "filter_ids", "threads", "server_workers")})
    records += summaries
    suffix = "" if set(parts) == {"search", "retrieve", "peer"} else "_" + "_".join(parts) + f"_w{workers}"
    harness.write_jsonl(out_dir / f"serve{suffix}.jsonl", records)
    _plot(summaries, out_dir / f"serve{suffix}.png")
    _print_table(summaries)
    return records


def _bench_search(url: str, q: np.ndarray, sets: list[np.ndarray], truth: np.ndarray, k: int, *, repeats: int, max_requests: int,
                  max_seconds: float, base: dict[str, Any], indexes: tuple[str, ...] = ("flat", "filtered")) -> list[dict[str, Any]]:
    R = q.shape[0]
    out = []
    for name in indexes:
        async def call(c: Any, r: int, name: str = name) -> Any:
            return await c.search(name, q[r], k, filter_ids=sets[r])

        _run_async(_load(url, 8, R, 0, 200, 60, call))  # warm-up (not recorded)
        start = 200
        for conc in CONCURRENCY:
            for rep in range(repeats):
                res = _run_async(_load(url, conc, R, start, max_requests, max_seconds, call))
                start += len(res["request"])
                got = np.concatenate([a.ids for a in res["answers"]])
                rec = {**base, "record": "run", "system": f"gsu-{name}", "endpoint": "search", "method": None, "concurrency": conc,
                       "repeat": rep, "recall": _recall(got, truth[res["request"]]),
                       "versions": sorted({a.version for a in res["answers"]}), "connections_per_worker": res["connections_per_worker"],
                       **_stats(res["latency"], res["wall"])}
                out.append(rec)
                print(f"[serve] gsu-{name:8s} search   c={conc:<3d} rep {rep}: {rec['throughput']:8.0f} req/s  p50 {rec['p50_ms']:.2f} "
                      f"p99 {rec['p99_ms']:.2f} ms  recall {rec['recall']:.4f}  ({rec['n_requests']} requests, connections per worker "
                      f"{rec['connections_per_worker']})", flush=True)
    return out


def _bench_retrieve(url: str, store_path: Path, items_path: Path, *, repeats: int, max_requests: int, max_seconds: float,
                    base: dict[str, Any], seed: int, T: int = 1000, k_ret: int = 50) -> list[dict[str, Any]]:
    from gsu.retrieval import BehaviorStore, ItemTable
    from gsu.retrieval.registry import make_method

    store = BehaviorStore.load(store_path, mmap=True)
    items = ItemTable.load(items_path, mmap=True)
    rng = np.random.default_rng(seed + 3)
    n_req = 300
    users = rng.choice(store.user_ids, n_req)
    targets = [np.sort(rng.choice(items.n_items, T, replace=False)).astype(np.int64) for _ in range(n_req)]
    out = []
    for method, params in (("simhash", {"n_bits": 128}), ("soft", {})):
        async def call(c: Any, r: int, method: str = method) -> Any:
            return await c.retrieve(int(users[r]), targets[r], method=method, k=k_ret)

        _run_async(_load(url, 8, n_req, 0, 40, 60, call))  # warm-up
        ref = make_method(method, items, k=k_ret, **params)
        start = 40
        for conc in CONCURRENCY:
            for rep in range(repeats):
                res = _run_async(_load(url, conc, n_req, start, max_requests, max_seconds, call))
                start += len(res["request"])
                same = []
                for r, a in list(zip(res["request"], res["answers"]))[:5]:  # a sample checked against the in-process method
                    t = ref.retrieve(store.history(int(users[r])), targets[r], k=k_ret)
                    same.append(bool(np.array_equal(t.positions, a.positions)))
                rec = {**base, "record": "run", "system": "gsu", "endpoint": "retrieve", "method": method, "concurrency": conc,
                       "repeat": rep, "targets": T, "k_retrieve": k_ret, "matches_in_process": float(np.mean(same)),
                       **_stats(res["latency"], res["wall"])}
                out.append(rec)
                print(f"[serve] gsu retrieve {method:8s} c={conc:<3d} rep {rep}: {rec['throughput']:8.1f} req/s  p50 "
                      f"{rec['p50_ms']:.2f} p99 {rec['p99_ms']:.2f} ms  matches in-process {rec['matches_in_process']:.2f}", flush=True)
    return out


def _bench_peer(cache: Path, vpath: Path, q: np.ndarray, sets: list[np.ndarray], truth: np.ndarray, k: int, n: int, dim: int, seed: int,
                *, repeats: int, max_requests: int, max_seconds: float, base: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    py = os.environ.get("GSU_SERVE_PEER_PYTHON", PEER_PYTHON)
    if not Path(py).exists():
        print(f"[serve] skipping the Milvus Lite peer: no interpreter at {py} (set GSU_SERVE_PEER_PYTHON to one with "
              "pymilvus[milvus-lite])", flush=True)
        return []
    tmp.mkdir(parents=True, exist_ok=True)
    req_path = tmp / "requests.npz"
    indptr = np.r_[0, np.cumsum([s.shape[0] for s in sets])].astype(np.int64)
    np.savez(req_path, queries=q, indptr=indptr, ids=np.concatenate(sets))
    out_path = tmp / "peer.npz"
    cmd = [py, str(Path(__file__).with_name("_milvus_peer.py")), "--db", str(cache / f"milvus_clustered_{n}x{dim}_s{seed}.db"),
           "--vectors", str(vpath), "--requests", str(req_path), "--k", str(k), "--concurrency", ",".join(map(str, CONCURRENCY)),
           "--repeats", "1", "--max-requests", str(max_requests), "--max-seconds", str(max_seconds), "--out", str(out_path)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        print(f"[serve] Milvus Lite peer failed ({p.returncode}):\n{p.stderr[-3000:]}", flush=True)
        return []
    o = np.load(out_path)
    meta = json.loads(str(o["meta"]))
    out = []
    for conc in CONCURRENCY:
        for rep in range(1):
            lat, req, ids = o[f"c{conc}_r{rep}_latency"], o[f"c{conc}_r{rep}_request"], o[f"c{conc}_r{rep}_ids"]
            rec = {**base, "record": "run", "system": "milvus-lite", "endpoint": "search", "method": None, "concurrency": conc,
                   "repeat": rep, "recall": _recall(ids, truth[req]), "peer": meta, **_stats(lat, float(o[f"c{conc}_r{rep}_wall"]))}
            out.append(rec)
            print(f"[serve] milvus-lite     search   c={conc:<3d} rep {rep}: {rec['throughput']:8.1f} req/s  p50 {rec['p50_ms']:.2f} "
                  f"p99 {rec['p99_ms']:.2f} ms  recall {rec['recall']:.4f}  ({rec['n_requests']} requests)", flush=True)
    print(f"[serve] peer run took {time.perf_counter() - t0:.0f}s (ingest {meta.get('ingest_s', 0):.0f}s)", flush=True)
    return out


def _plot(summaries: list[dict[str, Any]], path: Path) -> None:
    pts = [dict(s, series=f"{s['system']} {s['endpoint']}" + (f" {s['method']}" if s["method"] else "")) for s in summaries]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, axes = plt.subplots(1, 2, figsize=(13.5, 4.5), layout="constrained")
    for ax, key, label in ((axes[0], "p99_ms", "p99 latency (ms)"), (axes[1], "throughput", "throughput (requests/s)")):
        groups: dict[str, list[tuple[float, float]]] = {}
        for p in pts:
            if p.get(key) is not None:
                groups.setdefault(p["series"], []).append((p["concurrency"], p[key]))
        for g, xy in sorted(groups.items()):
            xy.sort()
            ax.plot([a for a, _ in xy], [b for _, b in xy], "-", ms=5, label=g, **harness.method_style(g))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].axhline(10, color="grey", ls="--", lw=0.8, label="p99 bar, 10 ms")
    harness.legend_outside(fig)
    fig.suptitle("gsu serve vs Milvus Lite, 127.0.0.1, 2-core VM (load generator on the same cores)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_table(summaries: list[dict[str, Any]]) -> None:
    rows = sorted(summaries, key=lambda s: (s["endpoint"], s["system"], s.get("method") or "", s["concurrency"]))
    print(harness.format_table(rows, ["system", "endpoint", "method", "concurrency", "throughput", "p50_ms", "p95_ms", "p99_ms", "recall"]))
    by = {(s["system"], s["concurrency"]): s for s in summaries if s["endpoint"] == "search"}
    for c in CONCURRENCY:
        a, b = by.get(("gsu-flat", c)), by.get(("milvus-lite", c))
        if a and b and b["throughput"]:
            print(f"c={c}: gsu-flat / milvus-lite throughput {a['throughput'] / b['throughput']:.1f}x "
                  f"(recall {a['recall']:.4f} vs {b['recall']:.4f})")
