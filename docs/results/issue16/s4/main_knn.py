"""main's FastIndex.compressed (31a90eb), kept for side-by-side runs (tune1m.py, ab1m.py)."""
import array
import numpy as np
from pyroaring import BitMap
from isr.plugin.embedded import fast_index
from isr.plugin.embedded.fast_index import KnnResult, _topk


def main_compressed(self, q, k, allowed, n_rows=None):
    """main's FastIndex.compressed (31a90eb), verbatim but for the names."""
    self.wait()
    n = self._rows(n_rows)
    allowed = self._below(allowed, n)
    pq = self.pq
    m = n if allowed is None else len(allowed)
    if pq is None or m == 0:
        return self.exact(q, k, allowed, n)
    g = min(pq.ntotal, n)
    q32 = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
    rows = np.empty(0, np.int64)
    if g > 0:
        w = int(min(max(fast_index.COMPRESSED_ALPHA * k * n / m, 2 * k + 64), fast_index.COMPRESSED_MAX_WINDOW, g))
        _, ids = pq.search(q32, w)
        ids = ids[0][(ids[0] >= 0) & (ids[0] < g)]
        if allowed is None:
            rows = np.sort(ids)
        else:
            window = BitMap(array.array("I", ids.astype(np.uint32).tobytes()))
            rows = np.asarray((window & allowed).to_array(), dtype=np.int64)
        in_copy = g if allowed is None else m - len(self._tail(allowed, g, n))
        if rows.shape[0] < min(k, in_copy):
            res = self.exact(q, k, allowed, n)
            return KnnResult(res.rows, res.scores, "compressed+exact")
    tail = self._tail(allowed, g, n)
    rows = np.concatenate([rows, tail])
    scores = self._dots(rows, q32[0])
    top = _topk(scores, k)
    return KnnResult(rows[top], scores[top], "compressed")
