import sys, json, numpy as np, glob
import gsu.index
out = []
for p in sorted(glob.glob("/work/tmp/s23/fcache/*_s0.gsu")):
    idx = gsu.index.load(p)
    n = idx.hnsw._n
    rng = np.random.default_rng(0)
    for tr in (None, 0.9, 0.99):
        st = idx._fit(tr).settings if tr is not None else idx._fits[None].settings
        for m in sorted(set(np.unique(np.geomspace(1, n, 120).astype(int)).tolist())):
            for run in (False, True):
                for k in (1, 10, 50):
                    for eff in (0.5, 1.0, 2.0):
                        out.append([p[-40:], tr, m, run, k, eff, repr(idx._plan_one(m, run, k, eff, st, None))])
        for sel in (0.003, 0.02, 0.1, 0.3, 0.6):
            for rep in range(3):
                ids = np.sort(rng.choice(n, int(sel * n), replace=False)).astype(np.int64)
                if rep == 2:
                    ids = np.arange(int(sel * n), dtype=np.int64) + rng.integers(0, n - int(sel * n))
                cf = idx.hnsw.compile_filter(ids, 1)
                out.append([p[-40:], tr, sel, rep, repr(idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf))])
json.dump(out, open(sys.argv[1], "w"))
print(len(out))
