#!/bin/sh
# The filtered suite (gsu and every peer, fresh filters, one thread, gsu built fresh with its build timed once)
# on generated sets outside it: sh unseen_speed.sh DATADIR OUTDIR N SEED NAME... (files from unseen_files.py)
data=$1; out=$2; n=$3; seed=$4; shift 4
for s in "$@"; do
  case $s in l2gauss|uniform|scales) m=l2;; mips|signs|curve) m=ip;; *) m=cosine;; esac
  .venv/bin/python -m gsu.bench.filtered --data "$data/${s}_n${n}_s${seed}.npy?queries=$data/${s}_n${n}_s${seed}_q.npy&metric=$m" \
    --build-time --build-repeats 1 --out "$out/$s" --cache "$out/cache"
done
