"""Stop 61: the IVF kernel alone, stop 60's code against this stop's, in one process, on the
filtered suite's cached indexes (one thread, 100 queries, fresh compiled filters planned as a
search plans them; answers checked identical, AWAY_ELSEWHERE counts included).

    git show a1ca97c:gsu/index/_filter_kernels.py > fk_old.py   # stop 60's kernels, beside this file
    python ab.py DATASET KIND SELECTIVITY INDEX.gsu [CACHE]

Prints old / new µs per query for five interleaved passes (each the median of 9) and the
median ratio."""
import sys, time, numpy as np
from pathlib import Path as _P
sys.path.insert(0, str(_P(__file__).resolve().parent))
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
from gsu.index import load
from gsu.index import _filter_kernels as fkn
import fk_old as fko
name, kind, sel, path = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
ds = load_dataset(name, Path(sys.argv[5] if len(sys.argv) > 5 else "/work/tmp/s60/fsuite/cache"), quick=False, nq=100, seed=0)
idx = load(path)
allowed = make_filters(ds, kind, sel, np.random.default_rng(1))
h = idx.hnsw; ivf = idx.ivf
idx.search(ds.q[0], 10, filter=allowed[0]); st = idx._fits[None].settings
cfs = [h.compile_filter(a, 1) for a in allowed]
plans = [idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf) for cf in cfs]
Q = [idx._scoring_queries(ds.q[i:i+1]) for i in range(100)]
CS = [ivf.centroid_scores(q) for q in Q]
V = idx._scoring(); sq8 = idx._approx()[1]
args = []
for i in range(100):
    code, probe, ef, cand, lists, away = plans[i]
    away = None if away is None or away[0] <= 0 else (ivf._list_off, float(away[0]), int(away[1]), int(away[2]))
    m_all, boff, bpos, bm, run = ivf._shared_form(cfs[i], cand, lists)
    args.append((Q[i], CS[i], V, ivf._pos_row, boff, bpos, bm, m_all, 10, cand, lists, away, run))
print("routes", set(p[0] for p in plans), plans[0], "sq8", sq8 is not None, "scan", args[0][6].shape[0] > 0, "run", args[0][12])
def call(mod, a, out):
    q, cs, V, pr, boff, bpos, bm, m_all, k, cand, lists, away, run = a
    mod.ivf_search_shared(q, cs, V, pr, boff, bpos, bm, m_all, k, cand, lists, *out, ind=True, sq8=sq8, away=away, run=run)
def mk(): return (np.empty((1,10),np.int64), np.empty((1,10),np.float32), np.empty(1,np.int64), np.empty(1,np.int64))
for i in range(100):
    o1, o2 = mk(), mk()
    call(fko, args[i], o1); call(fkn, args[i], o2)
    assert np.array_equal(o1[2], o2[2]) and np.array_equal(o1[3], o2[3]), i
    if o1[2][0] >= 0:
        for x, y in zip(o1, o2): assert np.array_equal(x, y), (i, o1, o2)
print("identical")
def tm(mod, reps=9):
    o = mk(); ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for i in range(100): call(mod, args[i], o)
        ts.append((time.perf_counter() - t) / 100 * 1e6)
    return np.median(ts)
r = []
for rep in range(5):
    a, b = tm(fko), tm(fkn); r.append(a / b)
    print(f"old {a:.1f} new {b:.1f} ratio {a/b:.2f}")
print("median ratio", np.median(r))
