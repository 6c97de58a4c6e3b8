"""Fragment codecs: how one d-dim fragment becomes a fixed number of bytes and back.

Entry point: :func:`make_codec`. Three codecs, one class (:class:`FragmentCodec`):

- ``fp32``: the raw little-endian float32 bytes (4d bytes, lossless);
- ``fp16``: faiss ``QT_fp16`` (2d bytes; relative error <= 2**-11 in the normal range);
- ``sq8``:  faiss ``QT_8bit_uniform`` over the fixed range [-1, 1] (d bytes; absolute error
  <= 1/255 per component).

Fragments are L2-normalised, so every component lies in [-1, 1] and sq8 needs no data-dependent
training: its range is fixed, which keeps codes written by different processes comparable.
Values outside [-1, 1] are clipped by faiss (callers pass normalised vectors; nothing else is
checked here, :class:`isr.plugin.store.fragments.FragmentStore` validates at its entry).

:meth:`FragmentCodec.decode_torch` decodes on any torch device, so a CUDA scorer ships only the
compact codes over PCIe. It mirrors faiss's decode formulas: exact for fp32 and fp16 (half to
float is exact), and for sq8 ``vmin + ((code + 0.5) / 255) * vdiff`` in float32, the same
operation order as faiss's ``Codec8bit``/``QuantizerTemplate<Uniform>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import faiss
import numpy as np

from isr.errors import InvalidInput

if TYPE_CHECKING:  # torch is imported where a tensor is decoded: `isr index stats` needs none
    import torch

__all__ = ["CODECS", "FragmentCodec", "make_codec"]

CODECS: tuple[str, ...] = ("fp32", "fp16", "sq8")

# sq8's fixed range: components of L2-normalised vectors.
_VMIN = -1.0
_VDIFF = 2.0


class FragmentCodec:
    """Encode (N, d) float32 fragments to (N, code_size) uint8 codes and back.

    ``encode``/``decode`` accept any leading shape: (..., d) <-> (..., code_size).
    """

    def __init__(self, name: str, d: int) -> None:
        if name not in CODECS:
            raise InvalidInput(f"codec: unknown name {name!r}; valid codecs are {list(CODECS)}")
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
            raise InvalidInput(f"codec: dimension d must be a positive integer, got {d!r}")
        self.name = name
        self.d = int(d)
        self._sq: faiss.ScalarQuantizer | None = None
        if name == "fp32":
            self.code_size = 4 * self.d
        elif name == "fp16":
            self._sq = faiss.ScalarQuantizer(self.d, faiss.ScalarQuantizer.QT_fp16)
            self.code_size = int(self._sq.code_size)
        else:
            self._sq = faiss.ScalarQuantizer(self.d, faiss.ScalarQuantizer.QT_8bit_uniform)
            # RS_minmax training on one row of -1s and one of 1s sets trained = [vmin, vdiff]
            # = [-1, 2]: the fixed range, with no data dependence.
            self._sq.train(np.stack([np.full(self.d, -1.0), np.full(self.d, 1.0)]).astype("f4"))
            trained = faiss.vector_to_array(self._sq.trained)
            assert trained.tolist() == [_VMIN, _VDIFF], trained
            self.code_size = int(self._sq.code_size)
        assert self.code_size == {"fp32": 4, "fp16": 2, "sq8": 1}[name] * self.d

    def __repr__(self) -> str:
        return f"FragmentCodec(name={self.name!r}, d={self.d}, code_size={self.code_size})"

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(..., d) float -> (..., code_size) uint8. sq8 clips components to [-1, 1]."""
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise InvalidInput(
                f"codec {self.name}: expected vectors of dimension {self.d}, got shape {x.shape}"
            )
        lead = x.shape[:-1]
        flat = np.ascontiguousarray(x.reshape(-1, self.d), dtype="<f4")  # (N, d)
        if self._sq is None:
            codes = flat.view(np.uint8).copy()  # never alias the caller's array
        elif flat.shape[0] == 0:
            codes = np.empty((0, self.code_size), np.uint8)
        else:
            codes = self._sq.compute_codes(flat)
        return codes.reshape(*lead, self.code_size)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(..., code_size) uint8 -> (..., d) float32."""
        codes = np.asarray(codes)
        self._check_codes(codes.shape, codes.dtype == np.uint8, codes.dtype)
        lead = codes.shape[:-1]
        flat = np.ascontiguousarray(codes.reshape(-1, self.code_size))  # (N, code_size)
        if self.name == "fp32":
            out = flat.view("<f4").astype(np.float32, copy=True)
        elif self.name == "fp16":
            out = flat.view("<f2").astype(np.float32)
        elif flat.shape[0] == 0:
            out = np.empty((0, self.d), np.float32)
        else:
            assert self._sq is not None
            out = self._sq.decode(flat)
        return out.reshape(*lead, self.d)

    def affine(self) -> tuple[float, float] | None:
        """(a, b) with decode(c) = a * c + b for every component, or None (fp32, fp16).

        A scorer can then take dot products with the raw codes: q . decode(c) = a (q . c) +
        b sum(q), which skips the decode's arithmetic passes (the sq8 range is fixed).
        """
        if self.name != "sq8":
            return None
        return _VDIFF / 255.0, _VMIN + 0.5 * _VDIFF / 255.0

    def decode_torch(self, codes: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """(..., code_size) uint8 tensor -> (..., d) float32 tensor on the same device.

        Matches :meth:`decode` exactly for fp32 and fp16, and to float32 rounding for sq8.
        ``out``, a float32 tensor of the result's shape on the codes' device, receives the
        result: a CPU scorer reuses one buffer, since a fresh large tensor per chunk costs more
        in page faults than the decode itself.
        """
        import torch

        self._check_codes(tuple(codes.shape), codes.dtype == torch.uint8, codes.dtype)
        codes = codes.contiguous()
        shape = (*codes.shape[:-1], self.d)
        if out is not None and (
            tuple(out.shape) != shape or out.dtype != torch.float32 or out.device != codes.device
        ):
            raise InvalidInput(
                f"codec {self.name}: out must be float32 of shape {shape} on {codes.device}, "
                f"got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
        if self.name == "fp32":
            x = codes.view(torch.float32)
            return x if out is None else out.copy_(x)
        if self.name == "fp16":
            x = codes.view(torch.float16)
            return x.float() if out is None else out.copy_(x)
        # In place on the float tensor: the same float32 ops in the same order as faiss.
        x = codes.float() if out is None else out.copy_(codes)
        return x.add_(0.5).div_(255.0).mul_(_VDIFF).add_(_VMIN)

    def _check_codes(self, shape: tuple[int, ...], is_u8: bool, dtype: object) -> None:
        if not is_u8 or len(shape) < 1 or shape[-1] != self.code_size:
            raise InvalidInput(
                f"codec {self.name}: expected uint8 codes of width {self.code_size}, "
                f"got dtype {dtype} shape {shape}"
            )


def make_codec(name: str, d: int) -> FragmentCodec:
    """The codec called ``name`` (one of :data:`CODECS`) for d-dim fragments."""
    return FragmentCodec(name, d)
