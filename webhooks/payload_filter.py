"""Payload filters: which events an endpoint gets, by the values of the event's fields.

An endpoint may carry, besides its event types, a filter over the envelope (the
operator set Convoy documents), for example::

    {"data.object.status": "shipped", "data.object.amount": {"$gte": 1000}}

- A key is a dotted path into the envelope's JSON (``type``, ``tenant``, ``created``,
  ``data.object.amount``, ``data.items.0.sku``: a number indexes a list), or ``$and`` /
  ``$or`` with a list of filters. Several keys must all hold.
- A path's value is a literal (equal to it) or an object of operators, all of which must
  hold: ``$eq $neq $gt $gte $lt $lte $in $nin $exist $regex``.
- Comparisons follow JSON: numbers compare with numbers (``true`` is not ``1``), strings
  with strings; a comparison between other kinds, or with a missing field, is false
  (``$neq`` and ``$nin`` are then true, and ``$exist: false`` matches a missing field).
- ``$regex`` is RE2 syntax (linear time: a filter cannot stall the fanout), searched
  anywhere in a string value.

:func:`compile_filter` checks a filter (raising :class:`FilterError` naming the bad part)
and turns it into a predicate once per endpoint version; matching an event is then a
few dict lookups per clause, no parsing and never ``eval``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import re2

Predicate = Callable[[dict[str, Any]], bool]

MAX_CLAUSES = 50
MAX_DEPTH = 6
MAX_REGEX_LENGTH = 256
MAX_PATH_LENGTH = 256
_MISSING = object()
_COMPARISONS = ("$gt", "$gte", "$lt", "$lte")


class FilterError(ValueError):
    """A filter that cannot be compiled; the message names the bad part."""


def compile_filter(document: Any) -> Predicate:
    """The predicate of ``document`` over an envelope's JSON object (raises FilterError)."""
    counter = [0]
    return _compile(document, "filter", counter, depth=0)


def _compile(document: Any, where: str, counter: list[int], depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if not isinstance(document, dict) or not document:
        raise FilterError(f"{where}: must be a non-empty object")
    parts: list[Predicate] = []
    for key, value in document.items():
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise FilterError(f"{where}.{key}: must be a non-empty list of filters")
            subs = [_compile(item, f"{where}.{key}[{i}]", counter, depth + 1)
                    for i, item in enumerate(value)]
            parts.append(_all(subs) if key == "$and" else _any(subs))
        elif key.startswith("$"):
            raise FilterError(f"{where}: unknown operator {key} at the top of a filter "
                              "(use a field path, $and or $or)")
        else:
            parts.append(_field(key, value, f"{where}.{key}" if where != "filter" else key,
                                counter))
    return _all(parts)


def _field(path: str, condition: Any, where: str, counter: list[int]) -> Predicate:
    if len(path) > MAX_PATH_LENGTH or not all(path.split(".")):
        raise FilterError(f"{where}: not a dotted field path")
    steps = tuple(path.split("."))
    if isinstance(condition, dict) and any(k.startswith("$") for k in condition):
        if not all(k.startswith("$") for k in condition):
            raise FilterError(f"{where}: mixes operators and fields; use one or the other")
        tests = [_operator(op, operand, f"{where}.{op}", counter)
                 for op, operand in condition.items()]
    else:
        tests = [_operator("$eq", condition, where, counter)]
    if len(tests) == 1:
        [test] = tests
        return lambda doc: test(_lookup(doc, steps))
    both = _all(tests)  # the tests of one value, read once
    return lambda doc: both(_lookup(doc, steps))


def _operator(op: str, operand: Any, where: str, counter: list[int]) -> Callable[[Any], bool]:
    counter[0] += 1
    if counter[0] > MAX_CLAUSES:
        raise FilterError(f"filter: more than {MAX_CLAUSES} clauses")
    if op == "$eq":
        if isinstance(operand, str):  # the common case, checked the quick way
            return lambda value: type(value) is str and value == operand
        return lambda value: _equal(value, operand)
    if op == "$neq":
        return lambda value: not _equal(value, operand)
    if op in _COMPARISONS:
        if not _is_number(operand) and not isinstance(operand, str):
            raise FilterError(f"{where}: needs a number or a string")
        compare = _COMPARE[op]
        kinds = _NUMBERS if _is_number(operand) else (str,)
        return lambda value: type(value) in kinds and compare(value, operand)
    if op in ("$in", "$nin"):
        if not isinstance(operand, list):
            raise FilterError(f"{where}: needs a list")
        items = list(operand)
        if op == "$in":
            return lambda value: any(_equal(value, item) for item in items)
        return lambda value: not any(_equal(value, item) for item in items)
    if op == "$exist":
        if not isinstance(operand, bool):
            raise FilterError(f"{where}: needs true or false")
        return lambda value: (value is not _MISSING) == operand
    if op == "$regex":
        if not isinstance(operand, str) or len(operand) > MAX_REGEX_LENGTH:
            raise FilterError(f"{where}: needs a pattern of at most {MAX_REGEX_LENGTH} characters")
        try:
            pattern = re2.compile(operand)
        except re2.error as exc:
            raise FilterError(f"{where}: not a valid RE2 pattern ({exc})") from None
        return lambda value: isinstance(value, str) and pattern.search(value) is not None
    raise FilterError(f"{where}: unknown operator (use $eq $neq $gt $gte $lt $lte $in $nin "
                      "$exist $regex)")


def _lookup(document: Any, steps: tuple[str, ...]) -> Any:
    value = document
    for step in steps:
        if type(value) is dict:
            value = value.get(step, _MISSING)
            if value is _MISSING:
                return value
        elif isinstance(value, list) and step.isdigit() and int(step) < len(value):
            value = value[int(step)]
        else:
            return _MISSING
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(value: Any, operand: Any) -> bool:
    if value is _MISSING:
        return False
    # JSON: true is not 1, and 1 is 1.0.
    if isinstance(value, bool) or isinstance(operand, bool):
        return type(value) is type(operand) and value == operand
    return bool(value == operand)


_NUMBERS = (int, float)  # by exact type: bool (an int subclass) is not a number in JSON
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _all(parts: list[Predicate]) -> Predicate:
    # A chain of ``and``s: a few closures cost less than all() over a generator.
    first, *rest = parts
    if not rest:
        return first
    others = _all(rest)
    return lambda doc: first(doc) and others(doc)


def _any(parts: list[Predicate]) -> Predicate:
    first, *rest = parts
    if not rest:
        return first
    others = _any(rest)
    return lambda doc: first(doc) or others(doc)
