"""Per-query filtered sparse search at 10^6 documents (mode 2: a fresh Filter from a plain id array per
one-query call), the gsu on PYTHONPATH; alternating rounds in one process, median of rounds."""
import sys, json, time
from pathlib import Path
import numpy as np
import gsu
from gsu.index import Filter, load
from gsu.bench import harness, sparse as S
harness.pin_threads(1)
label = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cache = Path("/work/tmp/s24/sp1m"); n = 1000000
docs, queries, ti, ts = S._scale_data(n, 300, 0, cache)
del docs
nq = 200
rows = [queries[i] for i in range(nq)]
idx = load(cache / "gsu_rarity-1000000.gsu", mmap=False)
rng = np.random.default_rng(3)
out = {"label": label, "gsu_file": gsu.__file__}
for sel in (0.05, 0.2, 0.5):
    sets = [np.sort(rng.choice(n, int(sel * n), replace=False)) for _ in range(nq)]
    for i in range(10):
        idx.search(rows[i], 10, query_cut=3, heap_factor=1.0, filter=Filter(sets[i]))
    ts_ = []
    for r in range(rounds):
        t = time.perf_counter()
        res = [idx.search(rows[i], 10, query_cut=3, heap_factor=1.0, filter=Filter(sets[i])) for i in range(nq)]
        ts_.append((time.perf_counter() - t) / nq * 1e3)
    ids = np.concatenate([x.ids for x in res])
    ok = all(np.isin(ids[i][ids[i] >= 0], sets[i]).all() for i in range(nq))
    out[f"ms_{sel}"] = float(np.median(ts_))
    out[f"ids_sum_{sel}"] = int(ids.sum())
    print(label, sel, "ms/query median", round(float(np.median(ts_)), 4), "rounds", [round(x, 4) for x in ts_], "allowed-only", ok, flush=True)
with open("/work/tmp/s25/filt1m.jsonl", "a") as f:
    f.write(json.dumps(out) + "\n")
