"""The index configuration and `manifest.json`, the file that says what an index directory holds.

Entry points: :class:`IndexConfig` (frozen, validated at construction) and
:func:`write_manifest` / :func:`read_manifest`. The manifest is written atomically
(temp file, fsync, rename) and mirrors the committed counts; the document table's
`meta` rows are the source of truth for those counts (see docs/architecture.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound
from isr.plugin.keyword_rule import check_keyword_options
from isr.plugin.store.codecs import CODECS
from isr.plugin.store.durable import atomic_write_bytes

__all__ = [
    "FRAGMENT_HOMES",
    "HINTS",
    "MANIFEST",
    "SCHEMA_VERSION",
    "IndexConfig",
    "index_name_problem",
    "read_manifest",
    "write_manifest",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODALITIES = ("image", "text")
FAST_STORAGE = ("flat", "sq8")
FRAGMENT_HOMES = ("sidecar", "rank_vectors")  # where an Elasticsearch index keeps fragments
INDEX_NAME_FORBIDDEN = frozenset('\\/*?"<>| ,#:')  # refused in Elasticsearch index names
MAX_INDEX_NAME_BYTES = 255
HINTS = frozenset({"bundle_path", "keywords"})  # recorded, not settings an index is checked against


def index_name_problem(name: str) -> str:
    """Why `name` cannot name an index ("" when it can): Elasticsearch's rules, applied to
    every index name isr takes (the loader's URL, the CLI, the facade's paths, where they also
    keep a name inside the facade's index root)."""
    bad = sorted(set(name) & INDEX_NAME_FORBIDDEN)
    if not name:
        return "index names are not empty"
    if name != name.lower():
        return "index names are lowercase"
    if bad:
        return f"index names cannot contain {' '.join(repr(c) for c in bad)}"
    if name[0] in "-_+":
        return "index names cannot start with '-', '_' or '+'"
    if name in (".", ".."):
        return "index names cannot be '.' or '..'"
    if len(name.encode()) > MAX_INDEX_NAME_BYTES:
        return f"index names are at most {MAX_INDEX_NAME_BYTES} bytes"
    return ""


@dataclass(frozen=True)
class IndexConfig:
    """What an index stores; fixed when the index is created.

    d_fast: dims of the fast vector (model F); d_frag, max_frags: fragment dims and the
    most fragments kept per document (model B); codec: fragment codec; r_i: keywords stored
    per document (the paper's R_I); hnsw_*: FAISS HNSW build parameters of the fast-vector index (the search
    breadth, efSearch, is per query: SearchOptions.num_candidates, as in Elasticsearch);
    fast_storage: "flat" (float32) or "sq8" vectors inside HNSW; bundle_fingerprint: the
    encoder bundle the index was filled with ("" when filled with pre-encoded data);
    stored_fields: `_source` fields kept but never indexed for filters (free text such as
    captions, like Elasticsearch's `"index": false`).
    keywords: the index's default keyword options (KeywordOptions fields, e.g. {"text":
    "merge", "rule": "cost", "r_i": 5}), used for what a query does not name; a query-time
    setting, so not compared by check_compatible.

    bundle_path: where the bundle of `bundle_fingerprint` was when the index was created (""
    when unknown): a hint for `isr serve`, which loads each index's own bundle. The
    fingerprint is the check; the path is not compared (:data:`HINTS`), so a moved bundle
    does not make the index another one.
    """

    d_fast: int
    d_frag: int
    max_frags: int = 32
    codec: str = "fp16"
    modality: str = "image"
    r_i: int = 15
    hnsw_m: int = 16  # Elasticsearch's defaults (m 16, ef_construction 100)
    hnsw_ef_construction: int = 100
    fast_storage: str = "flat"
    bundle_fingerprint: str = ""
    stored_fields: tuple[str, ...] = ()
    # -- keyword screen defaults (issue 12) --
    keywords: dict[str, Any] = field(default_factory=dict)
    # -- where the bundle is (photos, issue 17) --
    bundle_path: str = ""

    def __post_init__(self) -> None:
        self._check_keywords()
        object.__setattr__(self, "stored_fields", tuple(self.stored_fields))  # JSON gives a list
        if not all(isinstance(f, str) and f for f in self.stored_fields):
            raise InvalidInput(
                f"index config: stored_fields must be field names, got {self.stored_fields!r}"
            )
        for name in ("d_fast", "d_frag", "r_i", "hnsw_m", "hnsw_ef_construction"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise InvalidInput(f"index config: {name} must be a positive integer, got {v!r}")
        if not isinstance(self.max_frags, int) or not 1 <= self.max_frags <= 64:
            raise InvalidInput(
                f"index config: max_frags must be in [1, 64], got {self.max_frags!r}"
            )
        if self.codec not in CODECS:
            raise InvalidInput(f"index config: codec {self.codec!r} is not one of {CODECS}")
        if self.modality not in MODALITIES:
            raise InvalidInput(
                f"index config: modality {self.modality!r} is not one of {MODALITIES}"
            )
        if not isinstance(self.bundle_path, str):
            raise InvalidInput(
                f"index config: bundle_path must be a path string, got {self.bundle_path!r}"
            )
        if self.fast_storage not in FAST_STORAGE:
            raise InvalidInput(
                f"index config: fast_storage {self.fast_storage!r} is not one of {FAST_STORAGE}"
            )

    def _check_keywords(self) -> None:
        if not isinstance(self.keywords, dict):
            raise InvalidInput(
                f"index config: keywords must be an object of keyword options, got {self.keywords!r}"
            )
        object.__setattr__(self, "keywords", dict(self.keywords))  # not the caller's dict
        check_keyword_options(self.keywords, "index config: keywords")
        r_i = self.keywords.get("r_i")
        if isinstance(self.r_i, int) and r_i is not None and r_i > self.r_i:
            raise InvalidInput(
                f"index config: keywords.r_i {r_i} is above the stored r_i {self.r_i}"
            )
        msm, r_t = self.keywords.get("minimum_should_match", 1), self.keywords.get("r_t", 3)
        if msm > r_t:
            raise InvalidInput(
                f"index config: keywords.minimum_should_match {msm} is above r_t {r_t}"
            )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise CorruptIndex(f"index config: unknown keys {sorted(unknown)}")
        return cls(**data)

    def check_compatible(self, other: IndexConfig) -> None:
        """Raise Conflict naming every stored setting that `other` contradicts."""
        diffs = [
            f"{f.name}: index has {getattr(self, f.name)!r}, asked for {getattr(other, f.name)!r}"
            for f in fields(self)
            if f.name not in HINTS and getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise Conflict("index settings differ: " + "; ".join(diffs))


def write_manifest(path: Path, config: IndexConfig, state: dict[str, Any]) -> None:
    body = {"schema_version": SCHEMA_VERSION, "config": config.to_json(), **state}
    atomic_write_bytes(path / MANIFEST, (json.dumps(body, indent=2) + "\n").encode())


def read_manifest(path: Path) -> tuple[IndexConfig, dict[str, Any]]:
    file = path / MANIFEST
    if not file.exists():
        raise NotFound(f"no isr index at {path} ({MANIFEST} missing)")
    try:
        body = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndex(f"{file}: not valid JSON ({e})") from e
    if not isinstance(body, dict) or "config" not in body:
        raise CorruptIndex(f"{file}: no 'config' section")
    version = body.pop("schema_version", None)
    if version != SCHEMA_VERSION:
        raise Conflict(f"{file}: schema version {version}, this isr reads {SCHEMA_VERSION}")
    return IndexConfig.from_json(body.pop("config")), body
