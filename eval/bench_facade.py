"""Shim: `python eval/bench_facade.py ...` runs `isr.eval.bench_facade` (kept so the documented command works)."""

from isr.eval.bench_facade import main

if __name__ == "__main__":
    main()
