"""The timing phase of `gsu bench ctr` on the record synthetic task (run under cpu-exclusive)."""
import json, sys
from pathlib import Path
from gsu.bench import harness
from gsu.bench.ctr import SYNTHETIC, _cache_dir, _latency
from gsu.ctr.data import synthetic_task
pinned = harness.pin_threads(1)
out = Path(sys.argv[1])
task = synthetic_task(**SYNTHETIC, cache_dir=_cache_dir())
lat = _latency(task, out, quick=False)
with open(out / "ctr_latency.jsonl", "w") as f:
    for r in lat:
        f.write(json.dumps({**r, "pinned": pinned, "machine": harness.machine_info()}) + "\n")
print("done")
