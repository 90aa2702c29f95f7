"""One error hierarchy for both sides.

Every error has a stable `code` (it travels on the wire; scripts match on it) and a one-line
message that says what went wrong and what to do. Errors are raised deep inside and caught only
at the edges: the server loop turns them into error replies, the shell into a line on stderr.
"""

from __future__ import annotations


class KvError(Exception):
    """Base of every kv error. `code` is stable and part of the protocol."""

    code = "ERR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ProtocolError(KvError):
    """A frame that does not decode as a kv message."""

    code = "PROTOCOL"


class VersionError(KvError):
    """The peer speaks a protocol version this side does not."""

    code = "VERSION"


class UnknownCommand(KvError):
    code = "UNKNOWN_COMMAND"


class ArityError(KvError):
    code = "WRONG_ARITY"


class SyntaxError_(KvError):
    """An option or argument that does not fit the command's grammar."""

    code = "SYNTAX"


class NotInteger(KvError):
    code = "NOT_INTEGER"


class TooLarge(KvError):
    """A key or value over the configured limit."""

    code = "TOO_LARGE"


class StorageError(KvError):
    """The log could not take a write (disk full, I/O error): the write was not applied."""

    code = "IO_ERROR"


class InternalError(KvError):
    code = "INTERNAL"


class Unreachable(KvError):
    """Client side: the server did not answer (refused, down, or timed out)."""

    code = "UNREACHABLE"


class Timeout(Unreachable):
    code = "TIMEOUT"


class ServerError(KvError):
    """Client side: an error reply from the server, carrying the server's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


ERRORS_BY_CODE: dict[str, type[KvError]] = {
    cls.code: cls
    for cls in (
        ProtocolError,
        VersionError,
        UnknownCommand,
        ArityError,
        SyntaxError_,
        NotInteger,
        TooLarge,
        StorageError,
        InternalError,
    )
}
