"""The planted click model on only the behaviors each GSU retrieved (test split of the record
task): `retrieval_oracle.py OUT.jsonl`. Uses the retrieved positions cached by the record run
(GSU_CTR_CACHE/views) and computes the exact top-k (k = 16, 64, 256) and last-k directly."""
import json, sys, time
from pathlib import Path
import numpy as np
from gsu.bench import harness
from gsu.bench.ctr import SYNTHETIC, _cache_dir
from gsu.ctr.data import synthetic_task, prefix_view, positions_view
from gsu.ctr.experiment import best_possible_auc, retrieval_oracle_auc, _task_key
from gsu.ctr.pipeline import LABELS
from gsu.retrieval.batch import retrieve_batch
from gsu.retrieval.methods import Exact

harness.pin_threads(1)
out = Path(sys.argv[1])
task = synthetic_task(**SYNTHETIC, cache_dir=_cache_dir())
tkey = _task_key(task)
oracle = best_possible_auc(task)
recs = []
def emit(method, k, view, source):
    t0 = time.perf_counter()
    a = retrieval_oracle_auc(task, view)
    r = {"kind": "retrieval_oracle", "dataset": "synthetic", "task": tkey, "method": method, "label": LABELS.get(method, method),
         "k": k, "source": source, "oracle_auc_on_retrieved": a, "oracle_auc": oracle, "lost": oracle - a,
         "mean_behaviors": view.mean_behaviors(), "n_test": len(view), "seconds": time.perf_counter() - t0}
    print(json.dumps(r), flush=True)
    recs.append(r)
emit("full", None, prefix_view(task, "test", cap=10_000), "every visible behavior")
idx = task.split("test"); s = task.samples
for k in (16, 64, 256):
    emit("last", k, prefix_view(task, "test", cap=k), "last k")
    res = retrieve_batch(Exact(task.item_tables["ctr"], k=k), task.store, s["user"][idx], s["target"][idx],
                         target_time=s["time"][idx], k=k)
    emit("exact", k, positions_view(task, "test", res.positions, res.mask), "exact top-k of the planted scores")
for f in sorted((_cache_dir() / "views").glob(f"{tkey}-*.npz")):
    parts = f.stem.split("-")
    method, k = parts[1], int(parts[2])
    if method == "sdim":
        continue
    z = np.load(f)
    emit(method, k, positions_view(task, "test", z["test_p"], z["test_m"]), f"cached retrieval {f.name}")
with open(out, "w") as fh:
    for r in recs:
        fh.write(json.dumps(r) + "\n")
