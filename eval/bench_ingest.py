"""Shim: `python eval/bench_ingest.py ...` runs `isr.eval.bench_ingest` (kept so the documented command works)."""

from isr.eval.bench_ingest import main

if __name__ == "__main__":
    main()
