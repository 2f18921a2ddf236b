import time, sys
import numpy as np
from pathlib import Path
from gsu.bench import harness
from gsu.bench.filtered import load_dataset, make_filters, _tag
import gsu.index
from gsu.index import Filter
harness.pin_threads(1)
name, kind, sel = sys.argv[1], sys.argv[2], float(sys.argv[3])
cache = Path("/work/tmp/s23/fcache")
ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
idx = gsu.index.load(cache / f"{_tag(ds, False, 0)}.gsu")
q = ds.q
allowed = make_filters(ds, kind, sel, np.random.default_rng(123))
nq = len(allowed)
cached = [Filter(a) for a in allowed]
T = time.perf_counter_ns
marks = {}
h = idx.hnsw
oc = h.compile_filter
def cfw(*a, **kw):
    marks["c0"] = T(); r = oc(*a, **kw); marks["c1"] = T(); return r
h.compile_filter = cfw
os_ = idx._search_one
def sw(*a, **kw):
    marks["s0"] = T(); r = os_(*a, **kw); marks["s1"] = T(); return r
idx._search_one = sw
acc = {}
def add(k, v): acc[k] = acc.get(k, 0) + v
for lab, fl in (("fresh", allowed), ("cached", cached)):
    for rep in range(8):
        if rep == 1: acc.clear()
        for i in range(nq):
            t0 = T(); idx.search(q[i], 10, filter=fl[i]); t1 = T()
            add("entry->compile", marks["c0"] - t0); add("compile", marks["c1"] - marks["c0"]); add("compile->search_one", marks["s0"] - marks["c1"])
            add("search_one", marks["s1"] - marks["s0"]); add("search_one->return", t1 - marks["s1"]); add("whole", t1 - t0)
    print(lab, " ".join(f"{k} {v/7/nq/1e3:.1f}" for k, v in acc.items()))
