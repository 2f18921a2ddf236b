"""10^6 x 96 clustered (fresh build of the previous stop): recalibrate with the unfiltered point under the
build's time limit, save a copy, and compare unfiltered + filtered recall/latency of the two calibrations."""
import sys, time, numpy as np, logging
from pathlib import Path
from threadpoolctl import threadpool_limits
from gsu.bench.build import vectors
import gsu.index
from gsu.index import filtered as F
logging.basicConfig(level=logging.INFO, format="%(message)s")
n = 1_000_000
x = np.load(vectors(n, 96, "clustered", Path("/work/tmp/s19/cache")), mmap_mode="r")
old = gsu.index.load("/work/tmp/s19/big_1000000.gsu", mmap=False)
newp = Path("/work/tmp/s20/big/big_1000000_unf.gsu")
if not newp.exists():
    idx = gsu.index.load("/work/tmp/s19/big_1000000.gsu", mmap=False)
    lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
    t = time.perf_counter()
    cal = idx.calibrate(max_seconds=lim)
    print("recalibrated in", round(time.perf_counter() - t, 1), "s wall; cal.seconds", round(cal.seconds, 1), "limit", round(lim, 1), "points", [p["s"] for p in cal.points], "old cal seconds", round(old.calibration.seconds, 1), "old points", [p["s"] for p in old.calibration.points], flush=True)
    idx.save(str(newp))
new = gsu.index.load(str(newp), mmap=False)
for nm, idx in (("old", old), ("new", new)):
    st = idx.settings
    print(nm, "bands", st.bands, "ef", st.band_hnsw_ef, "run_ef", st.band_run_hnsw_ef, "hnsw_min %.3f" % st.hnsw_min_selectivity)
rng = np.random.default_rng(1)
nq = 100
qrows = rng.choice(n, nq, replace=False)
q = np.asarray(x[qrows], dtype=np.float32) + 0.05 * rng.standard_normal((nq, 96)).astype(np.float32)
X = np.asarray(x)
def recall(res, sets):
    hits = 0
    for i in range(nq):
        rows = np.arange(n) if sets is None else sets[i]
        sc = X[rows].astype(np.float64) @ q[i].astype(np.float64)
        kth = np.partition(sc, -10)[-10]
        got = res[i][res[i] >= 0]
        hits += int((X[np.sort(got)].astype(np.float64) @ q[i].astype(np.float64) >= kth - 1e-6).sum())
    return hits / (10 * nq)
with threadpool_limits(1):
    for kind, s in (("none", 1.0), ("random", 0.01), ("random", 0.1), ("random", 0.5), ("range", 0.1)):
        m = max(10, int(s * n))
        if kind == "none":
            sets = None
        elif kind == "random":
            sets = [np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)]
        else:
            sets = [np.arange(a, a + m, dtype=np.int64) for a in rng.integers(0, n - m, nq)]
        out = {}
        for nm, idx in (("old", old), ("new", new)):
            ids = [idx.search(q[i], 10, filter=None if sets is None else sets[i]).ids[0] for i in range(nq)]
            ex = idx.explain(q[:1], 10, filter=None if sets is None else sets[0])
            out[nm] = [recall(ids, sets), [], ex.route_names()[0], int(ex.ef[0])]
        for r in range(5):
            for nm, idx in ((("old", old), ("new", new)) if r % 2 == 0 else (("new", new), ("old", old))):
                t = time.perf_counter()
                for i in range(nq): idx.search(q[i], 10, filter=None if sets is None else sets[i])
                out[nm][1].append((time.perf_counter() - t) / nq * 1e6)
        print(f"{kind} {s}: old r={out['old'][0]:.3f} {np.median(out['old'][1]):.0f} us ({out['old'][2]} ef {out['old'][3]}) | new r={out['new'][0]:.3f} {np.median(out['new'][1]):.0f} us ({out['new'][2]} ef {out['new'][3]})", flush=True)
