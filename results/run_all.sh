#!/usr/bin/env bash
# The record runs, one suite after another on a quiet machine (nothing else running).
# Usage: results/run_all.sh [suite ...]   (default: flat lsh filtered sparse gsu; ctr is run on its own)
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(flat lsh filtered sparse gsu)
for s in "${suites[@]}"; do
  echo "== $s $(date +%T)"
  /usr/bin/time -v gsu bench "$s" --out results > "results/${s}_run.log" 2> "results/${s}_time.log"
  echo "   rc=$? $(date +%T)"
done
