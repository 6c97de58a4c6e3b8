"""PLAID as a peer of the peer benchmark, run in its own Python (``fast_plaid`` pins its torch).

:class:`PlaidPeer` starts :mod:`isr.eval.plaid_worker` under another interpreter (the one of
a virtual environment with ``fast_plaid``: docs/results/bench_peers.md), hands it the
gallery's fragments once (decoded from the store to float16, in a file under the work
directory) and then asks it one query at a time, so the benchmark's round-robin includes
PLAID: the parent sends query i when PLAID's turn comes, the worker answers with its top rows
and the CPU time its search took (every thread of the worker's process; the worker does
nothing else meanwhile). The index is built once per gallery and reused while its inputs'
fingerprint holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isr.errors import InvalidInput
from isr.plugin import EmbeddedIndex

__all__ = ["PlaidPeer", "PlaidSettings"]

WORKER = Path(__file__).with_name("plaid_worker.py")


@dataclass(frozen=True)
class PlaidSettings:
    """PLAID's knobs (fast_plaid's defaults: probe 8 centroids, 4,096 full scores, 4 bits)."""

    n_ivf_probe: int = 8
    n_full_scores: int = 4096
    nbits: int = 4

    def label(self) -> str:
        return f"probe {self.n_ivf_probe}, {self.n_full_scores} full scores, {self.nbits}-bit"


class PlaidPeer:
    def __init__(self, python: Path, workdir: Path, settings: PlaidSettings | None = None) -> None:
        if not Path(python).exists():
            raise InvalidInput(f"--plaid-python: no interpreter at {python}")
        self.settings = settings or PlaidSettings()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": ""}  # the worker imports nothing from isr
        self._p = subprocess.Popen(
            [str(python), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            env=env,
        )
        self.bytes = 0
        self.build_seconds = 0.0
        self.reused = False

    def _send(self, *msg: Any) -> None:
        assert self._p.stdin is not None
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        self._p.stdin.write(struct.pack("<Q", len(data)) + data)
        self._p.stdin.flush()

    def _call(self, *msg: Any) -> Any:
        assert self._p.stdout is not None
        self._send(*msg)
        head = self._p.stdout.read(8)
        if len(head) < 8:
            raise RuntimeError(f"the PLAID worker exited (code {self._p.poll()}); see its stderr")
        (n,) = struct.unpack("<Q", head)
        return pickle.loads(self._p.stdout.read(n))

    def build(self, index: EmbeddedIndex, progress: bool = True) -> None:
        """Write the gallery's fragments (float16) once and have the worker index them."""
        n, cfg = index.n_rows, index.config
        frags_npy = self.workdir / "fragments_f16.npy"
        lengths_npy = self.workdir / "lengths.npy"
        # the decoded copy names the index state it was made from (a gallery rebuilt under the
        # same name with as many rows must not reuse it)
        source = self.workdir / "source.json"
        state = json.dumps({"rows": n, "generation": index.generation})
        if not (frags_npy.exists() and lengths_npy.exists()) or (
            not source.exists() or source.read_text() != state
        ):
            mm = np.lib.format.open_memmap(
                frags_npy, mode="w+", dtype=np.float16, shape=(n, cfg.max_frags, cfg.d_frag)
            )
            lengths = np.zeros(n, dtype=np.int32)
            t0 = time.perf_counter()
            for i in range(0, n, 8192):
                rows = np.arange(i, min(n, i + 8192))
                f, m = index.fragments.gather(rows)
                mm[rows] = f.astype(np.float16)
                lengths[rows] = m.sum(1)
                if progress:
                    dt = time.perf_counter() - t0
                    print(
                        f"plaid: fragments {rows[-1] + 1:,}/{n:,} ({(rows[-1] + 1) / dt:,.0f}/s)",
                        file=sys.stderr,
                    )
            mm.flush()
            del mm
            np.save(lengths_npy, lengths)
            source.write_text(state)
        t0 = time.perf_counter()
        res = self._call(
            "build", str(self.workdir / "index"), str(frags_npy), str(lengths_npy),
            self.settings.nbits,
        )  # fmt: skip
        self.bytes, self.reused = int(res["bytes"]), bool(res["reused"])
        self.build_seconds = time.perf_counter() - t0

    def search(
        self, q: np.ndarray, qm: np.ndarray, top_k: int, subset: np.ndarray | None = None
    ) -> tuple[list[int], float]:
        """Rows of the best `top_k` and the worker's CPU seconds for the search."""
        qv = np.ascontiguousarray(q[qm.astype(bool)], dtype=np.float32)
        sub = None if subset is None else np.asarray(subset, dtype=np.int64).tolist()
        rows, cpu = self._call(
            "search", qv, top_k, self.settings.n_ivf_probe, self.settings.n_full_scores, sub
        )
        return list(rows), float(cpu)

    def close(self) -> None:
        if self._p.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):  # already gone: nothing to say
                self._send("quit")
            try:
                self._p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._p.kill()

    def __enter__(self) -> PlaidPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
