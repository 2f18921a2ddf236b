import time, sys, json
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
from gsu.index import Filter
harness.pin_threads(1)
name = sys.argv[1]; kind = sys.argv[2]; sels = [float(s) for s in sys.argv[3].split(",")]
cache = Path("/work/tmp/s23/fcache")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
flat = gsu.index.FlatIndex(ds.x.shape[1], ds.metric); flat.add(ds.x)
q = ds.q
for sel in sels:
    rng = np.random.default_rng(123)
    allowed = make_filters(ds, kind, sel, rng)
    truth = flat.search(q, 10, filter=Filter.per_query(allowed))
    ex = [idx.explain(q[i], 10, filter=allowed[i]) for i in range(len(allowed))]
    routes = np.bincount(np.concatenate([e.routes for e in ex]), minlength=3).tolist()
    res = [idx.search(q[i], 10, filter=allowed[i]) for i in range(len(allowed))]
    rec = np.mean([len(set(res[i].ids[0]) & set(truth.ids[i][truth.ids[i] >= 0])) / max(1, min(10, (truth.ids[i] >= 0).sum())) for i in range(len(allowed))])
    ts = []
    for rep in range(9):
        t0 = time.perf_counter()
        for i in range(len(allowed)):
            idx.search(q[i], 10, filter=allowed[i])
        ts.append((time.perf_counter() - t0) / len(allowed) * 1e6)
    print(json.dumps({"data": name, "kind": kind, "sel": sel, "sel_real": float(np.mean([a.shape[0] for a in allowed]) / ds.x.shape[0]),
                      "routes": routes, "recall": round(float(rec), 4), "us": round(float(np.median(ts)), 1)}))
