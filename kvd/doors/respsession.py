"""The Redis door's per-connection commands, sans-IO: what a connection is (protocol version,
name, transaction, WATCHed keys, subscriptions) and the commands that act on it alone.

HELLO, AUTH, SELECT, CLIENT, COMMAND, CONFIG, QUIT, RESET, MULTI/EXEC/DISCARD, WATCH/UNWATCH
(Redis's optimistic locks: an EXEC fails when a WATCHed key's version changed, whichever door or
peer changed it) and (P)SUBSCRIBE/(P)UNSUBSCRIBE live here; every other command goes to the
node, the same one every door and peer writes through. Replies and error texts are Redis 7.0's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kvd.doors.respwire import Push, text
from kvd.state.glob import compile_glob
from kvd.state.node import Node
from kvd.state.users import User
from shared.commands import COMMANDS, strict_int
from shared.errors import KvError

REDIS_VERSION = "7.0.15"
KEYSPACE = b"__keyspace@0__:"
KEYEVENT = b"__keyevent@0__:"


class RespError(KvError):
    """An error that exists only on the Redis door; `redis` is the whole line."""

    def __init__(self, line: str) -> None:
        super().__init__(line.partition(" ")[2], redis=line)


@dataclass(eq=False)
class Session:
    id: int
    addr: str
    laddr: str
    fd: int
    proto: int = 2
    name: bytes = b""
    multi: list[list[bytes]] | None = None  # commands queued since MULTI
    multi_failed: bool = False  # a queued command was refused: EXEC aborts
    watched: dict[bytes, tuple | None] = field(default_factory=dict)  # key -> version
    channels: set[bytes] = field(default_factory=set)
    patterns: dict[bytes, Callable[[bytes], object]] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)
    closing: bool = False  # send what is queued, then close (QUIT, a protocol error)
    user: User | None = None  # who logged in (AUTH, HELLO AUTH), once users exist

    @property
    def subscribed(self) -> bool:
        return bool(self.channels or self.patterns)

    def reset(self) -> None:
        self.proto, self.name, self.user = 2, b"", None
        self.multi, self.multi_failed = None, False
        self.watched.clear()
        self.channels.clear()
        self.patterns.clear()


@dataclass
class Env:
    """What the per-connection commands may read beyond their own session."""

    node: Node
    sessions: dict[int, Session]
    config: dict[str, str]
    info: Callable[[list[bytes]], bytes]


Command = Callable[[Session, list[bytes], Env], object]


# -- connection ----------------------------------------------------------------------------


def hello(s: Session, argv: list[bytes], env: Env) -> object:
    proto = s.proto
    if len(argv) > 1:
        asked = strict_int(argv[1])
        if asked is None:
            return RespError("ERR Protocol version is not an integer or out of range")
        if asked not in (2, 3):
            return RespError("NOPROTO unsupported protocol version")
        proto = asked
    name, i, authenticated = None, 2, False
    while i < len(argv):
        opt, more = argv[i].upper(), len(argv) - 1 - i
        if opt == b"AUTH" and more >= 2:
            refused = _authenticate(s, env, argv[i + 1], argv[i + 2])
            if refused:
                return refused
            authenticated = True
            i += 3
        elif opt == b"SETNAME" and more >= 1:
            name = argv[i + 1]
            i += 2
        else:
            return RespError(f"ERR Syntax error in HELLO option '{_text(argv[i])}'")
    if env.node.locked and s.user is None and not authenticated:
        return RespError("NOAUTH HELLO must be called with the client already authenticated, "
                         "otherwise the HELLO <proto> AUTH <user> <pass> option can be used to "
                         "authenticate the client and select the RESP protocol version at the "
                         "same time")
    if name is not None:
        if not _valid_name(name):
            return _bad_name()
        s.name = name
    s.proto = proto
    return {"server": "redis", "version": REDIS_VERSION, "proto": proto, "id": s.id,
            "mode": "standalone", "role": "master", "modules": []}


def auth(s: Session, argv: list[bytes], env: Env) -> object:
    if len(argv) > 3:
        return RespError("ERR syntax error")
    if len(argv) == 2:
        if env.node.locked:
            return _authenticate(s, env, b"default", argv[1]) or "OK"
        return RespError("ERR AUTH <password> called without any password configured for "
                         "the default user. Are you sure your configuration is correct?")
    return _authenticate(s, env, argv[1], argv[2]) or "OK"


def _authenticate(s: Session, env: Env, user: bytes, password: bytes) -> KvError | None:
    """Log the session in as `user` (kvd.state.access); while no user exists the only one is
    Redis's `default`, with no password (nopass)."""
    if not env.node.locked:
        if user != b"default":
            return RespError("WRONGPASS invalid username-password pair or user is disabled.")
        return None
    try:
        s.user = env.node.access.login(user, password, s.addr.rsplit(":", 1)[0])
    except KvError as exc:
        s.user = None  # as Redis: a failed AUTH leaves the connection logged out
        return exc
    return None


