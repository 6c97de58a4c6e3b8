"""isr: text-to-image search with Inflate-and-Shrink and keyword pre-screening."""

__version__ = "0.1.0"
