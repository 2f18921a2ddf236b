"""The scale step's side phase (gsu mapped, gsu in memory, pyseismic; one process, alternating), for the gsu on PYTHONPATH."""
import sys, json
from pathlib import Path
import numpy as np
import gsu
from gsu.bench import harness, sparse as S
harness.pin_threads(1)
label = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cache = Path("/work/tmp/s24/sp1m"); n = 1000000
docs, queries, ti, ts = S._scale_data(n, 300, 0, cache)
truth = S._Truth(docs, queries, ti, ts)
rows = [queries[i] for i in range(queries.shape[0])]
del docs
rec = S._side_phase(f"rarity-{n}", n, cache, queries, truth, rows, rounds)
rec["label"] = label; rec["gsu_file"] = gsu.__file__
print(json.dumps(rec))
with open("/work/tmp/s24/side.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
for p in rec["points"]:
    print("%s (%d, %.1f) recall gsu %.3f py %.3f | ms mapped %.4f memory %.4f py %.4f | ratio mapped %.2f memory %.2f" % (
        label, p["query_cut"], p["heap_factor"], p["recall_gsu"], p["recall_pyseismic"], p["ms_gsu-mapped"], p["ms_gsu-memory"],
        p["ms_pyseismic"], p["ratio_mapped"], p["ratio_memory"]))
