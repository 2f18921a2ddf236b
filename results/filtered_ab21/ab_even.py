"""An even filter on IVF where the random kind's own costs keep it there and every kind's split
walks (planner.EVEN_IVF_LONGER): the same fresh build (the record run's cache, built at 5e79a4c),
its planner fitted without the rule (before) and with it (after), side by side in one process:
recall on the suite's queries and filters (seed 7), median of 9 alternating timed passes."""
import sys, time, json
import numpy as np
from threadpoolctl import threadpool_limits
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index
from gsu.index import planner as P
name = sys.argv[1]
cache = Path("/work/tmp/s22/fcache")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
idx = gsu.index.load(str([f for f in cache.glob(f"{name}_*.gsu")][0]), mmap=False)
fits = {}
for key, flag in (("before", False), ("after", True)):
    P.EVEN_IVF_LONGER = flag
    idx._fits.clear()
    fits[key] = idx._fit(None)
idx._fits.clear()
out = []
with threadpool_limits(1):
    for kind in ("random", "correlated", "time-range", "category", "clusters"):
        for sel in (0.1, 0.2, 0.5):
            fl = make_filters(ds, kind, sel, np.random.default_rng(7))
            if fl is None:
                continue
            truth = []
            for i in range(100):
                s = X[fl[i]] @ Q[i]
                truth.append(set(fl[i][np.argsort(-s)[:10]].tolist()))
            res = {}
            for key in ("before", "after"):
                idx._fits[None] = fits[key]
                r = np.mean([len(truth[i] & set(idx.search(Q[i], 10, filter=fl[i]).ids[0].tolist())) / 10 for i in range(100)])
                res[key] = {"rec": float(r), "t": []}
            for rnd in range(9):
                for key in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                    idx._fits[None] = fits[key]
                    for i in range(100):
                        idx.search(Q[i], 10, filter=fl[i])
                    t = time.perf_counter()
                    for i in range(100):
                        idx.search(Q[i], 10, filter=fl[i])
                    res[key]["t"].append((time.perf_counter() - t) * 1e4)
            b, a = res["before"], res["after"]
            mb, ma = float(np.median(b["t"])), float(np.median(a["t"]))
            out.append({"dataset": name, "filter": kind, "sel": sel, "before_us": mb, "after_us": ma, "before_recall": b["rec"],
                        "after_recall": a["rec"], "speedup": mb / ma})
            print(f"{name:18s} {kind:10s} {sel:5}: before {mb:7.1f} us r={b['rec']:.3f}  after {ma:7.1f} us r={a['rec']:.3f}  x{mb/ma:.2f}", flush=True)
with open(Path(__file__).with_name("ab_even.jsonl"), "a") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
