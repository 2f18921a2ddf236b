"""Recalibrate the suite's cached gsu indexes (built at 5e79a4c) with this code, as a build
calibrates (its own time limit, seed, every core); peers' files linked. argv: src dst."""
import sys, os, glob, time, shutil
from pathlib import Path
from gsu.bench import harness
import gsu.index
from gsu.index import filtered as F
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
for f in sorted(src.iterdir()):
    t = dst / f.name
    if t.exists() or t.is_symlink():
        continue
    if f.suffix == ".gsu":
        with harness.all_threads():
            idx = gsu.index.load(str(f), mmap=False)
            lim = max(F._CAL_MIN_SECONDS, F._CAL_SHARE * idx.build_seconds)
            t0 = time.perf_counter()
            idx.calibrate(max_seconds=lim)
            idx.save(str(t))
        st = idx.settings
        print(f.name, "limit %.1f s, took %.1f s" % (lim, time.perf_counter() - t0), flush=True)
    else:
        os.symlink(f, t)
