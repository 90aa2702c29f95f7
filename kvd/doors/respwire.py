"""RESP, sans-IO: bytes in to requests, reply values to bytes, as Redis 7.0 reads and writes them.

Requests. A buffer starting with `*` holds multibulk requests (`*N` then N `$len` bulks), one
starting with anything else an inline line (telnet, nc) split with Redis's quoting rules. The
checks, their order and their error texts are Redis's (networking.c, processMultibulkBuffer
and processInlineBuffer), so a client sees the same `-ERR Protocol error: ...`, after which the
connection is closed, as Redis does. Memory stays bounded: a header line longer than 64 KiB is
refused before its end arrives, and a declared bulk longer than `max_bulk` is refused before any
of it is buffered (a 1 GB declaration costs nothing).

hiredis (the C reader redis-py uses) does the bulk of the work: it is ten times faster than
this module's Python reader. But it is a reply parser, so its answers are only taken where they
are provably Redis's: it takes reply types inside a request (`:5`, `+OK`, nested arrays) that
Redis refuses with its own protocol errors, and it buffers a declared bulk whole before it says
anything. So `_fast` keeps a request hiredis read only when the bytes it came from are exactly
the request's canonical encoding (`*N`, then `$len` bulks: what every client library sends),
and only while no bulk in the buffer could be over `max_bulk`. Anything else (the partial
request at the end of a read, an inline line, a malformed or unusual header) is read by the
Python reader below, which holds its place across reads and knows Redis's error texts.

Replies. `encode(value, proto)` writes a reply value of the node or the door: bytes -> bulk,
str -> status, int -> integer, None -> null, list -> array, dict -> map (RESP3) or flat array
(RESP2), KvError -> error line, and the few shapes below for what RESP3 types apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import hiredis

from shared.commands import strict_int
from shared.errors import ArityError, KvError, UnknownCommand

INLINE_MAX = 64 * 1024  # PROTO_INLINE_MAX_SIZE: the longest header or inline line
MAX_MULTIBULK = 1024 * 1024  # arguments in one request (Redis 7.0 takes up to INT_MAX)
CRLF = b"\r\n"


class ProtocolViolation(Exception):
    """The client broke the protocol: reply with `line` (latin-1: one byte per character),
    then close the connection. `requests` are the whole requests read before it: Redis runs
    them and sends their replies before the error line."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line
        self.requests: list[list[bytes]] = []


@dataclass(slots=True)
class Verbatim:
    """RESP3's verbatim string (INFO's text); a bulk string in RESP2."""

    text: bytes
    format: bytes = b"txt"


@dataclass(slots=True)
class Push:
    """An out-of-band message (pub/sub): RESP3 `>`, a plain array in RESP2."""

    items: list


class NullArray:
    """EXEC of a transaction a WATCHed key spoiled: `*-1` in RESP2, `_` in RESP3."""


NULL_ARRAY = NullArray()


