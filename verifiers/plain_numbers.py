"""Plain numbers: parse them exactly and compare them without sympy.

This is the fast path of the `math` kind and the whole of the `numeric` kind. It is exact
(`fractions.Fraction`), so it also avoids math-verify's 6-digit rounding, which calls 1e-7 and
2e-7 equal.
"""
from __future__ import annotations

import re
from fractions import Fraction

_INTEGER = re.compile(r"[-+]?\d+")
_DECIMAL = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_LATEX_FRAC = re.compile(r"(-?)\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_NOISE = ("\\!", "\\,", "\\;", "\\ ", "{,}", "\\left", "\\right")
_MAX_CHARS = 400
"""Longer strings are not "plain numbers" (and Python refuses to parse > 4300-digit ints)."""
_MAX_EXPONENT = 400
"""`Fraction("1e999999999")` would build a billion-digit integer in this process."""


def parse_number(text: str) -> Fraction | None:
    """The exact value of a plain number, or None if `text` is anything else.

    Accepts integers, decimals, scientific notation, thousands separators, `a/b` and
    `\\frac{a}{b}` with plain parts, wrapped in `$...$` or not.

    >>> parse_number("1,234.5")
    Fraction(2469, 2)
    >>> parse_number(r"$-\\frac{3}{4}$")
    Fraction(-3, 4)
    >>> parse_number("2x") is None
    True
    """
    text = _clean(text)
    if not text or len(text) > _MAX_CHARS:
        return None
    frac = _LATEX_FRAC.fullmatch(text)
    if frac:
        return _ratio(frac.group(2), frac.group(3), negative=frac.group(1) == "-")
    if text.count("/") == 1:
        numerator, denominator = text.split("/")
        return _ratio(numerator, denominator)
    return _decimal(text)


def canonical_integer(text: str) -> str | None:
    """The digits of a plain integer (sign kept, leading zeros and separators dropped), or None.

    Any length: equal integers have equal digit strings, so no int() is needed (Python refuses to
    parse ints over 4300 digits, and a 5,000-digit answer is still a plain answer).

    >>> canonical_integer("+0,001,234")
    '1234'
    >>> canonical_integer("-0"), canonical_integer("1.0")
    ('0', None)
    """
    text = _clean(text)
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if not _INTEGER.fullmatch(text):
        return None
    digits = text.lstrip("+-").lstrip("0")
    if not digits:
        return "0"
    return "-" + digits if text.startswith("-") else digits


def _clean(text: str) -> str:
    text = text.strip().strip("$").strip()
    for noise in _LATEX_NOISE:
        text = text.replace(noise, "")
    return text.replace(" ", "")


def _ratio(numerator: str, denominator: str, negative: bool = False) -> Fraction | None:
    top, bottom = _decimal(numerator), _decimal(denominator)
    if top is None or bottom is None or bottom == 0:
        return None
    value = top / bottom
    return -value if negative else value


def _decimal(text: str) -> Fraction | None:
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    if not _DECIMAL.fullmatch(text):
        return None
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > _MAX_EXPONENT:
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def is_integer(value: Fraction) -> bool:
    return value.denominator == 1


def numbers_close(a: Fraction, b: Fraction, rel_tol: float, abs_tol: float = 0.0) -> bool:
    """|a - b| <= max(rel_tol * max(|a|, |b|), abs_tol), computed exactly.

    >>> numbers_close(Fraction(1, 3), Fraction("0.333333"), rel_tol=1e-6)
    True
    >>> numbers_close(Fraction("1e-7"), Fraction("2e-7"), rel_tol=1e-6)
    False
    """
    rel, absolute = Fraction(str(rel_tol)), Fraction(str(abs_tol))
    return abs(a - b) <= max(rel * max(abs(a), abs(b)), absolute)


def same_number(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    """Equality as a grader means it: two integers must be equal exactly (a relative tolerance
    would call 1000000 and 1000001 equal); otherwise relative tolerance.

    >>> same_number(Fraction(1000000), Fraction(1000001), rel_tol=1e-6)
    False
    >>> same_number(Fraction(1, 2), Fraction("0.5"), rel_tol=0.0)
    True
    """
    if is_integer(a) and is_integer(b):
        return a == b
    return numbers_close(a, b, rel_tol)
