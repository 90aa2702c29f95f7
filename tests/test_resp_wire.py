"""The Redis door's request parser and reply encoder, sans-IO: Redis's rules, bounded memory,
and no input that makes it raise anything but its one protocol error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.doors.respwire import (
    INLINE_MAX,
    NULL_ARRAY,
    ProtocolViolation,
    Push,
    RequestParser,
    Verbatim,
    encode,
    error_line,
    split_inline,
    unknown_command,
)
from shared.errors import ArityError, SyntaxError_, TooLarge

MAX_BULK = 1024 * 1024


def multibulk(argv: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in argv)


def parse_all(data: bytes, max_bulk: int = MAX_BULK) -> list[list[bytes]]:
    p = RequestParser(max_bulk)
    p.feed(data)
    return p.requests()


argvs = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1,
                 max_size=6)


@settings(max_examples=300, deadline=None)
@given(argvs, st.data())
def test_requests_split_anywhere_parse_the_same(requests, data) -> None:
    """Every request split at every kind of byte boundary: the same requests, in order."""
    wire = b"".join(multibulk(r) for r in requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    p = RequestParser(MAX_BULK)
    got: list[list[bytes]] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        p.feed(wire[a:b])
        got += p.requests()
    assert got == requests
    assert p.buffered == 0


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_parse_or_raise_the_protocol_error_only(data) -> None:
    p = RequestParser(MAX_BULK)
    try:
        for i in range(0, len(data), 7):  # in small pieces, as a network delivers them
            p.feed(data[i : i + 7])
            p.requests()
    except ProtocolViolation as exc:
        assert exc.line.startswith("ERR Protocol error: ")
    assert p.buffered <= len(data)


def test_a_huge_declared_bulk_is_refused_before_it_is_buffered() -> None:
    p = RequestParser(MAX_BULK)
    p.feed(b"*1\r\n$1000000000\r\n" + b"x" * 1000)
    with pytest.raises(ProtocolViolation, match="invalid bulk length"):
        p.requests()


def test_a_header_line_is_bounded_while_it_waits_for_its_end() -> None:
    p = RequestParser(MAX_BULK)
    p.feed(b"*1\r\n$" + b"1" * 10)
    assert p.requests() == []  # not whole yet: wait
    p = RequestParser(MAX_BULK)
    p.feed(b"*" + b"1" * (INLINE_MAX + 1))
    with pytest.raises(ProtocolViolation, match="too big mbulk count string"):
        p.requests()
    p = RequestParser(MAX_BULK)
    p.feed(b"GET " + b"k" * (INLINE_MAX + 1))
    with pytest.raises(ProtocolViolation, match="too big inline request"):
        p.requests()


@pytest.mark.parametrize(("wire", "error"), [
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*+1\r\n$1\r\na\r\n", "invalid multibulk length"),  # string2ll takes no plus sign
    (b"*1\r\n:5\r\n", "expected '$', got ':'"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$ 1\r\na\r\n", "invalid bulk length"),
    (b'SET "a b\r\n', "unbalanced quotes in request"),
    (b"SET 'a'b c\r\n", "unbalanced quotes in request"),
])
def test_malformed_requests_get_redis_words(wire: bytes, error: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parse_all(wire)
    assert info.value.line == f"ERR Protocol error: {error}"


def test_empty_and_negative_counts_are_skipped_as_in_redis() -> None:
    assert parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


@pytest.mark.parametrize(("line", "argv"), [
    (b"SET name Alice", [b"SET", b"name", b"Alice"]),
    (b"  set   a  b  ", [b"set", b"a", b"b"]),
    (b'SET "a b" "c\\x41\\n"', [b"SET", b"a b", b"cA\n"]),
    (b"SET 'it''s' x", None),  # a closing quote must be followed by a blank
    (b"SET 'it\\'s' x", [b"SET", b"it's", b"x"]),
    (b'foo"bar baz"', [b"foobar baz"]),
    (b"", []),
    (b'"unterminated', None),
    (b"a\0b c", [b"a"]),  # a C string ends at NUL
])
def test_inline_lines_split_like_redis_cli_and_redis(line: bytes, argv) -> None:
    assert split_inline(line) == argv


def test_inline_requests_end_at_lf_with_or_without_cr() -> None:
    assert parse_all(b"PING\nSET a 1\r\n\r\nGET a\r\n") == [[b"PING"], [b"SET", b"a", b"1"],
                                                          [b"GET", b"a"]]


def test_replies_in_resp2_and_resp3() -> None:
    assert encode(b"v") == b"$1\r\nv\r\n"
    assert encode("OK") == b"+OK\r\n"
    assert encode(7) == b":7\r\n"
    assert encode(None) == b"$-1\r\n" and encode(None, 3) == b"_\r\n"
    assert encode([b"a", None, 1]) == b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n"
    assert encode({"a": 1}) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert encode({"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert encode(NULL_ARRAY) == b"*-1\r\n" and encode(NULL_ARRAY, 3) == b"_\r\n"
    assert encode(Push([b"message", b"c", b"p"]), 3).startswith(b">3\r\n")
    assert encode(Push([b"message", b"c", b"p"]), 2).startswith(b"*3\r\n")
    assert encode(Verbatim(b"# Server"), 3) == b"=12\r\ntxt:# Server\r\n"
    assert encode(Verbatim(b"# Server"), 2) == b"$8\r\n# Server\r\n"


def test_errors_speak_redis_words() -> None:
    assert error_line(ArityError("kv words"), "GET") == \
        "ERR wrong number of arguments for 'get' command"
    assert error_line(SyntaxError_("kv words")) == "ERR syntax error"
    assert error_line(TooLarge("value too big\r\nreally")) == "ERR value too big  really"
    assert error_line(unknown_command([b"foo", b"a", b"b"])) == \
        "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
