"""The vector-database peer of ``gsu bench serve``: Milvus Lite, driven through pymilvus.

Run by the benchmark as a separate program, usually with another interpreter (Milvus Lite
and pymilvus live in their own virtual environment when their dependencies conflict
with gsu's), so this file imports only the standard library, numpy and pymilvus.

``python _milvus_peer.py --db DB --vectors X.npy --requests R.npz --k 10 --concurrency 1,8,64 --out OUT.npz``

- ingests ``X.npy`` (n, d) float32 as ids ``0..n-1`` into collection ``items`` of the Milvus
  Lite database ``DB`` (once: a database already holding exactly these n rows is reused),
  with a FLAT index (inner product) — Milvus Lite's exact index;
- answers every request of ``R.npz`` (``queries`` (R, d) float32, per-request allowed ids
  in CSR form ``indptr`` (R+1,) / ``ids``) as ``search(filter="id in {ids}",
  ...)`` (Milvus Lite takes no expression templates, so the ids are spelled out), at each concurrency (threads sharing one client), bounded by count
  and time; writes per run the latencies, the answered request numbers and the returned ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np

COLLECTION = "items"


def _client(db: str):
    from pymilvus import MilvusClient

    return MilvusClient(db)


def ingest(client, x: np.ndarray, *, batch: int = 20_000) -> float:
    """Create the collection and insert ``x``; returns seconds (0 when reused)."""
    from pymilvus import DataType

    n, d = x.shape
    if client.has_collection(COLLECTION):
        client.load_collection(COLLECTION)
        rows = client.query(COLLECTION, filter="", output_fields=["count(*)"])[0]["count(*)"]
        if rows == n:
            return 0.0
        client.drop_collection(COLLECTION)
    t0 = time.perf_counter()
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=d)
    ip = client.prepare_index_params()
    ip.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection(COLLECTION, schema=schema, index_params=ip)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        client.insert(COLLECTION, [{"id": i, "vector": x[i].tolist()} for i in range(s, e)])
        print(f"[milvus] inserted {e}/{n}", file=sys.stderr, flush=True)
    client.flush(COLLECTION)
    client.load_collection(COLLECTION)
    return time.perf_counter() - t0


def search_one(client, q: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    # Milvus Lite takes no expression templates: the id list is spelled out in the expression
    res = client.search(COLLECTION, data=[q.tolist()], limit=k, filter=f"id in [{','.join(map(str, ids.tolist()))}]",
                        search_params={"metric_type": "IP"}, output_fields=[])
    return [int(h["id"]) for h in res[0]]


def run_level(client, queries: np.ndarray, indptr: np.ndarray, ids: np.ndarray, k: int, concurrency: int, *,
              max_requests: int, max_seconds: float, start: int) -> dict[str, np.ndarray | float]:
    """``concurrency`` threads take requests ``start, start+1, ...`` (mod R) until
    ``max_requests`` were sent or ``max_seconds`` passed."""
    R = queries.shape[0]
    lock = threading.Lock()
    nxt = [0]
    lat: list[float] = []
    req: list[int] = []
    out: list[list[int]] = []
    deadline = time.perf_counter() + max_seconds
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            loop()
        except BaseException as e:  # noqa: BLE001 - re-raised after the join
            failures.append(e)

    def loop() -> None:
        while True:
            with lock:
                i = nxt[0]
                if i >= max_requests or time.perf_counter() > deadline:
                    return
                nxt[0] += 1
            r = (start + i) % R
            allowed = ids[indptr[r] : indptr[r + 1]]
            t0 = time.perf_counter()
            got = search_one(client, queries[r], allowed, k)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                req.append(r)
                out.append(got + [-1] * (k - len(got)))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    wall = time.perf_counter() - t0
    return {"latency": np.asarray(lat), "request": np.asarray(req, np.int64), "ids": np.asarray(out, np.int64).reshape(-1, k),
            "wall": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", required=True)
    p.add_argument("--vectors", required=True)
    p.add_argument("--requests", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--concurrency", default="1,8,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-requests", type=int, default=2000)
    p.add_argument("--max-seconds", type=float, default=8.0)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ingest-only", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    x = np.load(a.vectors, mmap_mode="r")
    client = _client(a.db)
    t_ingest = ingest(client, np.asarray(x, dtype=np.float32))
    meta = {"ingest_s": t_ingest, "n": int(x.shape[0]), "dim": int(x.shape[1])}
    try:
        import pymilvus

        meta["pymilvus"] = pymilvus.__version__
        from importlib.metadata import version

        meta["milvus_lite"] = version("milvus-lite")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    arrays: dict[str, np.ndarray] = {}
    if not a.ingest_only:
        r = np.load(a.requests)
        queries, indptr, ids = r["queries"], r["indptr"], r["ids"]
        run_level(client, queries, indptr, ids, a.k, 8, max_requests=a.warmup, max_seconds=60, start=0)
        start = a.warmup
        for c in (int(v) for v in a.concurrency.split(",")):
            for rep in range(a.repeats):
                res = run_level(client, queries, indptr, ids, a.k, c, max_requests=a.max_requests, max_seconds=a.max_seconds,
                                start=start)
                start += len(res["request"])
                for key in ("latency", "request", "ids"):
                    arrays[f"c{c}_r{rep}_{key}"] = res[key]
                arrays[f"c{c}_r{rep}_wall"] = np.asarray(res["wall"])
                print(f"[milvus] c={c} rep={rep}: {len(res['request'])} requests in {res['wall']:.2f}s", file=sys.stderr, flush=True)
    np.savez(a.out, meta=np.asarray(json.dumps(meta)), **arrays)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
