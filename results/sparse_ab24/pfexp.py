"""Seismic 1M: one variant of the kernel (PYTHONPATH picks the copy), in memory, (qc, hf) points, 300 queries, rounds -> median ms/query."""
import sys, time, os, json
import numpy as np
import gsu, gsu.index
from gsu.bench import harness
harness.pin_threads(1)
label = sys.argv[1]; rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
pts = [(3, 1.0), (4, 0.9)]
cache = "/work/tmp/s24/sp1m"
z = np.load(f"{cache}/data_rarity-1000000.npz")
import scipy.sparse as sp
Q = sp.csr_matrix((z["qd"], z["qi"], z["qp"]), shape=tuple(z["qs"]))
rows = [Q[i] for i in range(Q.shape[0])]
truth = np.load(f"{cache}/truth_rarity-1000000.npz")["ids"]
t = time.perf_counter()
g = gsu.index.load(f"{cache}/gsu_rarity-1000000.gsu", mmap=False)
print(label, gsu.__file__, "open %.1f s" % (time.perf_counter() - t), flush=True)
out = {}
for qc, hf in pts:
    res = [g.search(r, 10, query_cut=qc, heap_factor=hf) for r in rows]
    ids = np.concatenate([r.ids for r in res])
    rec = np.mean([len(set(ids[i][ids[i] >= 0]) & set(truth[i][truth[i] >= 0])) / 10 for i in range(len(rows))])
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        for r in rows:
            g.search(r, 10, query_cut=qc, heap_factor=hf)
        ts.append((time.perf_counter() - t) / len(rows) * 1e3)
    out[f"{qc},{hf}"] = (rec, float(np.median(ts)), [round(x, 4) for x in ts])
    print(label, qc, hf, "recall %.3f  ms %.4f  %s" % (rec, np.median(ts), [round(x, 3) for x in ts]), flush=True)
with open("/work/tmp/s24/pfexp.jsonl", "a") as f:
    f.write(json.dumps({"label": label, **out}) + "\n")
