"""One (method, k) of a comparison, all seeds, resumable: `run_one.py OUT TASK METHOD K [SEEDS]`.

TASK: synthetic (the record task, 2,400 users) | synthetic-1x (1,200 users) | movielens.
Lets the CPU lock go between configurations (the driver wraps each call in cpu-shared)."""
import logging
import sys
from pathlib import Path

from gsu.bench import harness
from gsu.bench.ctr import MOVIELENS, SYNTHETIC, _cache_dir, train_config
from gsu.ctr.experiment import run_comparison

harness.pin_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for n in ("gsu.ctr.train", "numba", "gsu.ctr.checkpoint", "sentence_transformers", "httpx"):
    logging.getLogger(n).setLevel(logging.WARNING)
out, which, method, k = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
seeds = tuple(int(s) for s in (sys.argv[5] if len(sys.argv) > 5 else "0,1,2").split(","))
if which.startswith("synthetic"):
    from gsu.ctr.data import synthetic_task

    spec = dict(SYNTHETIC)
    if which == "synthetic-1x":
        spec["n_users"] //= 2
    task = synthetic_task(**spec, cache_dir=_cache_dir())
    task.name = which
    path = out / ("ctr_runs.jsonl" if which == "synthetic" else "ctr_runs_1x.jsonl")
else:
    from gsu.ctr.logtask import movielens_task

    task = movielens_task(MOVIELENS, titles=True, cache_dir=_cache_dir())
    path = out / "ctr_runs_movielens.jsonl"
methods = ("full",) if method == "full" else ("full", method)
run_comparison(task, methods=methods, ks=(k,), seeds=seeds, train_config=train_config(False),
               cache_dir=_cache_dir(), records_path=path, say=lambda s: print(s, flush=True))
