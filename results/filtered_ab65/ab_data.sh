# Stop 65's A/B on a data-set SPEC: the commit before the change (a git worktree at /work/tmp/s65/base) against the
# working tree, alternating processes, results/filtered_ab64/cells_data.py for each (median µs of 100 fresh-filter searches,
# a hash of the answers, recall@10 against the exact route).
# sh ab.sh OUTDIR ROUNDS SPEC CACHE cells...   (base worktree vs main, alternating)
out=$1; rounds=$2; spec=$3; cache=$4; shift 4
for r in $(seq 1 $rounds); do
  PYTHONPATH=/work/tmp/s65/base /work/main/.venv/bin/python /work/main/results/filtered_ab64/cells_data.py $out/base_$r.json "$spec" $cache "$@" > /dev/null
  PYTHONPATH=/work/main /work/main/.venv/bin/python /work/main/results/filtered_ab64/cells_data.py $out/main_$r.json "$spec" $cache "$@" > /dev/null
done
/work/main/.venv/bin/python - $out $rounds <<'PY'
import json, sys, numpy as np
out, R = sys.argv[1], int(sys.argv[2])
b = [json.load(open(f"{out}/base_{r}.json"))["cells"] for r in range(1, R + 1)]
m = [json.load(open(f"{out}/main_{r}.json"))["cells"] for r in range(1, R + 1)]
for c in b[0]:
    tb = [x[c][0] for x in b]; tm = [x[c][0] for x in m]
    same = all(x[c][1] == b[0][c][1] for x in b + m)
    print(f"{c:18s} base {np.median(tb):7.2f} main {np.median(tm):7.2f} ratio {np.median(tb)/np.median(tm):.3f} same {same} rec {m[0][c][2]:.3f}")
PY
