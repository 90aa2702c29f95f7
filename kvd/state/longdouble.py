"""INCRBYFLOAT's arithmetic, as Redis does it: in x87 80-bit `long double`, printed "%.17Lf".

Redis parses both numbers with strtold, adds them in long double (a 64-bit significand) and
prints the sum with 17 decimals, trailing zeros removed. A Python float (53 bits) rounds
differently: 10.5 + 0.1 would print 10.59999999999999964 where Redis prints 10.6. So the
arithmetic is done exactly with fractions and rounded to 64 significant bits at the two places
the hardware rounds: parsing and adding.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

SIGNIFICAND_BITS = 64
MAX_EXPONENT = 16383  # values at or above 2**16384 overflow to infinity
MIN_EXPONENT = -16382  # below 2**-16382 the values are subnormal: fewer significant bits
# A subnormal's last bit is worth 2**-16445: the scale no rounding goes past (smaller is 0).
MAX_SHIFT = SIGNIFICAND_BITS - 1 - MIN_EXPONENT
MAX_CHARS = 5 * 1024  # Redis's MAX_LONG_DOUBLE_CHARS: longer input is refused
_DECIMAL = re.compile(rb"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))(?:[eE]([+-]?[0-9]+))?")
_HEX = re.compile(rb"([+-]?)0[xX]([0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)"
                  rb"(?:[pP]([+-]?[0-9]+))?")
_INFINITY = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)
# An exponent past this is out of range whatever the digits (at most MAX_CHARS of them): the
# value is refused without computing 10**exponent.
_EXPONENT_LIMIT = 100_000


class Infinite(ValueError):
    """The sum is not finite."""


INFINITY = Fraction(2) ** (MAX_EXPONENT + 1)  # strtold's "inf": any sum with it is refused


def parse(raw: bytes) -> Fraction | None:
    """A number as strtold reads it (decimal or C99 hexadecimal, no leading space, nothing
    after it), rounded to long double; None where Redis says "value is not a valid float";
    ±INFINITY for "inf"."""
    if not raw or len(raw) >= MAX_CHARS:
        return None  # a NUL inside is refused too: strtold must read every byte
    if _INFINITY.fullmatch(raw):
        return -INFINITY if raw.startswith(b"-") else INFINITY
    exact = _exact(raw)
    if exact is None:
        return None
    try:
        value = round_to_long_double(exact)
    except Infinite:
        return None  # strtold's ERANGE on overflow: refused, like an underflow to zero
    return None if value == 0 and exact != 0 else value


def _exact(raw: bytes) -> Fraction | None:
    """The exact value of a decimal or hexadecimal float, None when it is neither or its
    exponent is out of any range (then strtold's ERANGE: refused, unless it is a zero)."""
    if match := _DECIMAL.fullmatch(raw):
        # Through Decimal: Fraction(str) goes through int(str), which refuses over 4300
        # digits, and a long double prints up to 4933 (INCRBYFLOAT reads back what it wrote).
        mantissa, exponent = Fraction(Decimal(match[1].decode())), match[2] or b"0"
        base = 10
    elif match := _HEX.fullmatch(raw):
        whole, _, frac = match[2].partition(b".")
        mantissa = Fraction(int(whole + frac or b"0", 16), 16 ** len(frac))
        mantissa = -mantissa if match[1] == b"-" else mantissa
        exponent, base = match[3] or b"0", 2
    else:
        return None
    if mantissa == 0:
        return mantissa
    if len(exponent) > 7 or abs(int(exponent)) > _EXPONENT_LIMIT:
        return None
    return mantissa * Fraction(base) ** int(exponent)


def round_to_long_double(x: Fraction) -> Fraction:
    """`x` rounded to 64 significant bits, ties to even; below the normal range (2**-16382,
    about 3.4e-4932) to a multiple of 2**-16445, so what is smaller than half of that is 0,
    which strtold reports as an underflow and Redis refuses."""
    if x == 0:
        return x
    sign = -1 if x < 0 else 1
    x = abs(x)
    exponent = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** exponent > x:
        exponent -= 1
    shift = min(SIGNIFICAND_BITS - 1 - exponent, MAX_SHIFT)
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
    text = f"{sign}{_decimal(whole)}.{frac:017d}".rstrip("0").rstrip(".")
    return b"0" if text == "-0" else text.encode()


_CHUNK = 10**4000  # str() refuses ints of over 4300 digits (sys.int_info.default_max_str_digits)


def _decimal(n: int) -> str:
    """`n` in decimal, also past str()'s limit: a long double reaches 4933 digits."""
    if n < _CHUNK:
        return str(n)
    high, low = divmod(n, _CHUNK)
    return _decimal(high) + str(low).zfill(4000)
