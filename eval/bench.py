"""Shim: `python eval/bench.py ...` is `isr bench ...` (kept so the documented command works)."""

from isr.app.eval_cli import bench

if __name__ == "__main__":
    bench(prog_name="python eval/bench.py")
