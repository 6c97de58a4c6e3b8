"""Shim: `python eval/table2.py ...` is `isr eval table2 ...` (kept so the documented command works)."""

from isr.app.eval_cli import table2

if __name__ == "__main__":
    table2(prog_name="python eval/table2.py")
