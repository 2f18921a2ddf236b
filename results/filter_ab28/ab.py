import time, sys, json
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
harness.pin_threads(1)
cache = Path("/work/tmp/s23/fcache")
res = {}
for cell in sys.argv[1].split(";"):
    name, kind, sel = cell.split(",")
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
    q = ds.q
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(123))
    nq = len(allowed)
    for i in range(nq): idx.search(q[i], 10, filter=allowed[i])
    ts = []
    for rep in range(11):
        t0 = time.perf_counter()
        for i in range(nq): idx.search(q[i], 10, filter=allowed[i])
        ts.append((time.perf_counter() - t0) / nq * 1e6)
    res[cell] = round(float(np.median(ts)), 1)
print(json.dumps(res))