# What a connection may send before it has logged in, once users exist (Redis's no-auth).
NO_AUTH = {b"AUTH", b"HELLO", b"QUIT", b"RESET"}
# The door's own commands and what they need of a logged-in user: CONFIG and CLIENT (which
# sees every connection) are for admins; INFO reads, as the native INFO does.
OWN_ACCESS = {b"CONFIG": "admin", b"CLIENT": "admin", b"INFO": "read"}


def may_run(s: Session, name: bytes, argv: list[bytes], node: Node) -> KvError | None:
    """The refusal, if any, of one of the door's own commands for this session's user."""
    if name in NO_AUTH:
        return None
    try:
        user = s.user = node.access.current(s.user)  # deleted or changed since the login
    except KvError as exc:
        return exc
    if user.admin:
        return None
    need = OWN_ACCESS.get(name)
    if name == b"CLIENT" and len(argv) > 1 and argv[1].upper() in (
            b"SETNAME", b"GETNAME", b"ID", b"INFO", b"REPLY", b"SETINFO"):
        need = None  # the connection's own business
    if need == "admin" or (need == "read" and not user.reads_anything()):
        return RespError(f"NOPERM this user has no permissions to run the "
                         f"'{name.lower().decode('latin-1')}' command")
    if name in (b"SUBSCRIBE", b"PSUBSCRIBE"):
        for channel in argv[1:]:
            if not _may_hear(user, channel):
                return RespError("NOPERM this user has no permissions to access one of the "
                                 "channels used as arguments")
    return None


def _may_hear(user: User, channel: bytes) -> bool:
    """A keyspace channel or pattern is allowed when every key it can name is readable; any
    other (the keyevent channels name every key) is for admins, who are not asked."""
    if not channel.startswith(KEYSPACE):
        return False  # kv has no other channels; a pattern like `*` would hear every key
    rest = channel[len(KEYSPACE):]
    cut = min((rest.find(c) for c in b"*?[\\" if c in rest), default=len(rest))
    return user.reads_prefix(rest[:cut])


def select(s: Session, argv: list[bytes], env: Env) -> object:
    index = strict_int(argv[1])
    if index is None or not -(1 << 31) <= index < (1 << 31):
        return RespError("ERR value is not an integer or out of range")
    return "OK" if index == 0 else RespError("ERR DB index is out of range")


def quit_(s: Session, argv: list[bytes], env: Env) -> object:
    s.closing = True
    return "OK"


def reset(s: Session, argv: list[bytes], env: Env) -> object:
    s.reset()
    return "RESET"


def client(s: Session, argv: list[bytes], env: Env) -> object:
    sub = argv[1].upper()
    if sub == b"ID" and len(argv) == 2:
        return s.id
    if sub == b"GETNAME" and len(argv) == 2:
        return s.name or None
    if sub == b"SETNAME" and len(argv) == 3:
        if not _valid_name(argv[2]):
            return _bad_name()
        s.name = argv[2]
        return "OK"
    if sub == b"INFO" and len(argv) == 2:
        return _client_line(s).encode()
    if sub == b"LIST" and len(argv) == 2:
        return "".join(_client_line(x) for x in env.sessions.values()).encode()
    if sub in (b"ID", b"GETNAME", b"SETNAME", b"INFO", b"LIST"):
        return RespError(f"ERR wrong number of arguments for 'client|{sub.lower().decode()}' "
                         "command")
    return RespError(f"ERR unknown subcommand '{_text(argv[1])}'. Try CLIENT HELP.")


