"""Shim: `python eval/bench.py ...` runs `isr.eval.bench` (kept so the documented command works)."""

from isr.eval.bench import main

if __name__ == "__main__":
    main()
