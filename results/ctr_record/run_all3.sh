#!/bin/bash
# the record runs, one configuration per lock acquisition (resumable: finished runs are skipped)
cd /work/wt/ctr
export GSU_CTR_CACHE=/work/cache/ctr PYTHONPATH=/work/wt/ctr
PY=/work/main/.venv/bin/python
R=/work/wt/ctr/results
run() { /work/tools/cpu-shared $PY /work/cache/ctr/run_one.py $R "$@"; }
run synthetic sdim 64
for k in 16 256; do
  for m in last hard soft muse eta twin; do run synthetic $m $k; done
done
run synthetic-2x full 64 0
for m in full last hard soft muse eta sdim twin; do run movielens $m 64 0; done
run synthetic-2x full 64 0,1,2
for m in full last hard soft muse eta sdim twin; do run movielens $m 64 0,1,2; done
echo ALL DONE
