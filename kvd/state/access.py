"""Access: who a connection is (authentication) and what it may do (authorization) — the one
authorizer behind every door.

While no user exists the node is open (the loopback default, Redis's protected mode keeps it
there: kvd.daemon). Once one exists, every request must come from an authenticated user, and
each command's class — from the command table, one source of truth — decides what it needs:

- `connection` (PING, ECHO, HELP, TIME, AUTH): any authenticated user;
- `read`: read permission on every key it names; a command that names none (INFO, DBSIZE,
  KEYS, SCAN) needs some read permission, and what it lists is cut to the readable keys;
- `write`: write permission on every key it names;
- `admin`: admin (FLUSHDB, the users themselves).

Failed authentications are slowed per source host: FREE_FAILURES in a row cost nothing (a
typo must not lock out every client of a shared host), then after the n-th failure the host
must wait BACKOFF_S * 2**(n-FREE_FAILURES-1) seconds (at most BACKOFF_MAX_S) before its next
attempt is even checked — refused at once, without hashing, so a brute force costs the node
nothing and gets a bounded number of guesses a second. A success clears the host's record.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from kvd.state.users import User, Users, check_password, token_owner
from shared.commands import Command
from shared.errors import NoAuth, NoPerm, WrongPass

log = logging.getLogger("kvd.access")

FREE_FAILURES = 3
BACKOFF_S = 0.1
BACKOFF_MAX_S = 10.0
MAX_SOURCES = 10_000  # failure records kept (oldest forgotten first): bounded memory
MAX_VERIFIED = 1024  # passwords remembered as verified (keyed HMAC), so logins skip scrypt

NEEDS_AUTH = ("authentication required — log in first (kvsh --user NAME, AUTH user password, "
              "HTTP Basic or Bearer)")


def host_of(source: str) -> str:
    """The host of "host:port", "[v6]:port" or a bare address: back-off is per host."""
    if source.startswith("["):
        return source[1:].split("]", 1)[0]
    return source.rsplit(":", 1)[0] if source.count(":") == 1 else source


def is_loopback(source: str) -> bool:
    """An address (or "host:port") on loopback; the name `localhost` counts (it is loopback
    by definition, RFC 6761), other names do not (no DNS lookups here)."""
    host = host_of(source)
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Access:
    def __init__(self, users: Users, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.users = users
        self.counters: Counter[str] = Counter()
        self._monotonic = monotonic
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # n, wait until
        self._key = secrets.token_bytes(32)  # this process's: a verified-password cache key
        self._verified: OrderedDict[tuple[bytes, str], bytes] = OrderedDict()

    @property
    def required(self) -> bool:
        return len(self.users) > 0

    def info(self) -> dict:
        return {"users": len(self.users), "auth_successes": self.counters["successes"],
                "auth_failures": self.counters["failures"],
                "auth_throttled": self.counters["throttled"]}

    # -- authentication ---------------------------------------------------------------------

    def login(self, name: bytes, password: bytes, source: str) -> User:
        """The user `name` if `password` is theirs; WrongPass otherwise (or while `source` must
        wait after failures)."""
        source = host_of(source)
        self._throttle(source)
        user = self.users.get(name)
        if user is not None and self._password_ok(user, password):
            return self._succeeded(user, source)
        raise self._failed(source, name, "password")

    def bearer(self, token: bytes, source: str) -> User:
        """The user a bearer token (`kvd user token`) belongs to."""
        source = host_of(source)
        self._throttle(source)
        name = token_owner(token)
        user = self.users.get(name) if name is not None else None
        if user is not None and user.has_token(token):
            return self._succeeded(user, source)
        raise self._failed(source, name or b"?", "token")

    def _password_ok(self, user: User, password: bytes) -> bool:
        mark = hmac.new(self._key, password, hashlib.sha256).digest()
        known = self._verified.get((user.name, user.password))
        if known is not None:
            return hmac.compare_digest(known, mark)
        if not check_password(password, user.password):
            return False
        self._verified[(user.name, user.password)] = mark
        if len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return True

    def _throttle(self, source: str) -> None:
        record = self._failures.get(source)
        if record is None:
            return
        wait = record[1] - self._monotonic()
        if wait > 0:
            self.counters["throttled"] += 1
            raise WrongPass(f"too many failed logins from {source}: wait {wait:.1f} s and "
                            "try again",
                            redis=f"WRONGPASS too many failed logins: wait {wait:.1f} s")

    def _succeeded(self, user: User, source: str) -> User:
        self.counters["successes"] += 1
        self._failures.pop(source, None)
        return user

    def _failed(self, source: str, name: bytes, what: str) -> WrongPass:
        self.counters["failures"] += 1
        n = self._failures.pop(source, (0, 0.0))[0] + 1
        wait = 0.0 if n <= FREE_FAILURES else min(BACKOFF_S * 2 ** (n - FREE_FAILURES - 1),
                                                   BACKOFF_MAX_S)
        self._failures[source] = (n, self._monotonic() + wait)
        if len(self._failures) > MAX_SOURCES:
            self._failures.popitem(last=False)
        # The name is the client's bytes: repr keeps a log line one line.
        log.warning("failed login (%s) as %r from %s, failure %d in a row: next attempt "
                    "checked after %.1f s", what, name, source, n, wait)
        return WrongPass("wrong user name or password — check them (or the token) and retry")

    # -- authorization ----------------------------------------------------------------------

    def current(self, user: User | None) -> User:
        """The user's record as it is now: a session keeps the User it logged in with, and a
        deletion (here or replicated from another node) must end it, a change must apply."""
        if user is None:
            raise NoAuth(NEEDS_AUTH)
        now = self.users.get(user.name)
        if now is None:
            raise NoAuth(f"user {_text(user.name)} no longer exists — log in as another")
        return now

    def check(self, user: User | None, command: Command, argv: list[bytes],
              slots: tuple[int, ...] | None = None) -> User:
        """The current record of `user` if it may run `argv` (its name first; `slots`: where
        its keys are, Command.key_slots); NoAuth or NoPerm otherwise."""
        user = self.current(user)
        access = command.access
        if user.admin or access == "connection":
            return user
        if access == "admin":
            raise NoPerm(f"{command.name} needs an admin user",
                         redis=f"NOPERM this user has no permissions to run the "
                               f"'{command.name.lower()}' command")
        if slots is None:
            slots = command.key_slots(len(argv))
        if not slots:
            if not user.reads_anything():
                raise NoPerm(f"user {_text(user.name)} has no read permission",
                             redis=f"NOPERM this user has no permissions to run the "
                                   f"'{command.name.lower()}' command")
            return user
        if command.streaming:
            for i in slots:
                if not user.reads_prefix(argv[i]):
                    raise NoPerm(f"user {_text(user.name)} may not watch '{_text(argv[i])}': "
                                 "that needs read permission on every key under it (a pattern "
                                 "like 'prefix*')")
            return user
        allowed = user.can_write if access == "write" else user.can_read
        for i in slots:
            if not allowed(argv[i]):
                raise NoPerm(f"user {_text(user.name)} may not {access} '{_text(argv[i])}'",
                             redis="NOPERM this user has no permissions to access one of the "
                                   "keys used as arguments")
        return user


def _text(raw: bytes) -> str:
    return raw[:80].decode("utf-8", "replace")
