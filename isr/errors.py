"""The exception hierarchy of isr; the HTTP facade maps each class to one status code."""

from __future__ import annotations


class IsrError(Exception):
    """Base class of every error isr raises on purpose."""


class InvalidInput(IsrError, ValueError):
    """A request, vector, document or option is malformed (HTTP 400)."""


class NotFound(IsrError, KeyError):
    """An index, document id or file does not exist (HTTP 404)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Conflict(IsrError):
    """The operation contradicts what is stored: dims, codec, bundle, a held lock (HTTP 409)."""


class CorruptIndex(IsrError):
    """Files on disk are damaged or inconsistent beyond what recovery may repair (HTTP 500)."""
