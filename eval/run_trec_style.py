"""Shim: `python eval/run_trec_style.py ...` is `isr eval trec ...` (kept so the documented command works)."""

from isr.app.eval_cli import trec

if __name__ == "__main__":
    trec(prog_name="python eval/run_trec_style.py")
