"""Read the next source batch in a background thread while the current one is encoded and
written.

Entry point: :class:`ReadAhead` (a context manager and an iterator). Decoding images (Pillow),
Parquet (pyarrow) and copying memory-mapped features release the GIL, and so do torch and
FAISS, so reading overlaps encoding and indexing. At most ``depth`` batches wait in the queue,
so memory stays bounded; an exception raised by the reader is raised again by ``next``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["ReadAhead"]

T = TypeVar("T")
_END = object()


class ReadAhead(Generic[T]):
    """Iterate ``it`` from a daemon thread, ``depth`` items ahead."""

    def __init__(self, it: Iterator[T], depth: int = 1) -> None:
        self._it = it
        self._q: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="isr-ingest-read", daemon=True)

    def _put(self, x: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self) -> None:
        try:
            for x in self._it:
                if not self._put(x):
                    break
            else:
                self._put(_END)
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)
        finally:
            close = getattr(self._it, "close", None)
            if close is not None:
                close()  # a generator left early releases its files now

    def __enter__(self) -> ReadAhead[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        x = self._q.get()
        if x is _END:
            self._q.put(_END)  # later calls stop too
            raise StopIteration
        if isinstance(x, BaseException):
            raise x
        return x  # type: ignore[return-value]
