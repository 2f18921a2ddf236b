"""Recalibrate the suite's cached indexes the build-time way (max_seconds as a build) and save the copies."""
import sys, time, json, numpy as np
from pathlib import Path
from threadpoolctl import threadpool_limits
import gsu.index
from gsu.index import filtered as F
src, dst = Path("/work/tmp/s20/fcache3"), Path("/work/tmp/s21/fcache5")
for f in sorted(src.glob("*.gsu")):
    idx = gsu.index.load(str(f), mmap=False)
    st0 = idx.settings
    ms = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
    t = time.perf_counter()
    with threadpool_limits(1):
        cal = idx.calibrate(max_seconds=ms)
    st = idx.settings
    meas = {p["s"]: p.get("region_measured") for p in cal.points}
    print(f"{f.name.split('_')[0]}: cal {cal.seconds:.1f}s (limit {ms:.1f}) points {[p['s'] for p in cal.points]} region measured {meas}", flush=True)
    for name in ("bands", "band_ivf", "band_hnsw_ef", "band_even_ivf", "band_even_hnsw_ef", "band_away_ivf", "hnsw_min_selectivity",
                 "probe_min_selectivity", "exact_max_rows", "even_hnsw_min_selectivity", "even_probe_min_selectivity"):
        a, b = getattr(st0, name), getattr(st, name)
        print(f"   {name}: {a} -> {b}" if a != b else f"   {name}: {a}", flush=True)
    idx.save(str(dst / f.name))
