"""Calibration RSS over time with stage labels, on a saved index (argv[1]; default the 10^6 x 96 clustered
build; the random-vector logs ran it on gsu_random_1000000x96_M32_efc200.gsu)."""
import sys, time, threading, functools
import numpy as np
import gsu.index
from gsu.index import _calibrate as C, filtered as F
stage = ["load"]
samples = []
def rss():
    with open("/proc/self/status") as fh:
        for l in fh:
            if l.startswith("VmRSS"):
                return int(l.split()[1]) / 1024
stop = False
def sampler():
    while not stop:
        samples.append((time.perf_counter(), rss(), "/".join(stage)))
        time.sleep(0.005)
th = threading.Thread(target=sampler, daemon=True); th.start()
def wrap(mod, name):
    f = getattr(mod, name)
    @functools.wraps(f)
    def g(*a, **k):
        stage.append(name)
        try:
            return f(*a, **k)
        finally:
            stage.pop()
    setattr(mod, name, g)
odf = C.draw_filters
def df(idx, kind, m, *a, **k):
    g = odf(idx, kind, m, *a, **k)
    lab = "draw:%s:%d" % (kind, m)
    def it():
        while True:
            stage.append(lab)
            try:
                x = next(g)
            except StopIteration:
                return
            finally:
                stage.pop()
            yield x
    return it()
C.draw_filters = df
for nm in ["_away_flags", "_warm_up"]:
    wrap(C, nm)
# generator: wrap _Sets init instead
orig_init = C._Sets.__init__
def sinit(self, *a, **k):
    stage.append("Sets"); 
    try: orig_init(self, *a, **k)
    finally: stage.pop()
C._Sets.__init__ = sinit
ot = C._truth
def tr(*a, **k):
    stage.append("truth")
    try: return ot(*a, **k)
    finally: stage.pop()
C._truth = tr
orun = C._Timer.run
def trun(self, *a, **k):
    stage.append("timer%d" % a[2] if len(a) > 2 else "timer")
    try: return orun(self, *a, **k)
    finally: stage.pop()
C._Timer.run = trun
opart = C._Regions.partition
def tpart(self, *a, **k):
    stage.append("partition")
    try: return opart(self, *a, **k)
    finally: stage.pop()
C._Regions.partition = tpart
# grid point label
orig_run = C._run
idx = gsu.index.load(sys.argv[1] if len(sys.argv) > 1 else "/work/tmp/s22/bcache/build_files/gsu_clustered_1000000x96_M32_efc200.gsu", mmap=False)
stage[:] = ["cal"]
r0 = rss()
lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
idx.calibrate(max_seconds=lim)
stop = True; th.join()
print("rss before", r0)
# peak per stage
best = {}
prev = None
for t, r, s in samples:
    if prev is None or abs(r - prev) > 8:
        print("%7.2f %7.0f %s" % (t - samples[0][0], r, s)); prev = r
for t, r, s in samples:
    if r > best.get(s, (0,))[0]:
        best[s] = (r, t)
for s, (r, t) in sorted(best.items(), key=lambda x: -x[1][0])[:15]:
    print("%8.0f  %s" % (r, s))
