"""Unfiltered default search: the index as calibrated before (s17 cache, no unfiltered point) and
recalibrated with it (s20 cache), one process, one query per call, one thread, 9 alternating rounds of
100 queries, median us; hnswlib (cached M16) and faiss IVF (cached) ladders beside, recall@10."""
import sys, time, json
import numpy as np, faiss, hnswlib
from pathlib import Path
from threadpoolctl import threadpool_limits
from gsu.bench.filtered_data import load_dataset
import gsu.index
faiss.omp_set_num_threads(1)
out = []
for name in sys.argv[1:]:
    ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
    X, Q = ds.x, ds.q
    if ds.metric != "ip":
        continue
    S = Q @ X.T
    tru = np.argsort(-S, axis=1)[:, :10]
    rec = lambda ids: float(np.mean([len(set(tru[i]) & set(np.asarray(ids[i]).tolist())) / 10 for i in range(len(Q))]))
    f_old = [f for f in Path("/work/tmp/s17/fcache").glob(f"{name}_*.gsu")][0]
    A = gsu.index.load(str(f_old), mmap=False)
    B = gsu.index.load(str(Path("/work/tmp/s20/fcache") / f_old.name), mmap=False)
    res = {}
    with threadpool_limits(1):
        for nm, idx in (("before", A), ("after", B)):
            ids = [idx.search(Q[i], 10).ids[0] for i in range(len(Q))]
            ex = idx.explain(Q[:1], 10)
            res[nm] = {"recall": rec(ids), "route": ex.route_names()[0], "ef": int(ex.ef[0]), "t": []}
        for r in range(9):
            for nm, idx in ((("before", A), ("after", B)) if r % 2 == 0 else (("after", B), ("before", A))):
                for i in range(100): idx.search(Q[i], 10)
                t = time.perf_counter()
                for i in range(100): idx.search(Q[i], 10)
                res[nm]["t"].append((time.perf_counter() - t) * 1e4)
        peers = []
        hf = [f for f in Path("/work/tmp/s17/fcache").glob(f"{name}_*hnswlib_M16.bin")]
        if hf:
            h = hnswlib.Index(space="ip", dim=X.shape[1]); h.load_index(str(hf[0])); h.set_num_threads(1)
            for ef in (10, 16, 24, 32, 48, 64, 96, 128):
                h.set_ef(ef)
                ids = [h.knn_query(Q[i:i+1], 10)[0][0] for i in range(len(Q))]
                ts = []
                for r in range(5):
                    t = time.perf_counter()
                    for i in range(100): h.knn_query(Q[i:i+1], 10)
                    ts.append((time.perf_counter() - t) * 1e4)
                peers.append({"peer": f"hnswlib M16 ef {ef}", "recall": rec(ids), "us": float(np.median(ts))})
                if rec(ids) >= 0.97: break
    row = {"data": name, **{f"{k}_{nm}": (float(np.median(v["t"])) if k == "t" else v[k]) for nm, v in res.items() for k in v}, "peers": peers}
    out.append(row)
    print(f"{name:18s} before r={res['before']['recall']:.3f} {np.median(res['before']['t']):6.1f} us ({res['before']['route']} ef {res['before']['ef']}) | after r={res['after']['recall']:.3f} {np.median(res['after']['t']):6.1f} us ({res['after']['route']} ef {res['after']['ef']}) | " + "; ".join(f"{p['peer']} r={p['recall']:.3f} {p['us']:.1f}" for p in peers if p['recall'] >= 0.9), flush=True)
Path("/work/tmp/s20/unf_ab.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))
