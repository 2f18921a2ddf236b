# unseen sparse sets: the filter plan's recall and time against the former rule (fresh filter per call, one thread)
import time, json, sys, numpy as np
from gsu.bench import harness
from gsu.datasets.sparse import rarity_collection
from gsu.datasets import sparse_collection
from gsu.index import SeismicIndex, SparseFlatIndex, Filter
from gsu.index.seismic import default_filter_exact_max
sets = {
    "rarity-60k-v20k-z1.3": lambda: rarity_collection(60000, 300, vocab_size=20000, avg_nnz=80, query_nnz=15, n_topics=150, zipf_exponent=1.3, rarity_power=1.0, seed=77),
    "splade-50k-v15k-t50": lambda: sparse_collection(50000, 300, vocab_size=15000, avg_nnz=100, query_nnz=30, n_topics=50, zipf_exponent=0.8, seed=91),
}
for name, make in sets.items():
    c = make()
    docs, Q = c.docs.tocsr(), c.queries.tocsr()
    n = docs.shape[0]
    with harness.all_threads():
        t0 = time.perf_counter()
        g = SeismicIndex.build(docs, value_dtype="float16", seed=0)
        bt = time.perf_counter() - t0
    cal = g.calibration
    print(name, f"build {bt:.1f}s, calibration {cal['seconds']}s (filtered {cal['filtered']['seconds']}s)", "op", g.operating_point()["query_cut"], g.operating_point()["heap_factor"], flush=True)
    for e in g.filter_plan(): print("   ", e["selectivity"], e["route"], e["query_cut"], e["heap_factor"], e["expected_recall"])
    harness.pin_threads(1)
    flat = SparseFlatIndex(docs.shape[1]); flat.add(docs)
    rows = [Q[i] for i in range(100)]
    rng = np.random.default_rng(3)
    rule = default_filter_exact_max(n)
    for sel in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5):
        m = int(sel * n)
        fs = [np.sort(rng.choice(n, m, replace=False)).astype(np.int64) for _ in rows]
        ex = flat.search(Q[:100], 10, filter=Filter.per_query(fs))
        out = {"data": name, "sel": sel}
        for mode, kw in (("plan", {}), ("rule", {"filter_exact_max": rule})):
            res = [g.search(r, 10, filter=f, **kw) for r, f in zip(rows, fs)]
            rec = []
            for i, r in enumerate(res):
                cnt = int(ex.counts[i])
                if cnt == 0: rec.append(1.0); continue
                kth = ex.scores[i][cnt - 1]
                ids = r.ids[0][r.ids[0] >= 0]
                sc = np.asarray((docs[ids] @ Q[i].T).todense()).ravel()  # float32 scores of the found documents
                rec.append(min(int((sc >= kth - 1e-5 * abs(kth) - 1e-6).sum()), cnt) / cnt)
            ts = []
            for rep in range(5):
                t0 = time.perf_counter()
                for r, f in zip(rows, fs): g.search(r, 10, filter=Filter.from_ids(f), **kw)
                ts.append((time.perf_counter() - t0) / len(rows) * 1e6)
            out[mode + "_us"] = round(float(np.median(ts)), 1); out[mode + "_recall"] = round(float(np.mean(rec)), 4)
        print(json.dumps(out), flush=True)
    harness.pin_threads(2)
