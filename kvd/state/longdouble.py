"""INCRBYFLOAT's arithmetic, as Redis does it: in x87 80-bit `long double`, printed "%.17Lf".

Redis parses both numbers with strtold, adds them in long double (a 64-bit significand) and
prints the sum with 17 decimals, trailing zeros removed. A Python float (53 bits) rounds
differently: 10.5 + 0.1 would print 10.59999999999999964 where Redis prints 10.6. So the
arithmetic is done exactly with fractions and rounded to 64 significant bits at the two places
the hardware rounds: parsing and adding.
"""

from __future__ import annotations

import re
from fractions import Fraction

SIGNIFICAND_BITS = 64
MAX_EXPONENT = 16383  # values at or above 2**16384 overflow to infinity
MAX_CHARS = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS: longer input is refused
_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)


class Infinite(ValueError):
    """The sum is not finite."""


INFINITY = Fraction(2) ** (MAX_EXPONENT + 1)  # strtold's "inf": any sum with it is refused


def parse(raw: bytes) -> Fraction | None:
    """A number as strtold reads it (no leading space, nothing after it), rounded to long
    double; None where Redis says "value is not a valid float"; ±INFINITY for "inf"."""
    raw = raw.split(b"\0", 1)[0]  # strtold stops at the C string's end
    if not raw or len(raw) >= MAX_CHARS:
        return None
    if _INFINITY.fullmatch(raw):
        return -INFINITY if raw.startswith(b"-") else INFINITY
    if _DECIMAL.fullmatch(raw) is None:
        return None
    mantissa, _, exponent = raw.lower().partition(b"e")
    exact = Fraction(mantissa.decode()) * Fraction(10) ** int(exponent or b"0")
    try:
        value = round_to_long_double(exact)
    except Infinite:
        return None  # strtold's ERANGE on overflow: refused, like an underflow to zero
    return None if value == 0 and exact != 0 else value


def round_to_long_double(x: Fraction) -> Fraction:
    """`x` rounded to 64 significant bits, ties to even (normal range only: a subnormal long
    double is below 1e-4931, far past anything a counter holds)."""
    if x == 0:
        return x
    sign = -1 if x < 0 else 1
    x = abs(x)
    exponent = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** exponent > x:
        exponent -= 1
    shift = SIGNIFICAND_BITS - 1 - exponent
    scaled = x * Fraction(2) ** shift
    m = round(scaled)  # Fraction rounds half to even
    value = Fraction(m) / Fraction(2) ** shift
    if value >= Fraction(2) ** (MAX_EXPONENT + 1):
        raise Infinite(x)
    return sign * value


def add(a: Fraction, b: Fraction) -> Fraction:
    if abs(a) == INFINITY or abs(b) == INFINITY:
        raise Infinite(a + b)
    return round_to_long_double(a + b)


def format_human(x: Fraction) -> bytes:
    """printf("%.17Lf") of `x`, then trailing zeros (and a bare point) dropped; -0 is 0."""
    scaled = round(x * 10**17)  # the exact value to 17 decimals, ties to even as glibc
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**17)
    text = f"{sign}{whole}.{frac:017d}".rstrip("0").rstrip(".")
    return b"0" if text == "-0" else text.encode()
