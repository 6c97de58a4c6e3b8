"""Shim: `python eval/bench_ingest.py ...` is `isr eval bench-ingest ...` (kept so the documented command works)."""

from isr.app.eval_cli import bench_ingest

if __name__ == "__main__":
    bench_ingest(prog_name="python eval/bench_ingest.py")
