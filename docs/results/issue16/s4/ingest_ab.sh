#!/bin/sh
# Session 4: ingest of pre-encoded items at the defaults (fp16, flat HNSW), main's tree against
# this branch's, alternated (A B A B ...), one process each, same Parquet file; the CPU per
# document of the whole process (all threads) and the wall rate. usage: ingest_ab.sh n rounds main_tree
n=$1; rounds=$2; main=$3; here=$(cd "$(dirname "$0")/../../../.." && pwd); work=${WORK:-/tmp/s4ingest}
for r in $(seq "$rounds"); do
  for tree in "$main" "$here"; do
    printf '%s: ' "$tree"
    NOPROF=1 OMP_NUM_THREADS=2 PYTHONPATH=$tree nice -n 10 /work/main/.venv/bin/python \
      "$here/docs/results/issue16/s4/prof_ingest.py" "$n" "$work" 2 | head -2 | tr '\n' ' '; echo
  done
done
