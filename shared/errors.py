"""One error hierarchy for both sides.

Every error has a stable `code` (it travels on the wire; scripts match on it) and a one-line
message that says what went wrong and what to do. Errors are raised deep inside and caught only
at the edges: the server loop turns them into error replies, the shell into a line on stderr.
"""

from __future__ import annotations


class KvError(Exception):
    """Base of every kv error. `code` is stable and part of the protocol.

    `redis` is the error line Redis gives for the same mistake (prefix included, e.g.
    "ERR syntax error"), which the RESP door sends instead of kv's own wording; None means
    the door derives it (see kvd.doors.respwire.error_line). `details` are the facts a
    caller may act on, beside the message (a failed CAS: the current revision and value);
    the HTTP door puts them in its JSON error.
    """

    code = "ERR"
    redis_default: str | None = None

    def __init__(self, message: str, redis: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.redis = redis or self.redis_default
        self.details: dict[str, object] = {}

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
    redis_default = "ERR syntax error"


class NotInteger(KvError):
    code = "NOT_INTEGER"
    redis_default = "ERR value is not an integer or out of range"


class NotFloat(KvError):
    code = "NOT_FLOAT"
    redis_default = "ERR value is not a valid float"


class Overflow(KvError):
    """An arithmetic result out of the 64-bit integer range (or not finite)."""

    code = "OVERFLOW"


class NoSuchKey(KvError):
    code = "NO_SUCH_KEY"
    redis_default = "ERR no such key"


class TooLarge(KvError):
    """A key or value over the configured limit."""

    code = "TOO_LARGE"


class StorageError(KvError):
    """The log could not take a write (disk full, I/O error): the write was not applied."""

    code = "IO_ERROR"


class NoAuth(KvError):
    """Users exist on the node and this connection has not authenticated."""

    code = "NOAUTH"
    redis_default = "NOAUTH Authentication required."


class NoPerm(KvError):
    """The authenticated user may not run this command, or not on these keys."""

    code = "NOPERM"


class WrongPass(KvError):
    """A failed authentication: no such user, a wrong password or token, or too many failures
    from one address (the reply does not say which of the first three)."""

    code = "WRONGPASS"
    redis_default = "WRONGPASS invalid username-password pair or user is disabled."


class NoQuorum(KvError):
    """A coordination command on a node that cannot reach the consensus group's quorum."""

    code = "NO_QUORUM"


class TryAgain(KvError):
    """A coordination command whose fate is unknown (the leader changed, no answer in time):
    it may or may not have applied; read before retrying a command that is not idempotent."""

    code = "TRYAGAIN"


class MembershipRefused(KvError):
    """An operator's change to the consensus group that cannot be made (RAFT REMOVE, INIT)."""

    code = "MEMBERSHIP"


class Busy(KvError):
    """A node that holds as many waiting requests (OBSERVE) as it takes: retry later."""

    code = "BUSY"


class TransactionError(KvError):
    """MULTI, EXEC or DISCARD out of place, or a command a transaction cannot hold."""

    code = "TRANSACTION"


class ExecAbort(KvError):
    """EXEC of a transaction that had a command refused while queueing: nothing ran."""

    code = "EXECABORT"


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
        NotFloat,
        Overflow,
        NoSuchKey,
        TooLarge,
        StorageError,
        NoAuth,
        NoPerm,
        WrongPass,
        NoQuorum,
        TryAgain,
        Busy,
        MembershipRefused,
        TransactionError,
        ExecAbort,
        InternalError,
    )
}
