# sh ab3.sh OUT ROUNDS SPEC MAXSEC cells...   (seed = round): base, away-only, main
out=$1; rounds=$2; spec=$3; maxsec=$4; shift 4
mkdir -p $out
for r in $(seq 1 $rounds); do
  for side in ${SIDES:-base away main}; do
    case $side in base) pp=/work/tmp/s66/base;; away) pp=/work/tmp/s66/away;; ivfonly) pp=/work/tmp/s66/ivfonly;; a1) pp=/work/tmp/s66/a1;; main) pp=/work/main;; esac
    PYTHONPATH=$pp /work/main/.venv/bin/python /work/tmp/s66/cal_ab.py $out/${side}_$r.json "$spec" ${CACHE:-/work/tmp/s66/cache} $maxsec $r "$@" > /dev/null 2>&1
  done
done
