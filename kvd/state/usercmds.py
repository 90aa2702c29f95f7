"""The USER command (and AUTH's stand-in): managing the users of kvd.state.users.

USER checks its caller itself rather than by its class in the command table, because who may
run it depends on the state: while no user exists, anyone on this host (loopback) may create
the first one, and it must be an admin; after that, only an admin changes users, and any user
may issue a token for themself. Every change is a write to the system namespace: it is
logged, replicated to every node and logged here with who made it.
"""

from __future__ import annotations

import logging
import re

from kvd.state.access import NEEDS_AUTH, is_loopback
from kvd.state.context import Context, Node
from kvd.state.users import MAX_TOKENS, User, hash_password, new_token, token_digest, user_key
from shared.commands import Call
from shared.errors import KvError, NoAuth, NoPerm, SyntaxError_

log = logging.getLogger("kvd.users")

# No ':' (HTTP Basic splits on it), no spaces or control characters (log lines, shells).
NAME = re.compile(rb"[A-Za-z0-9_.@+-]{1,64}")
MAX_PASSWORD = 1024
USAGE = ("usage: USER ADD name password [READ pattern]... [WRITE pattern]... [ADMIN] | "
         "USER DEL name | USER LIST | USER TOKEN name [REVOKE]")


class UserError(KvError):
    code = "USER"


def auth(node: Node, call: Call, ctx: Context) -> object:
    # The doors answer AUTH (a connection's state) once users exist; the node sees it while
    # none does, or where no session exists to log in (inside a batch).
    if not len(node.users):
        raise UserError("no user exists on this node, so there is nothing to log in to — "
                        "kvd user add NAME --admin creates the first")
    raise KvError("AUTH must be sent on its own, not in a batch or transaction")


def user(node: Node, call: Call, ctx: Context) -> object:
    sub = call.args[0].upper()
    rest = list(call.args[1:])
    _allowed(node, ctx, sub, rest)
    if sub == b"ADD":
        return _add(node, ctx, rest)
    if sub == b"DEL" and len(rest) == 1:
        return _delete(node, ctx, rest[0])
    if sub == b"LIST" and not rest:
        return [u.describe() for _, u in sorted(node.users.by_name.items())]
    if sub == b"TOKEN" and len(rest) in (1, 2):
        revoke = len(rest) == 2
        if revoke and rest[1].upper() != b"REVOKE":
            raise SyntaxError_(USAGE)
        return _token(node, ctx, rest[0], revoke)
    raise SyntaxError_(USAGE)


def _allowed(node: Node, ctx: Context, sub: bytes, rest: list[bytes]) -> None:
    if not len(node.users):
        if sub != b"ADD":
            if sub == b"LIST":
                return
            raise UserError("no user exists yet — add the first (an admin): kvd user add "
                            "NAME --admin")
        if not is_loopback(ctx.source):
            raise NoPerm("the first user can only be added from the node's own host "
                         "(loopback) — run kvd user add there")
        if b"ADMIN" not in (r.upper() for r in rest[2:]):
            raise UserError("the first user must be an admin (--admin): only an admin can "
                            "add the others")
        return
    caller = ctx.user
    if caller is None:
        raise NoAuth(NEEDS_AUTH)
    if caller.admin or (sub == b"TOKEN" and rest[:1] == [caller.name]):
        return
    raise NoPerm(f"user {_text(caller.name)} may not manage users: that needs an admin",
                 redis="NOPERM this user has no permissions to run the 'user' command")


def _add(node: Node, ctx: Context, rest: list[bytes]) -> object:
    if len(rest) < 2:
        raise SyntaxError_(USAGE)
    name, password = rest[0], rest[1]
    if not NAME.fullmatch(name):
        raise UserError("a user name is 1-64 letters, digits or _.@+- — pick another")
    if not 0 < len(password) <= MAX_PASSWORD:
        raise UserError(f"a password is 1-{MAX_PASSWORD} bytes")
    if node.users.get(name) is not None:
        raise UserError(f"user {_text(name)} exists — delete it first (kvd user del "
                        f"{_text(name)})")
    read: list[bytes] = []
    write: list[bytes] = []
    admin, i = False, 2
    while i < len(rest):
        word = rest[i].upper()
        if word == b"ADMIN":
            admin, i = True, i + 1
        elif word in (b"READ", b"WRITE") and i + 1 < len(rest):
            (read if word == b"READ" else write).append(rest[i + 1])
            i += 2
        else:
            raise SyntaxError_(USAGE)
    record = User(name, hash_password(password), tuple(read), tuple(write), admin)
    _store(node, record)
    log.info("user %r added (admin: %s, read: %r, write: %r) by %s from %s", name, admin,
             read, write, _who(ctx), ctx.source or "?")
    return "OK"


def _delete(node: Node, ctx: Context, name: bytes) -> object:
    record = node.users.get(name)
    if record is None:
        return 0
    if record.admin and node.users.admins() == 1:
        raise UserError(f"{_text(name)} is the last admin — add another admin first")
    key = user_key(name)
    node.write(key, None)
    node.users.observe([(key, None)])
    node.hidden_changes = True  # the turn's watchers and notifications must not see it
    log.info("user %r deleted by %s from %s", name, _who(ctx), ctx.source or "?")
    return 1


def _token(node: Node, ctx: Context, name: bytes, revoke: bool) -> object:
    record = node.users.get(name)
    if record is None:
        raise UserError(f"no user {_text(name)} — kvd user list shows them")
    if revoke:
        _store(node, User(record.name, record.password, record.read, record.write,
                          record.admin, ()))
        log.info("tokens of user %r revoked by %s", name, _who(ctx))
        return len(record.tokens)
    token = new_token(name)
    tokens = (*record.tokens, token_digest(token))[-MAX_TOKENS:]
    _store(node, User(record.name, record.password, record.read, record.write, record.admin,
                      tokens))
    log.info("token issued for user %r by %s", name, _who(ctx))
    return token


def _store(node: Node, record: User) -> None:
    key, value = user_key(record.name), record.encode()
    node.write(key, value)
    node.users.observe([(key, value)])  # at once: the turn's next request sees the change
    node.hidden_changes = True  # the turn's watchers and notifications must not see it


def _who(ctx: Context) -> str:
    return repr(ctx.user.name) if ctx.user is not None else "the first-user rule"


def _text(raw: bytes) -> str:
    return raw[:80].decode("utf-8", "replace")