def _valid_name(name: bytes) -> bool:
    return all(0x21 <= c <= 0x7E for c in name)


def _bad_name() -> RespError:
    return RespError("ERR Client names cannot contain spaces, newlines or special characters.")


def _client_line(s: Session) -> str:
    age = int(time.monotonic() - s.created)
    return (f"id={s.id} addr={s.addr} laddr={s.laddr} fd={s.fd} name={_text(s.name)} "
            f"age={age} idle=0 flags={'x' if s.multi is not None else 'N'} db=0 "
            f"sub={len(s.channels)} psub={len(s.patterns)} "
            f"multi={-1 if s.multi is None else len(s.multi)} resp={s.proto}\n")


def command(s: Session, argv: list[bytes], env: Env) -> object:
    sub = argv[1].upper() if len(argv) > 1 else b""
    if not sub:
        return [_command_info(c) for c in COMMANDS.values() if c.redis_arity is not None]
    if sub == b"COUNT":
        return sum(1 for c in COMMANDS.values() if c.redis_arity is not None)
    if sub == b"LIST":
        return [c.name.lower().encode() for c in COMMANDS.values() if c.redis_arity is not None]
    if sub == b"INFO":
        found = [COMMANDS.get(_text(a).upper()) for a in argv[2:]]
        return [_command_info(c) if c and c.redis_arity is not None else None for c in found]
    if sub == b"DOCS":
        return {}  # kv keeps no per-command docs for redis-cli's hints
    return RespError(f"ERR unknown subcommand '{_text(argv[1])}'. Try COMMAND HELP.")


def _command_info(c) -> list:  # noqa: ANN001
    flags = ["write"] if c.mutating else ["readonly"]
    has_key = bool(c.args) and c.args[0].kind.value == "key"
    step = c.repeat or 1
    return [c.name.lower().encode(), c.redis_arity, flags, 1 if has_key else 0,
            (-1 if c.repeat else 1) if has_key else 0, step if has_key else 0, [], [], [], []]


def config(s: Session, argv: list[bytes], env: Env) -> object:
    sub = argv[1].upper()
    if sub == b"GET":
        if len(argv) < 3:
            return RespError("ERR wrong number of arguments for 'config|get' command")
        found: dict[str, str] = {}
        for pattern in argv[2:]:
            match = compile_glob(pattern.lower())
            found.update((k, v) for k, v in env.config.items() if match(k.encode()))
        return {k.encode(): v.encode() for k, v in found.items()}
    if sub == b"SET":
        param = _text(argv[2]) if len(argv) > 2 else ""
        return RespError(f"ERR Unknown option or number of arguments for CONFIG SET - "
                         f"'{param}'")
    if sub == b"RESETSTAT":
        return "OK"
    return RespError(f"ERR unknown subcommand '{_text(argv[1])}'. Try CONFIG HELP.")


# -- transactions ----------------------------------------------------------------------------


def multi(s: Session, argv: list[bytes], env: Env) -> object:
    if s.multi is not None:
        return RespError("ERR MULTI calls can not be nested")
    s.multi, s.multi_failed = [], False
    return "OK"


def discard(s: Session, argv: list[bytes], env: Env) -> object:
    if s.multi is None:
        return RespError("ERR DISCARD without MULTI")
    s.multi, s.multi_failed = None, False
    s.watched.clear()
    return "OK"


def watch(s: Session, argv: list[bytes], env: Env) -> object:
    if s.multi is not None:
        return RespError("ERR WATCH inside MULTI is not allowed")
    for key in argv[1:]:
        s.watched.setdefault(key, env.node.version_of(key))
    return "OK"


def unwatch(s: Session, argv: list[bytes], env: Env) -> object:
    s.watched.clear()
    return "OK"


