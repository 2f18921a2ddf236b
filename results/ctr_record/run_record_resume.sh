#!/bin/bash
# Resumed record run, prioritised for a shared machine: one (method, k, seed) per CPU-lock
# acquisition; a run starts only if its estimated duration ends before END.
SRC=/work/cache/ctr2/src-54602c2; OUT=/work/cache/ctr2/results
END=$(date -u -d "09:20" +%s)
while kill -0 6484 2>/dev/null; do sleep 10; done   # the run already queued (muse 64 seed 0)
cd /work/wt/ctr2
export GSU_CTR_CACHE=/work/cache/ctr PYTHONPATH=$SRC
PY=/work/main/.venv/bin/python
run() {  # EST_SECONDS TASK METHOD K SEED
  local est=$1; shift
  if (( $(date +%s) + est > END )); then echo "SKIPPED (deadline): $*"; return; fi
  echo "== $(date -u +%T) $*"
  /work/tools/cpu-shared $PY $SRC/results/ctr_record/run_one.py $OUT "$@" || echo "FAILED: $*"
}
for s in 1 2; do for m in soft twin; do run 300 synthetic $m 64 $s; done; done
for m in hard sdim; do run 300 synthetic $m 64 0; done
for m in soft twin; do run 500 synthetic $m 256 0; done
for s in 1 2; do for m in eta muse; do run 300 synthetic $m 64 $s; done; done
for m in full soft twin last; do run 200 movielens $m 64 0; done
for m in soft twin eta; do run 250 synthetic $m 16 0; done
echo ALL DONE $(date -u +%T)