class RequestParser:
    """Feed bytes, take whole requests. Holds at most one partial request plus what is fed.

    The unread bytes are kept as one `bytes` (slicing it is four times cheaper than slicing a
    bytearray, and every argument is a slice); what arrives is joined to it only when a
    request can complete, so a 16 MiB value arriving in small reads is copied once, not once
    per read.
    """

    def __init__(self, max_bulk: int) -> None:
        self.max_bulk = max_bulk
        self.buf = b""
        self.pos = 0
        self._chunks: list[bytes] = []  # fed, not yet joined to buf
        self._fed = 0  # their total size
        self._short = 0  # bytes still missing before the request being read can complete
        self._argc = 0  # arguments still expected of the multibulk request being read
        self._bulk = -1  # length of the bulk being read, -1 while its header is unread
        self._argv: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._fed += len(data)

    @property
    def buffered(self) -> int:
        return len(self.buf) - self.pos + self._fed

    def requests(self) -> list[list[bytes]]:
        """Every whole request buffered, in order; raises ProtocolViolation at the first bad
        one, carrying the requests before it."""
        if self._fed < self._short:
            return []
        if self._chunks:
            self.buf = self.buf[self.pos:] + b"".join(self._chunks)
            self.pos, self._chunks, self._fed = 0, [], 0
        self._short = 0
        out: list[list[bytes]] = []
        buf = self.buf
        # A read that ended inside a request leaves it to this reader, which holds its place:
        # once it is whole, the rest of the buffer gets another go at the fast path. No more
        # than that: a failed go copies the rest of the buffer into hiredis for nothing.
        resuming = self._argc != 0
        self._try_fast(buf, out)
        try:
            while self.pos < len(buf):
                inline = self._argc == 0 and buf[self.pos] != 0x2A  # not '*': a telnet line
                argv = self._inline() if inline else self._multibulk()
                if argv is None:
                    break
                if argv:
                    out.append(argv)
                if resuming:
                    resuming = False
                    self._try_fast(buf, out)
        except ProtocolViolation as exc:
            exc.requests = out
            raise
        return out

    def _try_fast(self, buf: bytes, out: list[list[bytes]]) -> None:
        """Read what hiredis can from `pos` (see `_fast`), when a request starts there."""
        pos = self.pos
        if self._argc == 0 and pos < len(buf) and buf[pos] == 0x2A \
                and len(buf) - pos <= self.max_bulk and not _huge_count(buf, pos):
            self.pos = _fast(buf, pos, out)

    def _inline(self) -> list[bytes] | None:
        buf, pos = self.buf, self.pos
        newline = buf.find(b"\n", pos)
        if newline < 0 or not _ends(buf, pos, newline, "too big inline request"):
            if len(buf) - pos > INLINE_MAX:
                raise ProtocolViolation("ERR Protocol error: too big inline request")
            return None
        end = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
        self.pos = newline + 1
        argv = split_inline(buf[pos:end])
        if argv is None:
            raise ProtocolViolation("ERR Protocol error: unbalanced quotes in request")
        return argv

    def _multibulk(self) -> list[bytes] | None:
        buf, pos, size = self.buf, self.pos, len(self.buf)
        if self._argc == 0:
            cr = buf.find(b"\r", pos)
            if cr < 0 or cr + 1 >= size:  # the line, or its \n, has not all arrived
                if size - pos > INLINE_MAX:
                    raise ProtocolViolation("ERR Protocol error: too big mbulk count string")
                return None
            count = _length(buf[pos + 1 : cr])
            if count is None or count > MAX_MULTIBULK:
                if not _ends(buf, pos, cr, "too big mbulk count string"):
                    return None
                raise ProtocolViolation("ERR Protocol error: invalid multibulk length")
            self.pos = pos = cr + 2
            if count <= 0:
                return []  # Redis skips an empty request
            self._argc, self._argv = count, []
        argc, bulk, argv = self._argc, self._bulk, self._argv
        while argc:
            if bulk < 0:
                cr = buf.find(b"\r", pos)
                if cr < 0 or cr + 1 >= size:
                    if size - pos > INLINE_MAX:
                        raise ProtocolViolation("ERR Protocol error: too big bulk count string")
                    break
                bulk = _length(buf[pos + 1 : cr]) if buf[pos] == 0x24 else None  # '$'
                if bulk is None or bulk < 0 or bulk > self.max_bulk:
                    if not _ends(buf, pos, cr, "too big bulk count string"):
                        bulk = -1
                        break
                    if buf[pos] != 0x24:
                        # The byte as Redis shows it: raw, a CR or LF as a space (latin-1
                        # keeps it one byte on the wire).
                        got = " " if buf[pos] in (0x0A, 0x0D) else chr(buf[pos])
                        raise ProtocolViolation(f"ERR Protocol error: expected '$', got '{got}'")
                    raise ProtocolViolation("ERR Protocol error: invalid bulk length")
                pos = cr + 2
            end = pos + bulk
            if end + 2 > size:
                self._short = end + 2 - size  # nothing to do until that much more arrives
                break
            # As in Redis, the two bytes after the bulk are taken as its CRLF unchecked.
            argv.append(buf[pos:end])
            pos = end + 2
            bulk = -1
            argc -= 1
        self.pos, self._argc, self._bulk = pos, argc, bulk
        if argc:
            return None
        self._argv = []
        return argv


