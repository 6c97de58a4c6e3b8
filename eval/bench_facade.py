"""Shim: `python eval/bench_facade.py ...` is `isr eval bench-facade ...` (kept so the documented command works)."""

from isr.app.eval_cli import bench_facade

if __name__ == "__main__":
    bench_facade(prog_name="python eval/bench_facade.py")
