"""A 10^6 x 96 FilteredIndex build (as gsu.bench.build builds it) with its resident memory sampled every 20 ms and
labelled by the phase running (IVF add, HNSW add, calibration, save). argv: vectors .npy, output file."""
import sys, time, threading, os
import numpy as np
from gsu.bench import harness
harness.pin_threads(2)
import faiss
import gsu.index
from gsu.index import FilteredIndex, _calibrate as C
from gsu.index.filtered import FilteredIndex as FI
stage = ["load"]; samples = []; stop = False
def rss(f="VmRSS"):
    with open("/proc/self/status") as fh:
        for l in fh:
            if l.startswith(f):
                return int(l.split()[1]) / 1024
def sampler():
    while not stop:
        samples.append((time.perf_counter(), rss(), "/".join(stage))); time.sleep(0.02)
threading.Thread(target=sampler, daemon=True).start()
def wrapm(obj, name, lab):
    f = getattr(obj, name)
    def g(*a, **k):
        stage.append(lab)
        try: return f(*a, **k)
        finally: stage.pop()
    setattr(obj, name, g)
from gsu.index import ivf as ivfm, hnsw as hnswm
wrapm(ivfm.IVFIndex, "add", "ivf.add")
wrapm(hnswm.HNSWIndex, "add", "hnsw.add")
wrapm(FI, "calibrate", "calibrate")
wrapm(FI, "save", "save")
x = np.load(sys.argv[1]); base = rss()
stage[:] = ["build"]
idx = FilteredIndex(x.shape[1], "ip", M=32, ef_construction=200)
idx.add(x)
idx.save(sys.argv[2])
stop = True
print("base", base, "hwm", rss("VmHWM"))
best = {}
for t, r, s in samples:
    if r > best.get(s, (0,))[0]: best[s] = (r, t)
for s, (r, t) in sorted(best.items(), key=lambda x: -x[1][0]): print("%8.0f %7.1f %s" % (r, t - samples[0][0], s))
prev = None
for t, r, s in samples:
    if prev is None or abs(r - prev) > 25:
        print("%7.2f %7.0f %s" % (t - samples[0][0], r, s)); prev = r