# What might be an aggregate header (array, map, set, push, attribute) counting a million
# items or more: hiredis allocates the list for the count it is told before any item arrives,
# and freeing a list of 3 billion empty slots takes minutes. Such a buffer (or a value that
# merely looks like one) is read by the Python reader, which refuses the count at once.
_HUGE_COUNT = re.compile(rb"[*%~>|][+-]?[0-9]{7}")
_HUGE_ARRAY = re.compile(rb"\*[+-]?[0-9]{7}")  # the same for arrays alone: a literal lead
# is found with memchr, nine times faster than a class of five


def _huge_count(buf: bytes, pos: int) -> bool:
    """Whether `buf` from `pos` may hold an aggregate header of a million items or more.
    Requests hold arrays only; the other aggregate types are looked for when their lead byte
    is there at all (values may hold them; a request never does)."""
    find = buf.find
    if find(b"%", pos) >= 0 or find(b"~", pos) >= 0 or find(b">", pos) >= 0 \
            or find(b"|", pos) >= 0:
        return _HUGE_COUNT.search(buf, pos) is not None
    return _HUGE_ARRAY.search(buf, pos) is not None


def _fast(buf: bytes, pos: int, out: list[list[bytes]]) -> int:
    """Whole requests from `pos` read by hiredis, appended to `out`; returns where they end.

    Stops, leaving the rest to the Python reader, at the first request whose bytes are not its
    canonical encoding: a reply type, a nested array, a non-canonical length, an empty or
    oversize request, a protocol error, or the end of what has arrived. The caller makes sure
    no bulk here can be over the limit (the buffer is not longer than one may be).
    """
    reader = hiredis.Reader()
    reader.feed(buf, pos)
    gets, startswith, append = reader.gets, buf.startswith, out.append
    try:
        argv = gets()
        while argv is not False:
            n = len(argv)
            if n == 3:  # SET key value: the commonest shape, formatted in one step
                a, b, c = argv
                canonical = b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                    len(a), a, len(b), b, len(c), c)
            elif n == 2:
                a, b = argv
                canonical = b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)
            elif 0 < n <= MAX_MULTIBULK:
                canonical = b"*%d\r\n%b" % (n, b"".join([b"$%d\r\n%b\r\n" % (len(a), a)
                                                        for a in argv]))
            else:
                break
            # The bytes hiredis read were exactly these: Redis reads them the same way.
            if not startswith(canonical, pos):
                break
            pos += len(canonical)
            append(argv)
            argv = gets()
    except (TypeError, hiredis.ProtocolError):
        pass  # an element that is not a bulk (`%b` refuses it), or bytes hiredis refuses
    return pos


def _ends(buf: bytes, pos: int, end: int, too_big: str) -> bool:
    """Whether the line at `pos` ends at `end` for Redis, which looks for a line's end with
    strchr: a NUL before it hides it, and the line waits for more until it is too long. A
    multibulk header with a NUL is wrong anyway, so only wrong headers are checked (an inline
    line, rare, always is)."""
    if buf.find(b"\0", pos, end) < 0:
        return True
    if len(buf) - pos > INLINE_MAX:
        raise ProtocolViolation("ERR Protocol error: " + too_big)
    return False


def _length(raw: bytes) -> int | None:
    """A count or length as Redis's string2ll reads it; the plain digits of nearly every
    header skip the general check."""
    if raw.isdigit() and len(raw) < 19 and (raw[0] != 0x30 or len(raw) == 1):
        return int(raw)
    return strict_int(raw)


_SPACE = b" \t\n\r\x0b\x0c"  # C's isspace
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b",
            ord("a"): b"\a"}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> list[bytes] | None:
    """Redis's sdssplitargs: words split on blanks, "..." with escapes, '...' raw; a closing
    quote must be followed by a blank or the end. None for unbalanced quotes."""
    line = line.split(b"\0", 1)[0]  # a C string: a NUL ends it
    argv: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return argv
        word = bytearray()
        quote = 0  # 0, or the quote character we are inside
        while True:
            c = line[i] if i < n else 0
            if quote == 0x22:  # "
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 \
                        and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    word.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    word += _ESCAPES.get(line[i], line[i : i + 1])
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    word.append(c)
            elif quote == 0x27:  # '
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    word.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                elif i >= n:
                    return None
                else:
                    word.append(c)
            elif i >= n or c in b" \n\r\t":
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                word.append(c)
            i += 1
        argv.append(bytes(word))


# -- replies ---------------------------------------------------------------------------------


