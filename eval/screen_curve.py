"""Shim: `python eval/screen_curve.py ...` runs `isr.eval.screen_curve` (the keyword screen alone)."""

from isr.eval.screen_curve import _main

if __name__ == "__main__":
    _main()
