"""Build times only (no search suite): python builds.py OUT.jsonl [REPEATS] [SETS] — faiss IndexHNSWFlat and
FilteredIndex (calibration included) alternating, REPEATS each (default 3), every core; the suite's data sets from
GSU_CELLS_CACHE (default /work/tmp/s62/cache_rec)."""
import json, os, sys
from pathlib import Path
from gsu.bench.filtered import build_time
from gsu.bench.filtered_data import DATASETS, load_dataset
from gsu.bench import harness, runner

cache = Path(os.environ.get("GSU_CELLS_CACHE", "/work/tmp/s62/cache_rec"))
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(DATASETS)
with open(sys.argv[1], "w") as out:
    for name in names:
        ds = load_dataset(name, cache, quick=False, nq=100, seed=0)
        rec, idx = build_time(ds, quick=False, seed=0, repeats=reps)
        del idx
        rec.update(runner.provenance())
        rec["machine"] = harness.machine_info()
        out.write(json.dumps(rec) + "\n")
        out.flush()
        print(f"{name}: gsu {rec['gsu_s']:.1f}s (cal {rec['gsu_calibration_s']:.1f}s) vs faiss {rec['faiss_hnsw_s']:.1f}s = "
              f"{rec['ratio']:.2f}x; each {[round(r, 2) for r in rec['ratio_each']]}", flush=True)
