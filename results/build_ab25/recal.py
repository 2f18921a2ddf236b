import sys, time, json, logging
import numpy as np
import gsu.index
from gsu.bench import harness
logging.basicConfig(level=logging.INFO)
harness.pin_threads(2)
src, dst, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
idx = gsu.index.load(src, mmap=False)
old = idx.calibration
t0 = time.perf_counter()
cal = idx.calibrate(max_seconds=secs, progress=False)
print("calibrate s", time.perf_counter() - t0, "complete", cal.complete, flush=True)
for c in (old, cal):
    for p in c.points:
        if p["s"] in (0.1, 0.3, 0.5, 0.7, 1.0):
            h = [(e[0], [round(x, 3) for x in e[1]], [round(x, 3) for x in e[3]]) for e in p["hnsw"]]
            print(p["s"], "nq", p["nq"], "hnsw", h)
    print("settings", c.settings)
idx.save(dst)
