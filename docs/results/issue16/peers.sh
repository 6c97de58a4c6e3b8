#!/bin/bash
# issue 16 figures: 100K twice (run-to-run spread), then 1M once if asked
cd /work/wt/speed2
export OMP_NUM_THREADS=1 PYTHONPATH=$PWD
for r in ${RUNS:-1 2}; do
  echo "start 100K run $r $(date -u +%T) $(cat /proc/loadavg)" >> runs/peers.uptime
  nice -n 10 /work/main/.venv/bin/python -m isr.app.cli bench --peers --sizes 100000 --workdir runs/bench --out runs/peers100k-$r --queries 200 --threads 1 --build-threads 1 > runs/peers100k-$r.log 2>&1
  echo "end 100K run $r $(date -u +%T) $(cat /proc/loadavg) rc=$?" >> runs/peers.uptime
done
