# compare the compiled plan with the Python planner on the suite's cached indexes
import sys, numpy as np, glob, itertools
import gsu.index
from gsu.index import Filter
bad = 0; tot = 0
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
                        a = idx._plan_one(m, run, k, eff, st, None); b = idx._plan_one_py(m, run, k, eff, st, None)
                        tot += 1
                        if a != b:
                            bad += 1
                            if bad < 10: print("DIFF", p[-30:], tr, m, run, k, eff, a, b)
        for sel in (0.001, 0.003, 0.02, 0.05, 0.1, 0.2, 0.3, 0.6):
            for rep in range(5):
                c = int(sel * n)
                ids = np.sort(rng.choice(n, c, replace=False)).astype(np.int64)
                if rep == 2:
                    ids = np.arange(c, dtype=np.int64) + rng.integers(0, n - c)
                if rep == 3:  # a few lists: rows of the nearest lists of a random row
                    rl = idx.ivf._row_list
                    ls = rng.choice(idx.ivf.nlist, 3, replace=False)
                    ids = np.flatnonzero(np.isin(rl, ls)).astype(np.int64)
                    ids = ids[: max(c, 1)]
                if rep == 4:  # whole lists: up to ~12 of them
                    rl = idx.ivf._row_list
                    ls = rng.choice(idx.ivf.nlist, int(rng.integers(2, 13)), replace=False)
                    ids = np.flatnonzero(np.isin(rl, ls)).astype(np.int64)
                for form in ("arr", "filter", "bitmap", "mask"):
                    if form == "mask":
                        mk = np.zeros(n, bool); mk[ids] = True
                        cf1 = idx.hnsw.compile_filter(Filter.from_mask(mk), 1)
                        cf2 = idx.hnsw.compile_filter(Filter.from_mask(mk.copy()), 1)
                    else:
                        f = ids if form == "arr" else Filter(ids)
                        cf1 = idx.hnsw.compile_filter(f, 1)
                        cf2 = idx.hnsw.compile_filter(ids.copy() if form == "arr" else Filter(ids), 1)
                    if form == "bitmap":
                        cf1.bitmap64(); cf2.bitmap64()
                    for k, eff in ((10, 1.0), (1, 0.5), (50, 2.0)):
                        a = idx._plan_one(cf1.count, cf1.run is not None, k, eff, st, cf1)
                        b = idx._plan_one_py(cf2.count, cf2.run is not None, k, eff, st, cf2)
                        tot += 1
                        if a != b:
                            bad += 1
                            if bad < 20: print("DIFF", p[-30:], tr, sel, rep, form, k, eff, a, b)
print("cases", tot, "differ", bad)
