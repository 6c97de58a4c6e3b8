#!/bin/bash
# Table 2 seed 1 (issue 13): same world / config as session 3's (cfg_fix.json) with seed 1.
cd /work/main
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CFG=$(cat /tmp/enc15/cfg_s1.json)
echo "start $* $(date -u +%T) $(uptime)"
args=(); for r in "$@"; do args+=(--row "$r"); done
nice -n 10 .venv/bin/python eval/table2.py --data /tmp/enc13/w1500 --out /tmp/enc15/t2s1 --config "$CFG" --total-epochs 6 --threads 1 --val-images 200 --no-eval "${args[@]}"
echo "done $* $(date -u +%T) $(uptime)"
