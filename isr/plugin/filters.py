"""User filters on `_source` fields: the Elasticsearch query-DSL subset the pipeline understands.

Entry point: :func:`parse_filter`, which turns a DSL dict (or a list of them, AND-ed) into a
small immutable tree, validating it where it enters. Supported clauses: `term`, `terms`,
`range`, `bool` (`filter`/`must` = AND, `should` = OR, `must_not` = NOT) and `match_all`.
Evaluation against stored fields lives in :mod:`isr.plugin.embedded.fields`.

Work per filter is bounded with Elasticsearch's own limits and names: `bool` nesting depth
(:data:`MAX_BOOL_DEPTH`, `indices.query.bool.max_nested_depth`), clauses in the whole tree
(:data:`MAX_CLAUSE_COUNT`, `indices.query.bool.max_clause_count`) and values of one `terms`
(:data:`MAX_TERMS_COUNT`, `index.max_terms_count`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isr.errors import InvalidInput

__all__ = [
    "MAX_BOOL_DEPTH",
    "MAX_CLAUSE_COUNT",
    "MAX_TERMS_COUNT",
    "And",
    "Filter",
    "MatchAll",
    "Not",
    "Or",
    "Range",
    "Term",
    "Terms",
    "parse_filter",
]

MAX_BOOL_DEPTH = 30  # Elasticsearch's indices.query.bool.max_nested_depth default
MAX_CLAUSE_COUNT = 4096  # indices.query.bool.max_clause_count
MAX_TERMS_COUNT = 65_536  # index.max_terms_count

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


class _Budget:
    """Clauses parsed so far in one filter (max_clause_count)."""

    def __init__(self) -> None:
        self.clauses = 0

    def take(self) -> None:
        self.clauses += 1
        if self.clauses > MAX_CLAUSE_COUNT:
            raise InvalidInput(
                f"too many clauses: more than {MAX_CLAUSE_COUNT} "
                "(indices.query.bool.max_clause_count)"
            )


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _parse_clause(clause: Any, depth: int = 0, budget: _Budget | None = None) -> Filter:
    budget = budget or _Budget()
    budget.take()
    if not isinstance(clause, dict) or len(clause) != 1:
        raise InvalidInput(f"filter clause must be an object with one key, got {_brief(clause)}")
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
            raise InvalidInput(f"terms on {field!r}: expected a non-empty list, got {_brief(spec)}")
        if len(spec) > MAX_TERMS_COUNT:
            raise InvalidInput(
                f"terms on {field!r}: {len(spec)} values, more than {MAX_TERMS_COUNT} "
                "(index.max_terms_count)"
            )
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
        if depth >= MAX_BOOL_DEPTH:
            raise InvalidInput(
                f"bool queries nested deeper than {MAX_BOOL_DEPTH} "
                "(indices.query.bool.max_nested_depth)"
            )
        return _parse_bool(body, depth + 1, budget)
    raise InvalidInput(f"unsupported filter clause {kind!r}; supported: {', '.join(SUPPORTED)}")


def _clauses(value: Any, where: str, depth: int, budget: _Budget) -> list[Filter]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InvalidInput(f"bool.{where}: empty list")
    return [_parse_clause(c, depth, budget) for c in items]


def _parse_bool(body: Any, depth: int, budget: _Budget) -> Filter:
    if not isinstance(body, dict):
        raise InvalidInput(f"bool: expected an object, got {_brief(body)}")
    bad = set(body) - {"filter", "must", "should", "must_not", "minimum_should_match"}
    if bad:
        raise InvalidInput(f"bool: unknown keys {sorted(bad)}")
    parts: list[Filter] = []
    for key in ("filter", "must"):
        if key in body:
            parts.extend(_clauses(body[key], key, depth, budget))
    if "should" in body:
        should = _clauses(body["should"], "should", depth, budget)
        msm = body.get("minimum_should_match", 1)
        if msm != 1:
            raise InvalidInput(f"bool: only minimum_should_match = 1 is supported, got {msm!r}")
        parts.append(should[0] if len(should) == 1 else Or(tuple(should)))
    if "must_not" in body:
        parts.extend(Not(c) for c in _clauses(body["must_not"], "must_not", depth, budget))
    if not parts:
        return MatchAll()
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse_filter(dsl: Any) -> Filter | None:
    """Parse a filter given as one DSL clause or a list of clauses (AND). None/[] -> None."""
    if dsl is None or dsl == []:
        return None
    budget = _Budget()
    if isinstance(dsl, list):
        parts = [_parse_clause(c, 0, budget) for c in dsl]
        return parts[0] if len(parts) == 1 else And(tuple(parts))
    return _parse_clause(dsl, 0, budget)


def fields_of(f: Filter) -> set[str]:
    """Every field a filter tree reads."""
    if isinstance(f, (Term, Terms, Range)):
        return {f.field}
    if isinstance(f, (And, Or)):
        return set().union(*(fields_of(c) for c in f.children))
    if isinstance(f, Not):
        return fields_of(f.child)
    return set()
