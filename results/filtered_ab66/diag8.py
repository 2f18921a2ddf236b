import time, numpy as np
from gsu.index import load
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
from gsu.index import filtered as F
D = "/work/tmp/ud"
ds = from_registry(f"{D}/l2gauss_n50000_s3.npy?queries={D}/l2gauss_n50000_s3_q.npy&metric=l2", nq=100, seed=0)
idx = load("/work/tmp/s66/cache_us2/l2gauss_n50000_s3.gsu")
q = np.ascontiguousarray(ds.q[:100])
allowed = make_filters(ds, "correlated", 0.5, np.random.default_rng(1))
st = idx.settings
for i in range(100): idx.search(q[i], 10, filter=allowed[i])
pc = time.perf_counter
def tm(fn):
    ts = []
    for rep in range(5):
        t = pc()
        for i in range(100): fn(i)
        ts.append((pc() - t) / 100 * 1e6)
    return np.median(ts)
qs_all = idx._scoring_queries(q)
plans = [idx._plan_one(len(a), False, 10, 1.0, st, idx.hnsw.compile_filter(a, 1)) for a in allowed]
print("plan0", plans[0])
print("served search", tm(lambda i: idx.search(q[i], 10, filter=allowed[i])))
print("timer-style compile+_search_one", tm(lambda i: idx._search_one(qs_all[i:i+1], 10, idx.hnsw.compile_filter(allowed[i], 1), *plans[i])))
def from_bm(i):
    cf0 = idx.hnsw.compile_filter(allowed[i], 1)
    return cf0.bitmap64(), cf0.count
bms = [from_bm(i) for i in range(100)]
from gsu.index.filters import CompiledFilter
n = idx.ntotal
print("from_bitmap+_search_one", tm(lambda i: idx._search_one(qs_all[i:i+1], 10, CompiledFilter.from_bitmap(bms[i][0], bms[i][1], n, None), *plans[i])))
print("compile only", tm(lambda i: idx.hnsw.compile_filter(allowed[i], 1)))
import cProfile, pstats
pr = cProfile.Profile(); pr.enable()
for rep in range(20):
    for i in range(100): idx.search(q[i], 10, filter=allowed[i])
pr.disable(); pstats.Stats(pr).sort_stats("tottime").print_stats(14)
