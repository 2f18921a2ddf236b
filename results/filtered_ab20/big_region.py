"""10^6 x 96 clustered (the build step's fresh build, recalibrated by 8f1acf4's stop): recalibrate
under the build's time limit with this code's four kinds, or with the region kind left out
(argv[1] == "3"), in its own process; report calibration time, peak resident memory and the
default search's recall on the build step's kind of queries (rows plus noise), fresh filters."""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from threadpoolctl import threadpool_limits
from gsu.bench.build import vectors
import gsu.index
from gsu.index import _calibrate as C, filtered as F
if sys.argv[1] == "3":
    C.KINDS = ("random", "correlated", "range")
n = 1_000_000
x = np.load(vectors(n, 96, "clustered", Path("/work/tmp/s19/cache")), mmap_mode="r")
idx = gsu.index.load("/work/tmp/s20/big/big_1000000_unf.gsu", mmap=False)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
t = time.perf_counter()
cal = idx.calibrate(max_seconds=lim)
wall = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
st = idx.settings
out = {"kinds": list(C.KINDS), "cal_seconds": cal.seconds, "wall": wall, "limit": lim, "points": [p["s"] for p in cal.points],
       "peak_rss_mb_after_load": rss0, "peak_rss_mb_after_calibration": rss1,
       "region_measured": {str(p["s"]): p.get("region_measured") for p in cal.points}}
rng = np.random.default_rng(1)
nq = 100
qrows = rng.choice(n, nq, replace=False)
q = np.asarray(x[qrows], dtype=np.float32) + 0.05 * rng.standard_normal((nq, 96)).astype(np.float32)
X = np.asarray(x)
with threadpool_limits(1):
    for kind, s in (("none", 1.0), ("random", 0.01), ("random", 0.1), ("random", 0.5), ("range", 0.1)):
        m = max(10, int(s * n))
        sets = None if kind == "none" else ([np.sort(rng.choice(n, m, replace=False)) for _ in range(nq)] if kind == "random"
                                            else [np.arange(a, a + m, dtype=np.int64) for a in rng.integers(0, n - m, nq)])
        hits, ts = 0, []
        for i in range(nq):
            t0 = time.perf_counter()
            got = idx.search(q[i], 10, filter=None if sets is None else sets[i]).ids[0]
            ts.append(time.perf_counter() - t0)
            rows = np.arange(n) if sets is None else sets[i]
            sc = X[rows].astype(np.float64) @ q[i].astype(np.float64)
            kth = np.partition(sc, -10)[-10]
            got = got[got >= 0]
            hits += int((X[np.sort(got)].astype(np.float64) @ q[i].astype(np.float64) >= kth - 1e-6).sum())
        out[f"{kind}_{s}"] = {"recall": hits / (10 * nq), "median_us": float(np.median(ts) * 1e6)}
print(json.dumps(out), flush=True)
