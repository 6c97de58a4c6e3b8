"""User filters on `_source` fields: the Elasticsearch query-DSL subset the pipeline understands.

Entry point: :func:`parse_filter`, which turns a DSL dict (or a list of them, AND-ed) into a
small immutable tree, validating it where it enters. Supported clauses: `term`, `terms`,
`range`, `bool` (`filter`/`must` = AND, `should` = OR, `must_not` = NOT) and `match_all`.
Evaluation against stored fields lives in :mod:`isr.plugin.embedded.fields`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isr.errors import InvalidInput

__all__ = ["And", "Filter", "MatchAll", "Not", "Or", "Range", "Term", "Terms", "parse_filter"]

Scalar = str | int | float | bool
SUPPORTED = ("term", "terms", "range", "bool", "match_all")
RANGE_OPS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Term:
    field: str
    value: Scalar


@dataclass(frozen=True)
class Terms:
    field: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class Range:
    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class And:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    child: Filter


@dataclass(frozen=True)
class MatchAll:
    pass


Filter = Term | Terms | Range | And | Or | Not | MatchAll


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, (str, bool, int, float)) and not (
        isinstance(value, float) and value != value
    ):
        return value
    raise InvalidInput(f"{where}: value must be a string, number or boolean, got {value!r}")


def _single(body: Any, clause: str) -> tuple[str, Any]:
    if not isinstance(body, dict) or len(body) != 1:
        raise InvalidInput(f"{clause}: expected an object with exactly one field, got {body!r}")
    ((field, spec),) = body.items()
    if not isinstance(field, str) or not field:
        raise InvalidInput(f"{clause}: field name must be a non-empty string, got {field!r}")
    return field, spec


def _parse_clause(clause: Any) -> Filter:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise InvalidInput(f"filter clause must be an object with one key, got {clause!r}")
    ((kind, body),) = clause.items()
    if kind == "match_all":
        return MatchAll()
    if kind == "term":
        field, spec = _single(body, "term")
        if isinstance(spec, dict):
            if "value" not in spec:
                raise InvalidInput(f"term on {field!r}: object form needs 'value', got {spec!r}")
            spec = spec["value"]
        return Term(field, _scalar(spec, f"term on {field!r}"))
    if kind == "terms":
        field, spec = _single(body, "terms")
        if not isinstance(spec, list) or not spec:
            raise InvalidInput(f"terms on {field!r}: expected a non-empty list, got {spec!r}")
        return Terms(field, tuple(_scalar(v, f"terms on {field!r}") for v in spec))
    if kind == "range":
        field, spec = _single(body, "range")
        if not isinstance(spec, dict) or not spec:
            raise InvalidInput(f"range on {field!r}: expected bounds like {{'gte': 1}}, got {spec}")
        bad = set(spec) - set(RANGE_OPS)
        if bad:
            raise InvalidInput(f"range on {field!r}: unknown bounds {sorted(bad)}; use {RANGE_OPS}")
        bounds: dict[str, float] = {}
        for op, v in spec.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                raise InvalidInput(f"range on {field!r}: bound {op} must be a number, got {v!r}")
            bounds[op] = float(v)
        return Range(field, **bounds)
    if kind == "bool":
        return _parse_bool(body)
    raise InvalidInput(f"unsupported filter clause {kind!r}; supported: {', '.join(SUPPORTED)}")


def _clauses(value: Any, where: str) -> list[Filter]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InvalidInput(f"bool.{where}: empty list")
    return [_parse_clause(c) for c in items]


def _parse_bool(body: Any) -> Filter:
    if not isinstance(body, dict):
        raise InvalidInput(f"bool: expected an object, got {body!r}")
    bad = set(body) - {"filter", "must", "should", "must_not", "minimum_should_match"}
    if bad:
        raise InvalidInput(f"bool: unknown keys {sorted(bad)}")
    parts: list[Filter] = []
    for key in ("filter", "must"):
        if key in body:
            parts.extend(_clauses(body[key], key))
    if "should" in body:
        should = _clauses(body["should"], "should")
        msm = body.get("minimum_should_match", 1)
        if msm != 1:
            raise InvalidInput(f"bool: only minimum_should_match = 1 is supported, got {msm!r}")
        parts.append(should[0] if len(should) == 1 else Or(tuple(should)))
    if "must_not" in body:
        parts.extend(Not(c) for c in _clauses(body["must_not"], "must_not"))
    if not parts:
        return MatchAll()
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse_filter(dsl: Any) -> Filter | None:
    """Parse a filter given as one DSL clause or a list of clauses (AND). None/[] -> None."""
    if dsl is None or dsl == []:
        return None
    if isinstance(dsl, list):
        parts = [_parse_clause(c) for c in dsl]
        return parts[0] if len(parts) == 1 else And(tuple(parts))
    return _parse_clause(dsl)


def fields_of(f: Filter) -> set[str]:
    """Every field a filter tree reads."""
    if isinstance(f, (Term, Terms, Range)):
        return {f.field}
    if isinstance(f, (And, Or)):
        return set().union(*(fields_of(c) for c in f.children))
    if isinstance(f, Not):
        return fields_of(f.child)
    return set()
