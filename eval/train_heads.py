"""Shim: `python eval/train_heads.py ...` runs `isr.eval.train_heads` (the keyword-head stage)."""

from isr.eval.train_heads import main

if __name__ == "__main__":
    main()
