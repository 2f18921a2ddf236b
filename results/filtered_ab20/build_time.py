"""Fresh builds (calibration included) against faiss IndexHNSWFlat alone, every data set of the
filtered suite, both cores (gsu.bench.filtered.build_time, without the search cells)."""
import json, sys
from pathlib import Path
from gsu.bench.filtered import build_time
from gsu.bench.filtered_data import DATASETS, load_dataset
out = Path(__file__).with_name("build_time.jsonl")
for name in (sys.argv[1].split(",") if len(sys.argv) > 1 else DATASETS):
    ds = load_dataset(name, Path("/work/tmp/cache"), quick=False, nq=100, seed=0)
    rec, idx = build_time(ds, quick=False)
    del idx
    print(f"{name}: gsu {rec['gsu_s']:.1f}s (calibration {rec['gsu_calibration_s']:.1f}s) vs faiss {rec['faiss_hnsw_s']:.1f}s = {rec['ratio']:.2f}x", flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
