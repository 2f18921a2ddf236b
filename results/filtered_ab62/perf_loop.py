import sys, time, numpy as np
from pathlib import Path
from gsu.bench.filtered_data import load_dataset
from gsu.bench.filtered import make_filters
from gsu.index import load
name, kind, sel, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
cache = Path("/work/tmp/s62/cache_rec")  # the suite cache of the record run (its gsu indexes)
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = load(str(next(cache.glob(f"{name}_*_s0.gsu"))))
allowed = make_filters(ds, kind, sel, np.random.default_rng(1)); q = ds.q
for i in range(100): idx.search(q[i], 10, filter=allowed[i])
print("ready", flush=True)
t0 = time.time(); n = 0
while time.time() - t0 < secs:
    for i in range(100): idx.search(q[i], 10, filter=allowed[i])
    n += 100
print("us/search", (time.time() - t0) / n * 1e6)
