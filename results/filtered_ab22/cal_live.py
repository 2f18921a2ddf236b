"""Calibration's live arrays at the start of the correlated draw of one grid point (argv[1], its rows), on the
saved 10^6 x 96 index: tracemalloc snapshot, the decoded-row blocks by size, the filter sets alive and what refers to them."""
import sys, tracemalloc, gc
import numpy as np
import gsu.index
from gsu.index import _calibrate as C, filtered as F
tracemalloc.start(12)
def rss():
    with open("/proc/self/status") as fh:
        for l in fh:
            if l.startswith("VmRSS"):
                return int(l.split()[1]) / 1024
odf = C.draw_filters
hit = [0]
def df(idx, kind, m, *a, **k):
    if kind == "correlated" and m == int(sys.argv[1]) and not hit[0]:
        hit[0] = 1
        gc.collect()
        snap = tracemalloc.take_snapshot()
        print("rss", rss(), "traced", tracemalloc.get_traced_memory())
        from collections import Counter
        sizes = Counter()
        for tr in snap.traces:
            if any("bitmap64_rows" in (f.filename + str(f.lineno)) or f.lineno == 212 and f.filename.endswith("_calibrate.py") for f in tr.traceback):
                fr = [f"{f.filename.split('/')[-1]}:{f.lineno}" for f in tr.traceback]
                sizes[(tr.size, tuple(fr[-6:]))] += 1
        for (sz, fr), c in sorted(sizes.items()):
            print(sz, c, fr)
        for o in gc.get_objects():
            if isinstance(o, (C._Sets, C._Compiled)):
                d = getattr(o, "_decoded", {})
                print(type(o).__name__, len(o), "decoded", len(d), sum(v.nbytes for v in d.values()) if d else 0)
                for r in gc.get_referrers(o):
                    if isinstance(r, dict):
                        print("   dict keys", list(r.keys())[:8])
                        for rr in gc.get_referrers(r):
                            print("      ", type(rr), getattr(rr, "__name__", "") or getattr(getattr(rr, "f_code", None), "co_name", ""))
                    else:
                        print("   ", type(r), getattr(getattr(r, "f_code", None), "co_name", ""), getattr(r, "cell_contents", None).__class__ if type(r).__name__=="cell" else "")
        for st in snap.statistics("traceback")[:14]:
            print("%.1f MB %d blocks" % (st.size / 2**20, st.count))
            for line in [l for l in st.traceback.format() if "File" in l][-4:]:
                print("   ", line)
    return odf(idx, kind, m, *a, **k)
C.draw_filters = df
idx = gsu.index.load("/work/tmp/s22/bcache/build_files/gsu_clustered_1000000x96_M32_efc200.gsu", mmap=False)
print("after load rss", rss(), tracemalloc.get_traced_memory())
lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
idx.calibrate(max_seconds=lim * 4)
