"""Stop 61: recall of forced IVF at 4-40 lists (candidates 10 per list) on the suite's query-correlated and random
10 % cells, with each query's local share (allowed share of its four nearest lists over the selectivity). Timings here
go through the override path (the Python planner) and are not comparable to the suite's; recall is the point."""
import sys, time, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
from gsu.index import load, FlatIndex, Filter
from gsu.index import _filter_kernels as fk
C = Path("/work/tmp/s61/fsuite/cache")
for name, f in [("clustered", "clustered_200000x64"), ("aniso-d128", "aniso-d128_100000x128"), ("powerlaw-d32", "powerlaw-d32_150000x32"),
                ("neardup-d256", "neardup-d256_60000x256"), ("gauss-d768", "gauss-d768_30000x768")]:
    ds = load_dataset(name, C, quick=False, nq=100, seed=0)
    idx = load(C / f"{f}_M32_efc200_s0.gsu"); ivf = idx.ivf; h = idx.hnsw
    flat = FlatIndex(ds.x.shape[1], metric=ds.metric); flat.add(ds.x)
    for kind in ("correlated", "random"):
        al = make_filters(ds, kind, 0.1, np.random.default_rng(1))
        truth = flat.search(ds.q, 10, filter=Filter.per_query(al)).ids
        sh = []
        for i in range(100):
            cf = h.compile_filter(al[i], 1); Q = idx._scoring_queries(ds.q[i:i+1])
            sh.append(fk.local_share(ivf.centroid_scores(Q), 0, ivf._list_off, ivf._list_off, cf.bitmap64(), ivf._pos_row) / (len(al[i]) / ivf.ntotal))
        sh = np.array(sh)
        dflt = [idx.search(ds.q[i], 10, filter=al[i]) for i in range(100)]
        rd = np.mean([len(set(dflt[i].ids[0]) & set(truth[i])) / 10 for i in range(100)])
        out = [f"{name} {kind}: local share / s median {np.median(sh):.1f} (>=4x: {np.mean(sh >= 4):.2f}); default r={rd:.3f}"]
        for L in (4, 6, 8, 12, 16, 25, 40):
            kw = dict(route="ivf", ivf_candidates=float(10 * L), ivf_min_lists=float(L))
            res = [idx.search(ds.q[i], 10, filter=al[i], **kw) for i in range(100)]
            r = np.mean([len(set(res[i].ids[0]) & set(truth[i])) / 10 for i in range(100)])
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                for i in range(100): idx.search(ds.q[i], 10, filter=al[i], **kw)
                ts.append((time.perf_counter() - t) / 100 * 1e6)
            out.append(f"L{L}: r={r:.3f} {np.median(ts):.0f}us")
        print(" | ".join(out), flush=True)
