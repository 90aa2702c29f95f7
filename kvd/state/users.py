"""Users: who may connect, with which password or token, and what each may touch.

Users are data, replicated like any key: each is one entry under `USERS` in the node's hidden
system namespace (`SYSTEM`), so a user added on one node is enforced on every node once the
write has replicated (the same lag as any write), and a deleted one loses access everywhere
within that lag. No user command can name a key in the system namespace, and KEYS, SCAN,
RANDOMKEY, DBSIZE, WATCH and the change streams never show one (kvd.state.store hides them).

Passwords are kept only as salted scrypt hashes; bearer tokens only as SHA-256 digests (a
token is 32 random bytes: nothing to slow down). Every comparison of a secret is constant-time.
Nothing here prints a hash or a token: `User.__repr__` leaves them out.

`Users` mirrors the records in the store: the node feeds it every change to a system key, from
a local command, a peer or the log's replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from kvd.state.store import SYSTEM, matcher

USERS = SYSTEM + b"user\x00"
MAX_TOKENS = 16  # per user; issuing one more forgets the oldest

# scrypt's cost: about 50 ms and 16 MiB per hash on a 2020s core, which makes a stolen log
# slow to brute-force. Logins pay it once: Access caches a verified password (keyed HMAC).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1


def hash_password(password: bytes, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password, salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: bytes, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = _unb64(digest)
        got = hashlib.scrypt(password, salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want))
    except ValueError:
        return False
    return hmac.compare_digest(got, want)


def token_digest(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()


def new_token(name: bytes) -> bytes:
    """`kvt.<user, base64>.<32 random bytes, base64>`: the name says whose digests to compare."""
    return b"kvt." + _b64(name).encode() + b"." + _b64(secrets.token_bytes(32)).encode()


def token_owner(token: bytes) -> bytes | None:
    parts = token.split(b".")
    if len(parts) != 3 or parts[0] != b"kvt":
        return None
    try:
        return _unb64(parts[1].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _matcher(pattern: bytes) -> Callable[[bytes], object]:
    match = matcher(pattern)  # the store's: plain `prefix*` patterns skip the regex engine
    return (lambda key: True) if match is None else match


def _literal_prefix(pattern: bytes) -> bytes | None:
    """`app:` for `app:*`, b"" for `*`; None for a pattern that is not a plain prefix."""
    body = pattern[:-1]
    if pattern.endswith(b"*") and not any(c in body for c in b"*?[\\"):
        return body
    return None


@dataclass(eq=False)
class User:
    """One user: read and write permissions by key pattern (Redis globs), or admin (all keys,
    and the users themselves). Write permission includes reading the same keys."""

    name: bytes
    password: str = field(repr=False)  # the scrypt hash, never the password
    read: tuple[bytes, ...] = ()
    write: tuple[bytes, ...] = ()
    admin: bool = False
    tokens: tuple[str, ...] = field(default=(), repr=False)  # SHA-256 digests, oldest first

    def __post_init__(self) -> None:
        self._readers = [_matcher(p) for p in (*self.read, *self.write)]
        self._writers = [_matcher(p) for p in self.write]

    def can_read(self, key: bytes) -> bool:
        if self.admin:
            return True
        for match in self._readers:  # noqa: SIM110 - a loop, not any(): every request runs it
            if match(key):
                return True
        return False

    def can_write(self, key: bytes) -> bool:
        if self.admin:
            return True
        for match in self._writers:  # noqa: SIM110 - as above
            if match(key):
                return True
        return False

    def reads_anything(self) -> bool:
        return self.admin or bool(self._readers)

    def reads_prefix(self, prefix: bytes) -> bool:
        """Whether every key that starts with `prefix` is readable (a WATCH of it)."""
        if self.admin:
            return True
        for pattern in (*self.read, *self.write):
            literal = _literal_prefix(pattern)
            if literal is not None and prefix.startswith(literal):
                return True
        return False

    def has_token(self, token: bytes) -> bool:
        digest = token_digest(token)
        found = False
        for stored in self.tokens:  # every one compared: the time says nothing of which
            found |= hmac.compare_digest(stored, digest)
        return found

    def encode(self) -> bytes:
        return msgpack.packb({"v": 1, "password": self.password, "read": list(self.read),
                              "write": list(self.write), "admin": self.admin,
                              "tokens": list(self.tokens)}, use_bin_type=True)

    @classmethod
    def decode(cls, name: bytes, raw: bytes) -> User | None:
        """The record, or None when it is not one this version understands."""
        try:
            data = msgpack.unpackb(raw, raw=False)
            return cls(name, str(data["password"]), tuple(bytes(p) for p in data["read"]),
                       tuple(bytes(p) for p in data["write"]), bool(data["admin"]),
                       tuple(str(t) for t in data["tokens"]))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException):
            return None

    def describe(self) -> dict:
        return {"name": self.name, "admin": self.admin, "read": list(self.read),
                "write": list(self.write), "tokens": len(self.tokens)}


def user_key(name: bytes) -> bytes:
    return USERS + name


class Users:
    """The users the node knows, mirrored from the system namespace of its store."""

    def __init__(self) -> None:
        self.by_name: dict[bytes, User] = {}
        self.on_change: list[Callable[[], None]] = []  # e.g. the node's `locked` flag

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: bytes) -> User | None:
        return self.by_name.get(name)

    def admins(self) -> int:
        return sum(1 for u in self.by_name.values() if u.admin)

    def observe(self, items: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Keys under USERS with their live value (None: deleted or expired)."""
        changed = False
        for key, value in items:
            if not key.startswith(USERS):
                continue
            name = key[len(USERS):]
            user = User.decode(name, value) if value is not None else None
            if user is None:
                changed |= self.by_name.pop(name, None) is not None
            else:
                self.by_name[name] = user
                changed = True
        if changed:
            for callback in self.on_change:
                callback()
