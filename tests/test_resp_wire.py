"""The Redis door's request parser and reply encoder, sans-IO: Redis's rules, bounded memory,
and no input that makes it raise anything but its one protocol error."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvd.doors import respwire
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


def _read_in_pieces(data: bytes, cuts: list[int], max_bulk: int) -> tuple[list, str | None]:
    """What a reader makes of `data` fed in pieces: the requests, and the protocol error."""
    p, got = RequestParser(max_bulk), []
    try:
        for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
            p.feed(data[a:b])
            got += p.requests()
    except ProtocolViolation as exc:
        return got + exc.requests, exc.line
    return got, None


# Well-formed pipelines with a few bytes changed, inserted or removed: mostly valid, and
# where not, wrong in the places a header can be (lengths, type bytes, CRLFs).
_MUTATIONS = st.lists(st.tuples(st.sampled_from(["set", "insert", "delete"]),
                                st.integers(0, 10_000),
                                st.sampled_from(b"*$:+-0123456789\r\n \x00ax")),
                      max_size=3)


# How a header may be written: canonically (most often), or as Redis refuses it and hiredis,
# a reply reader, may not.
_FORMS = ["*%d", "$%d"] * 12 + ["+", ":", "$0%d", "$+%d", "*1", "*0%d", "$%d ", "=", "%1"]


def _encode_as(form: str, arg: bytes) -> bytes:
    if form in ("+", ":", "="):
        return form.encode() + arg.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    if form in ("*1", "%1"):  # a nested array or map
        return form.encode() + b"\r\n" + multibulk([arg])[4:] * (2 if form == "%1" else 1)
    if form.startswith("*"):
        form = "$%d"
    return form.replace("%d", str(len(arg))).encode() + b"\r\n" + arg + b"\r\n"


@settings(max_examples=1500, deadline=None)
@given(argvs, _MUTATIONS, st.data(), st.sampled_from([MAX_BULK, 8, 64]))
def test_the_hiredis_fast_path_reads_exactly_as_the_python_reader(
        requests, mutations, data, max_bulk) -> None:
    """hiredis reads a buffer's canonical requests, the Python reader the rest (kvd.doors.
    respwire._fast): with it or without it, the same requests and the same error, however
    the bytes are cut, malformed or oversize."""
    forms = iter(data.draw(st.lists(st.sampled_from(_FORMS), min_size=40, max_size=40)))
    wire = bytearray()
    for argv in requests:
        wire += next(forms, "*%d").replace("%d", str(len(argv))).encode() + b"\r\n"
        for arg in argv:
            wire += _encode_as(next(forms, "$%d"), arg)
    for op, where, byte in mutations:
        i = where % (len(wire) + 1)
        if op == "set" and i < len(wire):
            wire[i] = byte
        elif op == "insert":
            wire.insert(i, byte)
        elif op == "delete" and i < len(wire):
            del wire[i]
    raw = bytes(wire)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    fast = _read_in_pieces(raw, cuts, max_bulk)
    with mock.patch.object(respwire, "_fast", lambda buf, pos, out: pos):
        slow = _read_in_pieces(raw, cuts, max_bulk)
    assert fast == slow


def test_the_fast_path_reads_a_pipeline_and_leaves_the_partial_request() -> None:
    wire = multibulk([b"SET", b"k", b"v"]) * 3 + multibulk([b"GET", b"k"])
    p = RequestParser(MAX_BULK)
    p.feed(wire[:-3])
    out: list[list[bytes]] = []
    assert respwire._fast(p.buf + wire[:-3], 0, out) == len(wire) - len(multibulk([b"GET",
                                                                                   b"k"]))
    assert out == [[b"SET", b"k", b"v"]] * 3
    assert p.requests() == [[b"SET", b"k", b"v"]] * 3
    p.feed(wire[-3:])
    assert p.requests() == [[b"GET", b"k"]]


@pytest.mark.timeout(20)
@pytest.mark.parametrize("wire", [b"*3000000000\r\n", b"*1\r\n*3000000000\r\n",
                                  b"*2\r\n$1\r\na\r\n%3000000000\r\n",
                                  b"*1\r\n$3\r\nGET\r\n*0003000000000\r\n"])
def test_a_huge_aggregate_count_never_reaches_hiredis(wire: bytes) -> None:
    """hiredis would allocate the list for the count (and take minutes to free it)."""
    got, error = _read_in_pieces(wire + b"PING\r\n", [], MAX_BULK)
    assert error is not None and got in ([], [[b"GET"]])


def test_after_a_request_cut_by_a_read_the_rest_goes_back_to_hiredis() -> None:
    """A read that ends inside a request: the Python reader finishes it, then the fast path
    takes the rest of the buffer again (a pipeline split by reads stays on the fast path)."""
    real, taken = respwire._fast, []

    def counting(buf: bytes, pos: int, out: list) -> int:
        before = len(out)
        end = real(buf, pos, out)
        taken.append(len(out) - before)
        return end

    wire = multibulk([b"SET", b"k", b"v"]) * 10
    p = RequestParser(MAX_BULK)
    with mock.patch.object(respwire, "_fast", counting):
        p.feed(wire[:-5])
        assert p.requests() == [[b"SET", b"k", b"v"]] * 9
        p.feed(wire[-5:] + multibulk([b"GET", b"k"]) * 8)
        assert p.requests() == [[b"SET", b"k", b"v"]] + [[b"GET", b"k"]] * 8
    assert taken == [9, 8]  # the cut request by the Python reader, the rest by hiredis


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