def encode(value: object, proto: int = 2) -> bytes:
    out: list[bytes] = []
    _encode(value, proto, out)
    return b"".join(out)


def _encode(value: object, proto: int, out: list[bytes]) -> None:
    t = type(value)
    if t is bytes:
        out.append(b"$%d\r\n%b\r\n" % (len(value), value))  # type: ignore[arg-type]
    elif t is str:
        out.append(b"+%b\r\n" % value.encode())  # type: ignore[union-attr]
    elif t is int:
        out.append(b":%d\r\n" % value)
    elif value is None:
        out.append(b"_\r\n" if proto == 3 else b"$-1\r\n")
    elif t is list or t is tuple:
        out.append(b"*%d\r\n" % len(value))  # type: ignore[arg-type]
        for item in value:  # type: ignore[union-attr]
            _encode(item, proto, out)
    elif t is bool:
        out.append((b"#t\r\n" if value else b"#f\r\n") if proto == 3
                   else (b":1\r\n" if value else b":0\r\n"))
    elif t is dict:
        items = value.items()  # type: ignore[union-attr]
        out.append((b"%%%d\r\n" if proto == 3 else b"*%d\r\n")
                   % (len(items) * (1 if proto == 3 else 2)))
        for k, v in items:
            _encode(k.encode() if type(k) is str else k, proto, out)
            _encode(v.encode() if type(v) is str else v, proto, out)
    elif isinstance(value, KvError):
        out.append(b"-%b\r\n" % wire(error_line(value)))
    elif t is Verbatim:
        body = value.format + b":" + value.text  # type: ignore[union-attr]
        out.append(b"=%d\r\n%b\r\n" % (len(body), body) if proto == 3
                   else b"$%d\r\n%b\r\n" % (len(value.text), value.text))  # type: ignore
    elif t is Push:
        items = value.items  # type: ignore[union-attr]
        out.append(b"%c%d\r\n" % (b">"[0] if proto == 3 else b"*"[0], len(items)))
        for item in items:
            _encode(item, proto, out)
    elif t is NullArray:
        out.append(b"_\r\n" if proto == 3 else b"*-1\r\n")
    elif t is float:
        text = repr(value).encode()
        out.append(b",%b\r\n" % text if proto == 3 else b"$%d\r\n%b\r\n" % (len(text), text))
    else:
        raise TypeError(f"no RESP encoding for {t.__name__}")


def error_line(exc: KvError, command: str = "") -> str:
    """The error line Redis would send for `exc` (prefix first, no CR or LF in it)."""
    line = exc.redis
    if line is None:
        if isinstance(exc, ArityError):
            line = f"ERR wrong number of arguments for '{command.lower()}' command"
        elif isinstance(exc, UnknownCommand):
            line = f"ERR {exc.message}"
        else:
            prefix = "ERR" if exc.code in _ERR_CODES else exc.code
            line = f"{prefix} {exc.message}"
    return line.replace("\r", " ").replace("\n", " ")


# kv's codes that Redis reports as plain ERR; the rest keep their own prefix (LAGGED, ...).
_ERR_CODES = {"ERR", "PROTOCOL", "SYNTAX", "NOT_INTEGER", "NOT_FLOAT", "OVERFLOW",
              "NO_SUCH_KEY", "TOO_LARGE", "UNKNOWN_COMMAND", "WRONG_ARITY", "IO_ERROR",
              "INTERNAL", "VERSION"}


def unknown_command(argv: list[bytes]) -> UnknownCommand:
    """Redis's words for a command it does not have, with the first arguments quoted: 128
    bytes at most of each, and of them all, each cut at a NUL (Redis prints C strings)."""
    args = b""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += b"'" + arg.split(b"\0", 1)[0][: 128 - len(args)] + b"' "
    name = text(argv[0].split(b"\0", 1)[0][:128])
    return UnknownCommand(f"unknown command '{name}', with args beginning with: {text(args)}")


def text(raw: bytes) -> str:
    """A client's bytes inside an error line: `wire` gives back exactly these bytes, as Redis
    echoes them (UTF-8 or not)."""
    return raw.decode("utf-8", "surrogateescape")


def wire(line: str) -> bytes:
    return line.encode("utf-8", "surrogateescape")
