"""Per-query recall at 2*10^6, random 50 %: calibration-like held-out rows (twin-free pick, nodes held
out as calibration does) vs fresh mixture draws, 300 of each, the walk at fixed beams and the default plan.

python spread.py N NQ SEL [INDEX] [EFS] [OUT.json]   (one thread)"""
import sys, time, json
import numpy as np
import gsu.index
from gsu.index._calibrate import held_out, twin_free_rows
from gsu.bench import harness
from gsu.datasets.synthetic import clustered_catalog, catalog_queries
harness.pin_threads(1)
n, d = int(sys.argv[1]), 96
path = sys.argv[4] if len(sys.argv) > 4 else f"/work/tmp/s22/bcache/build_files/gsu_clustered_{n}x96_M32_efc200.gsu"
data = f"/work/tmp/s22/bcache/build_clustered_{n}x96_s0.npy"
nq = int(sys.argv[2]); sel = float(sys.argv[3])
X = np.load(data)
idx = gsu.index.load(path, mmap=False)
cat = clustered_catalog(n, d, n_clusters=max(64, int(np.sqrt(n) / 4)), seed=0)
rng = np.random.default_rng(11)
pick = rng.choice(n - 1, nq, replace=False).astype(np.int64)
qrows = np.sort(twin_free_rows(idx.hnsw.vectors, pick, 10, int(idx.hnsw.entry_point) if hasattr(idx.hnsw,'entry_point') else -1, [5, 1]))
drop = np.zeros(n, bool); drop[qrows] = True
sets = []
for i in range(nq):
    s = rng.choice(n, int(sel * n), replace=False)
    sets.append(np.sort(s[~drop[s]]))
efs = tuple(float(v) for v in sys.argv[5].split(",")) if len(sys.argv) > 5 else (2.2, 2.8, 4.0)
out = {}
def run(name, Q, ctx):
    recs = {e: [] for e in efs}; recs["default"] = []
    for i in range(nq):
        sc = X[sets[i]] @ Q[i]; kth = np.partition(sc, -10)[-10]
        def rec(got):
            got = got[got >= 0]
            return int((X[got] @ Q[i] >= kth - 1e-6).sum()) / 10
        with ctx():
            recs["default"].append(rec(idx.search(Q[i], 10, filter=sets[i]).ids[0]))
            for e in efs:
                recs[e].append(rec(idx.search(Q[i], 10, filter=sets[i], route="hnsw", hnsw_ef=e).ids[0]))
    for key, r in recs.items():
        r = np.array(r)
        print(f"n={n} sel={sel} {name} {key}: mean {r.mean():.4f} sd {r.std(ddof=1):.3f} p(<0.8) {np.mean(r<0.8):.3f} min {r.min():.1f}", flush=True)
        out[f"{name}|{key}"] = r.tolist()
import contextlib
run("held-out rows", X[qrows], lambda: held_out(idx, qrows))
run("mixture draws", catalog_queries(cat, nq, seed=7), contextlib.nullcontext)
print(idx.explain(X[qrows[:1]], 10, filter=sets[0]))
json.dump(out, open(sys.argv[6] if len(sys.argv) > 6 else f"spread_{n}_{sel}.json", "w"))
