"""Recalibrate a cached index in memory (the build-time way: max_seconds as a build would) and report fits + unfiltered recall."""
import sys, time, numpy as np, logging
from pathlib import Path
from threadpoolctl import threadpool_limits
from gsu.bench.filtered_data import load_dataset
import gsu.index
name = sys.argv[1]; out = sys.argv[2] if len(sys.argv) > 2 else None
ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
f = str([f for f in Path("/work/tmp/s17/fcache").glob(f"{name}_*.gsu")][0])
idx = gsu.index.load(f, mmap=False)
old = idx.calibration
X, Q = ds.x, ds.q
S = Q @ X.T; tru = np.argsort(-S, axis=1)[:, :10]
def urec():
    r = idx.search(Q, 10)
    return np.mean([len(set(tru[i]) & set(r.ids[i].tolist())) / 10 for i in range(len(Q))])
r0 = urec(); st0 = idx.settings
from gsu.index import filtered as F
ms = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
t = time.perf_counter()
with threadpool_limits(1):
    cal = idx.calibrate(max_seconds=ms)
dt = time.perf_counter() - t
st = idx.settings
print(f"{name}: old cal {old.seconds:.1f}s bands {old.settings.bands} | new cal {cal.seconds:.1f}s (wall {dt:.1f}, limit {ms:.1f}) bands {st.bands}")
print("  old ef", st0.band_hnsw_ef, "run_ef", st0.band_run_hnsw_ef, "hnsw_min", st0.hnsw_min_selectivity)
print("  new ef", st.band_hnsw_ef, "run_ef", st.band_run_hnsw_ef, "hnsw_min", st.hnsw_min_selectivity, "ivf", st.band_ivf)
print(f"  unfiltered recall old {r0:.3f} new {urec():.3f}; route/ef now", idx.explain(Q[:1], 10).routes.tolist(), idx.explain(Q[:1], 10).ef.tolist())
if out:
    idx.save(out)
