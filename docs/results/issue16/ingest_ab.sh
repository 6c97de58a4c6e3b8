#!/bin/bash
# alternate old (HEAD archive) and new (working tree), same process settings
N=${1:-10000}; T=${2:-1}
for r in 1 2; do
  for v in old new; do
    if [ $v = old ]; then D=/tmp/old_speed2; else D=/work/wt/speed2; fi
    (cd $D && PYTHONPATH=$D OMP_NUM_THREADS=$T nice -n 10 /work/main/.venv/bin/python /work/wt/speed2/runs/ingest_ab.py $N $v $T 2>/dev/null | tail -1)
  done
done
