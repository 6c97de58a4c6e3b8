#!/bin/bash
cd /tmp/enc16
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/tmp/enc16/src  # a copy of isr/ at 932f3fa
echo "start $(date -u +%T) $(uptime)"
nice -n 10 /work/main/.venv/bin/python /tmp/enc16/flickr_run.py 12 "$@"
echo "end $(date -u +%T) $(uptime)"
