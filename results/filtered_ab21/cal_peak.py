"""Calibration's peak memory on the saved 10^6 × 96 index (this stop's build): argv[1] base, twin16 (the
near-copy buffer at 16 MB) or noregion (three kinds), each in its own process, under the build's time limit."""
import sys, resource, time
import numpy as np
import gsu.index
from gsu.index import _calibrate as C, filtered as F
mode = sys.argv[1]
if mode == "noregion":
    C.KINDS = ("random", "correlated", "range")
if mode == "twin16":
    C._TWIN_BYTES = 16 << 20
def rss():
    with open("/proc/self/status") as fh:
        d = {l.split(":")[0]: int(l.split()[1]) / 1024 for l in fh if l.startswith(("VmRSS", "VmHWM"))}
    return d
idx = gsu.index.load("/work/tmp/s22/bcache/build_files/gsu_clustered_1000000x96_M32_efc200.gsu", mmap=False)
r0 = rss()
lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
t = time.perf_counter()
idx.calibrate(max_seconds=lim)
r1 = rss()
print(mode, "rss before %.0f, hwm before %.0f, hwm after %.0f (+%.0f), %.1f s" % (r0["VmRSS"], r0["VmHWM"], r1["VmHWM"], r1["VmHWM"] - r0["VmRSS"], time.perf_counter() - t), flush=True)
