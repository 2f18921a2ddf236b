#!/bin/bash
cd /work/wt/ctr
export GSU_CTR_CACHE=/work/cache/ctr PYTHONPATH=/work/wt/ctr
PY=/work/main/.venv/bin/python
R=/work/wt/ctr/results
run() { /work/tools/cpu-shared $PY /work/cache/ctr/run_one.py $R "$@"; }
for m in soft eta twin muse last hard; do run synthetic $m 256; done
echo ALL DONE
