"""Glob patterns as Redis matches them (KEYS, SCAN MATCH, PSUBSCRIBE), compiled to a regex.

Redis's rules, which fnmatch does not share: `\\` escapes the next character (outside and
inside a class), a class negates with `^` (not `!`), a range may be written backwards
(`[z-a]`), `[]` is an empty class, and a class left open at the end of the pattern still
counts as one (the characters up to the end). Compiled once per pattern and cached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    return re.compile(translate(pattern), re.DOTALL).fullmatch  # type: ignore[return-value]


def translate(pattern: bytes) -> bytes:
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            while i + 1 < n and pattern[i + 1 : i + 2] == b"*":
                i += 1
            out.append(b".*")
        elif c == b"?":
            out.append(b".")
        elif c == b"[":
            i, cls = _klass(pattern, i + 1)
            out.append(cls)
        elif c == b"\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i : i + 1]))
        else:
            out.append(re.escape(c))
        i += 1
    return b"".join(out)


def _klass(pattern: bytes, i: int) -> tuple[int, bytes]:
    """The class starting at `i` (after `[`): the index of its last character, and its regex."""
    n = len(pattern)
    negate = i < n and pattern[i : i + 1] == b"^"
    if negate:
        i += 1
    members: list[bytes] = []
    while i < n:
        c = pattern[i : i + 1]
        if c == b"\\" and i + 1 < n:
            i += 1
            members.append(re.escape(pattern[i : i + 1]))
        elif c == b"]":
            break
        elif i + 2 < n and pattern[i + 1 : i + 2] == b"-":
            lo, hi = sorted((pattern[i], pattern[i + 2]))
            members.append(re.escape(bytes([lo])) + b"-" + re.escape(bytes([hi])))
            i += 2
        else:
            members.append(re.escape(c))
        i += 1
    if not members:
        return i, b"." if negate else b"(?!)"
    return i, b"[" + (b"^" if negate else b"") + b"".join(members) + b"]"
