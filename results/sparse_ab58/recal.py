import sys, time, json, numpy as np
from gsu.bench import harness
from gsu.index import load
C, C2 = "/work/tmp/s58/sp100/cache", "/work/tmp/s58/sp100/cache2"
for name in sys.argv[1].split(","):
    g = load(f"{C}/gsu_{name}.gsu", mmap=False)
    prev = g.calibration
    with harness.all_threads():
        t0 = time.perf_counter()
        g.calibrate(target_recall=prev["target_recall"], k=prev["k"], max_seconds=60.0)
        dt = time.perf_counter() - t0
    fc = g.calibration.get("filtered")
    print(name, f"recalibrated in {dt:.1f}s, filtered part {fc and fc['seconds']}s complete={fc and fc['complete']}", flush=True)
    for e in g.filter_plan(): print("   ", e)
    g.save(f"{C2}/gsu_{name}.gsu")
