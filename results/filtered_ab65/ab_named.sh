# Stop 65's A/B on the suite's named sets (results/filtered_ab62/cells.py, GSU_CELLS_CACHE the index files):
# the base worktree (/work/tmp/s65/base) against the working tree, alternating processes.
out=$1; rounds=$2; shift 2
for r in $(seq 1 $rounds); do
  GSU_CELLS_CACHE=/work/tmp/s62/cache_rec GSU_CELLS_RECALL=1 PYTHONPATH=/work/tmp/s65/base /work/main/.venv/bin/python /work/main/results/filtered_ab62/cells.py $out/base_$r.json "$@" > /dev/null
  GSU_CELLS_CACHE=/work/tmp/s62/cache_rec GSU_CELLS_RECALL=1 PYTHONPATH=/work/main /work/main/.venv/bin/python /work/main/results/filtered_ab62/cells.py $out/main_$r.json "$@" > /dev/null
done
/work/main/.venv/bin/python - $out $rounds <<'PY'
import json, sys, numpy as np
out, R = sys.argv[1], int(sys.argv[2])
b = [json.load(open(f"{out}/base_{r}.json")) for r in range(1, R + 1)]
m = [json.load(open(f"{out}/main_{r}.json")) for r in range(1, R + 1)]
cells = b[0]["cells"] if "cells" in b[0] else b[0]
get = lambda x: x["cells"] if "cells" in x else x
for c in get(b[0]):
    tb = [get(x)[c][0] for x in b]; tm = [get(x)[c][0] for x in m]
    same = all(get(x)[c][1] == get(b[0])[c][1] for x in b + m)
    print(f"{c:34s} base {np.median(tb):7.2f} main {np.median(tm):7.2f} ratio {np.median(tb)/np.median(tm):.3f} same {same}")
PY
