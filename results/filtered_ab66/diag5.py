"""Per-query µs of a build's own plan against the same build with IVF forced (walk and probe
thresholds off): python diag5.py SPEC INDEX.gsu kind:sel ... (stop 66 ran it on the unseen
l2gauss build, /work/tmp/ud/l2gauss_n50000_s3.npy?queries=..._q.npy&metric=l2, and on the suite
run's power-law build, gen:powerlaw-d32)."""
import sys, time, numpy as np
from gsu.index import load
from gsu.bench.filtered import make_filters
from gsu.bench.filtered_data import from_registry
ds = from_registry(sys.argv[1], nq=100, seed=0)
idx = load(sys.argv[2])
q = np.ascontiguousarray(ds.q[:100])
import dataclasses
idx.search(q[0], 10)
fit0 = idx._fits[None]
for cell in sys.argv[3:]:
    kind, sel = cell.split(":")
    allowed = make_filters(ds, kind, float(sel), np.random.default_rng(1))
    res = {}
    for name, kw in (("as_is", {}), ("ivf", {})):
        if name == "ivf":
            idx._fits = {None: dataclasses.replace(fit0, settings=dataclasses.replace(fit0.settings, hnsw_min_selectivity=2.0, probe_min_selectivity=2.0, even_hnsw_min_selectivity=None, even_probe_min_selectivity=None, run_hnsw_min_selectivity=None, run_probe_min_selectivity=None))}
        else:
            idx._fits = {None: fit0}
        ts = np.zeros(100)
        for rep in range(5):
            for i in range(100):
                t = time.perf_counter(); idx.search(q[i], 10, filter=allowed[i], **kw); ts[i] += time.perf_counter() - t
        routes = [idx.explain(q[i], 10, filter=allowed[i], **kw).route_names()[0] for i in range(100)]
        res[name] = (ts / 5 * 1e6, routes)
    a, b = res["as_is"], res["ivf"]
    for r in sorted(set(a[1])):
        sel_ = [i for i in range(100) if a[1][i] == r]
        print(cell, "worst as_is", np.round(np.sort(a[0][sel_])[-5:]), "ivf", np.round(np.sort(b[0][sel_])[-5:]))
        print(cell, "as_is route", r, len(sel_), "as_is µs %.1f" % np.median(a[0][sel_]), "ivf-forced µs %.1f" % np.median(b[0][sel_]), "mean %.1f vs %.1f" % (a[0][sel_].mean(), b[0][sel_].mean()))
