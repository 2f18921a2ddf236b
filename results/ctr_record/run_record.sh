#!/bin/bash
# The record run of `gsu bench ctr` (phase train), one (method, k) per CPU-lock acquisition so
# that other jobs' exclusive timings interleave; resumable (finished runs are skipped).
# usage: run_record.sh SRC OUT   (SRC: a snapshot of the gsu sources; OUT: the records folder)
SRC=$1; OUT=$2
cd /work/wt/ctr2   # ../shared/datasets is reached from here
export GSU_CTR_CACHE=/work/cache/ctr PYTHONPATH=$SRC
PY=/work/main/.venv/bin/python
run() { echo "== $(date +%T) $*"; /work/tools/cpu-shared $PY $SRC/results/ctr_record/run_one.py $OUT "$@" || echo "FAILED: $*"; }
for m in last hard soft muse eta twin sdim; do run synthetic $m 64; done
for m in full last hard soft muse eta sdim twin; do run movielens $m 64; done
for m in last hard soft muse eta twin; do run synthetic $m 16; done
for m in last hard soft muse eta twin; do run synthetic $m 256; done
echo ALL DONE $(date +%T)
