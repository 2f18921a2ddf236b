"""2·10^6 × 96 clustered (this stop's fresh `gsu bench build` at 1d3c2e0): the default search's
plan and cost for random filters at 10 / 30 / 50 % with the even-filter rule of 5f646af off
(before) and on (after), fitted from the same stored calibration, side by side in one process
(the build step's queries: rows plus noise; 5 alternating rounds of 40 queries, fresh filters)."""
import json, sys, time
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import planner as P
from gsu.index import Filter
x = np.load("/work/tmp/s22/bcache/build_clustered_2000000x96_s0.npy", mmap_mode="r")
idx = gsu.index.load("/work/tmp/s22/bcache/build_files/gsu_clustered_2000000x96_M32_efc200.gsu", mmap=True)
n = x.shape[0]
fits = {}
for key, flag in (("before", False), ("after", True)):
    P.EVEN_IVF_LONGER = flag
    idx._fits.clear()
    fits[key] = idx._fit(None)
    print(key, {k: v for k, v in fits[key].settings.to_dict().items() if "even" in k or "min_sel" in k or k in ("bands", "band_ivf", "band_hnsw_ef")}, flush=True)
idx._fits.clear()
rng = np.random.default_rng(1)
nq = 40
qrows = rng.choice(n, nq, replace=False)
q = np.asarray(x[qrows], dtype=np.float32) + 0.05 * rng.standard_normal((nq, x.shape[1])).astype(np.float32)
out = []
with threadpool_limits(1):
    for s in (0.1, 0.3, 0.5):
        m = int(s * n)
        sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)]
        res = {}
        for key in ("before", "after"):
            idx._fits[None] = fits[key]
            ex = idx.explain(q[0], 10, filter=sets[0])
            hits = 0
            for i in range(nq):
                got = idx.search(q[i], 10, filter=Filter(sets[i])).ids[0]
                sc = np.asarray(x[sets[i]], dtype=np.float64) @ q[i].astype(np.float64)
                kth = np.partition(sc, -10)[-10]
                got = got[got >= 0]
                hits += int((np.asarray(x[np.sort(got)], dtype=np.float64) @ q[i].astype(np.float64) >= kth - 1e-6).sum())
            res[key] = {"route": int(ex.routes[0]), "ef": int(ex.ef[0]), "cand": int(ex.candidates[0]), "recall": hits / (10 * nq), "t": []}
        for rnd in range(5):
            for key in (("before", "after") if rnd % 2 == 0 else ("after", "before")):
                idx._fits[None] = fits[key]
                t = time.perf_counter()
                for i in range(nq):
                    idx.search(q[i], 10, filter=Filter(sets[i]))
                res[key]["t"].append((time.perf_counter() - t) / nq * 1e3)
        for key in res:
            res[key]["ms"] = float(np.median(res[key]["t"]))
        print(f"random {s}: " + "  ".join(f"{k}: route {v['route']} ef {v['ef']} cand {v['cand']} recall {v['recall']:.3f} {v['ms']:.2f} ms" for k, v in res.items()), flush=True)
        out.append({"sel": s, **{k: {kk: vv for kk, vv in v.items() if kk != "t"} for k, v in res.items()}})
with open(Path(__file__).with_name("big_even.jsonl"), "a") as f:
    for r in out:
        f.write(json.dumps(r) + "\n")
