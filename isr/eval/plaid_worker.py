"""PLAID (``fast_plaid``) as a peer process for the peer benchmark: a standalone script.

``fast_plaid`` pins its own torch (2.11 for 1.7.0.2110), so it lives in its own virtual
environment (docs/results/bench_peers.md says how to make it) and this file runs there as a
plain script: it imports nothing from isr, only numpy, torch and fast_plaid. The parent
(:mod:`isr.eval.plaid_peer`) speaks to it over stdin/stdout with length-prefixed pickles:

- ``("build", index_dir, frags_npy, lengths_npy, nbits)``: builds a PLAID index from the
  documents' fragments (float16 ``(N, n, d)`` memory map, the first ``lengths[i]`` rows of each
  document real) unless ``index_dir`` already holds one built from the same inputs; answers
  ``{"seconds": ..., "bytes": ..., "reused": bool}``.
- ``("search", q, top_k, n_ivf_probe, n_full_scores, subset)``: one query ``(n_q, d)``
  float32; answers ``(doc_rows, cpu_seconds)``: the process's CPU time for the search alone
  (``time.process_time``: every thread this process runs, so a thread pool cannot hide work).
- ``("quit",)``.

One thread everywhere (torch, the Rust side's rayon pool, OpenMP): the benchmark compares one
core per query.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_v] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fast_plaid.search import FastPlaid  # noqa: E402

torch.set_num_threads(1)


def _read(stream: Any) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        return ("quit",)
    (n,) = struct.unpack("<Q", head)
    return pickle.loads(stream.read(n))


def _write(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _fingerprint(frags: np.ndarray, lengths: np.ndarray, nbits: int) -> str:
    h = hashlib.sha256()
    h.update(repr((frags.shape, str(frags.dtype), nbits)).encode())
    h.update(lengths.tobytes())
    step = max(1, len(frags) // 64)  # a sample of documents: a changed gallery changes these
    h.update(np.ascontiguousarray(frags[::step]).tobytes())
    return h.hexdigest()


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # fast_plaid's prints must not reach the pipe
    plaid: Any = None
    while True:
        msg = _read(inp)
        if msg[0] == "quit":
            return
        if msg[0] == "build":
            _, index_dir, frags_npy, lengths_npy, nbits = msg
            frags = np.load(frags_npy, mmap_mode="r")
            lengths = np.load(lengths_npy)
            fp = _fingerprint(frags, lengths, nbits)
            marker = Path(index_dir) / "isr_peer.json"
            t0 = time.perf_counter()
            reused = marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fp
            if reused:
                plaid = FastPlaid(index=index_dir, device="cpu")
            else:
                docs = [
                    torch.from_numpy(np.asarray(frags[i, : lengths[i]], dtype=np.float32))
                    for i in range(len(frags))
                ]
                plaid = FastPlaid(index=index_dir, device="cpu")
                plaid.create(documents_embeddings=docs, nbits=nbits)
                del docs
                marker.write_text(json.dumps({"fingerprint": fp}))
            _write(
                out,
                {
                    "seconds": time.perf_counter() - t0,
                    "bytes": _dir_bytes(Path(index_dir)),
                    "reused": reused,
                },
            )
        elif msg[0] == "search":
            _, q, top_k, probe, full, subset = msg
            qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))[None]
            kw: dict[str, Any] = {"subset": [list(subset)]} if subset is not None else {}
            c0 = time.process_time()
            res = plaid.search(
                queries_embeddings=qt,
                top_k=top_k,
                n_ivf_probe=probe,
                n_full_scores=full,
                show_progress=False,
                batch_size=1,
                **kw,
            )
            cpu = time.process_time() - c0
            _write(out, ([int(r) for r, _ in res[0]], cpu))
        else:
            _write(out, {"error": f"unknown message {msg[0]!r}"})


if __name__ == "__main__":
    main()
