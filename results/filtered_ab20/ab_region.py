"""The same recalibrated index (fcache5: measurements with the region kind), its planner fitted
without the region kind's entries (before) and with them (after), side by side in one process:
recall on the suite's queries and filters (seed 7), median of 9 alternating timed passes."""
import copy, sys, time, json
import numpy as np
from threadpoolctl import threadpool_limits
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
import gsu.index
from gsu.index.planner import Calibration
name = sys.argv[1]
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
X, Q = ds.x, ds.q
idx = gsu.index.load(str([f for f in Path("/work/tmp/s21/fcache5").glob(f"{name}_*.gsu")][0]), mmap=False)
full = idx.calibration
d = copy.deepcopy(full.to_dict())
ri = d["kinds"].index("region")
d["kinds"].pop(ri)
for p in d["points"]:
    for fam in ("ivf", "hnsw", "probe"):
        for e in p.get(fam, []):
            for j in (1, 2, 3):
                if j < len(e):
                    del e[j][ri]
    if len(p["exact"]) == 4:
        del p["exact"][ri]
fits = {}
for key, cal in (("before", Calibration.from_dict(d)), ("after", full)):
    idx._calibration = cal
    idx._fits.clear()
    fits[key] = idx._fit(None)
idx._fits.clear()
out = []
with threadpool_limits(1):
    for kind in ("random", "correlated", "time-range", "category", "clusters"):
        for sel in (0.001, 0.01, 0.1, 0.5):
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
with open(Path(__file__).with_name("ab_region.jsonl"), "a") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
