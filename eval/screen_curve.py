"""Shim: `python eval/screen_curve.py ...` is `isr eval screen-curve ...` (the screen alone)."""

from isr.app.screen_cli import screen_curve_cmd

if __name__ == "__main__":
    screen_curve_cmd(prog_name="python eval/screen_curve.py")
