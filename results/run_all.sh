#!/usr/bin/env bash
# The record runs, one suite after another on a quiet machine (nothing else running).
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
for s in flat lsh filtered sparse gsu; do
  echo "== $s $(date +%T)"
  /usr/bin/time -v gsu bench "$s" --out results > "results/${s}_run.log" 2> "results/${s}_time.log"
  echo "   rc=$? $(date +%T)"
done