def exec_abort(s: Session) -> object | None:
    """Why EXEC cannot run its queue (an error or a null reply), or None when it can; either
    way the transaction and the WATCHes end here."""
    queued, failed = s.multi, s.multi_failed
    if queued is None:
        return RespError("ERR EXEC without MULTI")  # the WATCHes stay, as in Redis
    s.multi, s.multi_failed = None, False
    watched, s.watched = s.watched, {}
    if failed:
        return RespError("EXECABORT Transaction discarded because of previous errors.")
    return watched or None


def discard_all(s: Session) -> None:
    """The transaction and the WATCHes end (a refused EXEC)."""
    s.multi, s.multi_failed = None, False
    s.watched.clear()


def spoiled(watched: dict, node: Node) -> bool:
    return any(node.version_of(key) != version for key, version in watched.items())


# -- keyspace notifications -----------------------------------------------------------------


def subscribe(s: Session, argv: list[bytes], env: Env) -> object:
    kind = argv[0].upper()
    replies = []
    for name in argv[1:]:
        if kind == b"PSUBSCRIBE":
            s.patterns.setdefault(name, compile_glob(name))
        else:
            s.channels.add(name)
        replies.append(Push([kind.lower(), name, len(s.channels) + len(s.patterns)]))
    return replies


def unsubscribe(s: Session, argv: list[bytes], env: Env) -> object:
    kind = argv[0].upper()
    table: dict | set = s.patterns if kind == b"PUNSUBSCRIBE" else s.channels
    names = argv[1:] or sorted(table)
    if not names:
        return [Push([kind.lower(), None, len(s.channels) + len(s.patterns)])]
    replies = []
    for name in names:
        if isinstance(table, dict):
            table.pop(name, None)
        else:
            table.discard(name)
        replies.append(Push([kind.lower(), name, len(s.channels) + len(s.patterns)]))
    return replies


def notices(s: Session, key: bytes, event: bytes) -> list[Push]:
    """The messages one change owes a subscribed session: on the key's keyspace channel
    (payload: the event) and on the event's keyevent channel (payload: the key)."""
    out = []
    for channel, payload in ((KEYSPACE + key, event), (KEYEVENT + event, key)):
        if channel in s.channels:
            out.append(Push([b"message", channel, payload]))
        for pattern, match in s.patterns.items():
            if match(channel):
                out.append(Push([b"pmessage", pattern, channel, payload]))
    return out


def info(s: Session, argv: list[bytes], env: Env) -> object:
    return env.info(argv[1:])


def _text(raw: bytes) -> str:
    return text(raw[:128])


# name -> (Redis arity, handler). EXEC is the door's: it runs its queue through the node.
SESSION_COMMANDS: dict[bytes, tuple[int, Command]] = {
    b"HELLO": (-1, hello), b"AUTH": (-2, auth), b"SELECT": (2, select), b"QUIT": (-1, quit_),
    b"RESET": (1, reset), b"CLIENT": (-2, client), b"COMMAND": (-1, command),
    b"CONFIG": (-2, config), b"MULTI": (1, multi), b"DISCARD": (1, discard),
    b"WATCH": (-2, watch), b"UNWATCH": (1, unwatch), b"SUBSCRIBE": (-2, subscribe),
    b"PSUBSCRIBE": (-2, subscribe), b"UNSUBSCRIBE": (-1, unsubscribe),
    b"PUNSUBSCRIBE": (-1, unsubscribe), b"INFO": (-1, info),
}
# What a RESP2 connection may still send while subscribed.
WHILE_SUBSCRIBED = {b"SUBSCRIBE", b"PSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"PING",
                    b"QUIT", b"RESET"}
# Run at once even inside MULTI, as Redis does.
NOT_QUEUED = {b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"}
# Of the command table, the ones this door answers itself or that Redis does not have.
# MULTI, EXEC and DISCARD are the node's too (kvd.state.transaction), but here the session's:
# this door's EXEC also answers Redis's WATCH.
NOT_FOR_THE_NODE = {b"WATCH", b"HELP", b"INFO", b"MULTI", b"EXEC", b"DISCARD"}
