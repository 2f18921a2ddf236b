import time, numpy as np
from gsu.index import load
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
ds = from_registry("gen:powerlaw-d32", nq=100, seed=0)
idx = load("/work/tmp/s66/suite/cache/powerlaw-d32_150000x32_M32_efc200_s0.gsu")
q = np.ascontiguousarray(ds.q[:100])
allowed = make_filters(ds, "correlated", 0.1, np.random.default_rng(1))
idx.search(q[1], 10, filter=allowed[1])  # a request of another path first
for r in range(4):
    t = time.perf_counter(); idx.search(q[18], 10, filter=allowed[18]); print(r, round((time.perf_counter() - t) * 1e6), "µs")
