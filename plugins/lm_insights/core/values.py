"""How a cell value reads in a row's text, and the version of that reading (part of every cache key)."""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import html
import json
import re

from lm_insights.spec import PipelineSpec

# Bump when format_value or the default template changes: it is part of every cache key.
SERIALIZER_VERSION = "2"  # 2: numbers in exact positional notation, NaN unknown
MISSING_VALUE = "unknown"
_WHITESPACE = re.compile(r"\s+")


def format_number(value: decimal.Decimal | float) -> str:
    """A number as its exact shortest text: ``1234567``, ``19.999999``, ``0.0001``; NaN is unknown.

    Positional notation for ordinary magnitudes (1e-6 to 1e16) so that the model reads digits; beyond them the
    shortest exponent form. Never rounded: two distinct values never share a text (and a cache entry).
    """
    number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(repr(value))
    if number.is_nan():
        return MISSING_VALUE
    if number.is_infinite():
        return "infinity" if number > 0 else "minus infinity"
    if number.is_zero():
        return "0"
    number = number.normalize()
    if decimal.Decimal("1e-6") <= abs(number) < decimal.Decimal("1e16"):
        return f"{number:f}"
    return f"{number:e}".replace("e+", "e")


def format_value(value: object) -> str:
    """One cell as text."""
    if value is None:
        return MISSING_VALUE
    if isinstance(value, decimal.Decimal | float):
        return format_number(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict | list):  # json, jsonb and arrays read as JSON, not as Python's repr
        return json.dumps(value, ensure_ascii=False, default=str)
    return _WHITESPACE.sub(" ", html.unescape(str(value))).strip() or MISSING_VALUE


def template_version(spec: PipelineSpec) -> str:
    """Short hash of everything that decides a row's text."""
    recipe = f"{SERIALIZER_VERSION}|{spec.text.template or 'tabllm-list'}|{','.join(spec.text.columns)}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
