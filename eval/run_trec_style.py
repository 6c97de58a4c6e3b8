"""Shim: `python eval/run_trec_style.py ...` runs `isr.eval.run_trec_style` (kept so the documented command works)."""

from isr.eval.run_trec_style import main

if __name__ == "__main__":
    main()
