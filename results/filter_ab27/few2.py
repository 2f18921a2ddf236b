import time, sys
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
harness.pin_threads(1)
cache = Path("/work/tmp/s23/fcache")
for cell in sys.argv[1].split(";"):
    name, kind, sel = cell.split(",")
    ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
    idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(123))
    st = idx._fits[None].settings
    h = idx.hnsw
    cfs = [h.compile_filter(a, 1) for a in allowed]
    orig = idx._few_lists
    asked = []
    def spy(cf, m, lists):
        asked.append((m, lists)); return orig(cf, m, lists)
    idx._few_lists = spy
    plans = [idx._plan_one(cf.count, cf.run is not None, 10, 1.0, st, cf) for cf in cfs]
    del idx._few_lists
    routes = np.bincount([p[0] for p in plans], minlength=3)
    if asked:
        ts = []
        for rep in range(5):
            t0 = time.perf_counter()
            for cf, (m, l) in zip(cfs, asked):
                idx._few_lists(cf, m, l)
            ts.append((time.perf_counter() - t0) / len(asked) * 1e6)
        print(cell, "routes", routes.tolist(), "asked", len(asked), "lists", asked[0][1], "m", asked[0][0], "us/ask %.2f" % np.median(ts))
    else:
        print(cell, "routes", routes.tolist(), "asked 0")
