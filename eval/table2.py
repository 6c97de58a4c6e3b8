"""Shim: `python eval/table2.py ...` runs `isr.eval.table2` (kept so the documented command works)."""

from isr.eval.table2 import main

if __name__ == "__main__":
    main()
