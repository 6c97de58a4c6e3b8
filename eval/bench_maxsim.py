"""Shim: `python eval/bench_maxsim.py ...` runs `isr.eval.bench_maxsim` (kept so the documented command works)."""

from isr.eval.bench_maxsim import main

if __name__ == "__main__":
    main()
