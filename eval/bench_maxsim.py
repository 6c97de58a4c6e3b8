"""Shim: `python eval/bench_maxsim.py ...` is `isr eval bench-maxsim ...` (kept so the documented command works)."""

from isr.app.eval_cli import bench_maxsim

if __name__ == "__main__":
    bench_maxsim(prog_name="python eval/bench_maxsim.py")
