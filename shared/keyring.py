"""The cluster's CURVE keys, derived from its secret; what a node's ZAP handler admits.

Sans-IO: secrets in, key pairs and decisions out (kvd.config reads the file, kvd.doors.zap
answers ZAP requests, kvd.cluster.peers and the native door put the keys on sockets). It uses
zmq only for arithmetic (X25519 public keys, Z85), never a socket.

**One key pair for the whole cluster, derived from the secret.** For each secret

    secret key = Z85(HMAC-SHA256(secret, b"kv curve key v1"))    (any 32 bytes are an X25519 key)
    public key = zmq.curve_public(secret key)

Every node uses the current secret's pair as CURVE *server* key on its client ROUTER and its
gossip PUB, and as CURVE *client* key on its DEALERs and its SUB (expecting the same public key
as server key). Why not a key pair per node: a ZeroMQ socket has one server key, and a CURVE
client must know the server's public key before it sends its first byte. Per-node keys would
need a key exchange out of band before every join (and a way to trust what it says); a key
derived from the secret gives the property that matters — only holders of the secret can be
peers, because a CURVE handshake proves possession of the secret key behind the client key it
presents — with nothing to distribute but the secret itself.

**What ZAP admits** (`decide`): on the gossip port (domain GOSSIP_DOMAIN) only client keys of
the keyring, current and previous secrets; on the client port (CLIENT_DOMAIN) any key — shells
and programs use fresh ephemeral key pairs, and users are authenticated on top — but a
connection whose client key is a cluster key gets the ZAP user id PEER_USER and may send peer
messages; every other one is CLIENT_USER, and the native door drops peer messages from it.

**Rotation.** A keyring holds the current secret first and then previous secrets still
accepted (Serf's keyring): nodes accept every one's client key, connect with the current one,
and a peer link whose handshake fails moves on to the next key (kvd.cluster.peers), so nodes
serving different current secrets still link while a new secret is rolled out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets as _random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import zmq
from zmq.utils import z85

from shared.errors import KvError

DERIVATION = b"kv curve key v1"  # changing it changes every cluster's keys
SECRET_BYTES = 32
SECRET_HEX = 2 * SECRET_BYTES
KEY_Z85 = 40  # a 32-byte key in Z85

CLIENT_DOMAIN = b"kv.client"  # ZAP domain of the client ROUTER
GOSSIP_DOMAIN = b"kv.gossip"  # ... and of the gossip PUB
PEER_USER = "peer"  # ZAP user id of a connection that holds a cluster key
CLIENT_USER = "client"  # ... and of any other (ZeroMQ hands it to us as text)


class KeyringError(KvError):
    code = "CONFIG"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair in Z85 (40 ASCII bytes each); the secret half never prints."""

    public: bytes
    secret: bytes = field(repr=False)

    @property
    def raw_public(self) -> bytes:
        """The 32 bytes ZAP hands us as the client's key."""
        return z85.decode(self.public)


def derive(secret: bytes) -> KeyPair:
    """The CURVE key pair of one cluster secret (the secret's raw bytes)."""
    secret_key = z85.encode(hmac.new(secret, DERIVATION, hashlib.sha256).digest())
    return KeyPair(zmq.curve_public(secret_key), secret_key)


class Keyring:
    """The key pairs of the current secret (first) and of previous ones still accepted."""

    __slots__ = ("pairs", "peer_keys")

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise KeyringError("a keyring needs at least one secret")
        self.pairs: tuple[KeyPair, ...] = tuple(derive(s) for s in dict.fromkeys(secrets))
        self.peer_keys = frozenset(p.raw_public for p in self.pairs)

    @property
    def current(self) -> KeyPair:
        return self.pairs[0]

    def __repr__(self) -> str:  # public keys only: a keyring may end up in a log line
        return (f"Keyring(current={self.current.public.decode()}, "
                f"previous={len(self.pairs) - 1})")

    def decide(self, domain: bytes, client_key: bytes) -> tuple[bool, str]:
        return decide(domain, client_key, self.peer_keys)


def decide(domain: bytes, client_key: bytes, peer_keys: frozenset[bytes]) -> tuple[bool, str]:
    """ZAP's answer for a CURVE handshake: (admit?, user id — or why not, when refused).
    `client_key` is the raw 32-byte key the client proved it holds."""
    is_peer = client_key in peer_keys
    if domain == GOSSIP_DOMAIN:
        return (True, PEER_USER) if is_peer else (False, "not a cluster key")
    if domain == CLIENT_DOMAIN:
        return True, PEER_USER if is_peer else CLIENT_USER
    return False, "unknown domain"


def parse(text: str, source: str) -> Keyring:
    """A secret file's text: one secret per line (64 hex digits), the current one first;
    blank lines and `#` comments are skipped. Errors name the line, never its content."""
    found: list[bytes] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) != SECRET_HEX:
            raise KeyringError(f"{source} line {number} is not a secret: expected {SECRET_HEX} "
                               "hex digits (as `kvd secret new` writes)")
        try:
            found.append(bytes.fromhex(line))
        except ValueError:
            raise KeyringError(f"{source} line {number} is not a secret: it holds characters "
                               "other than hex digits") from None
    if not found:
        raise KeyringError(f"{source} holds no secret — make one with: kvd secret new FILE")
    return Keyring(found)


def new_secret() -> str:
    """A fresh secret as its file line (without the newline)."""
    return _random.token_hex(SECRET_BYTES)


def server_key(text: str | bytes) -> bytes:
    """A server public key as given by a user (Z85, 40 characters), checked; as bytes."""
    try:
        key = (text.encode("ascii") if isinstance(text, str) else text).strip()
        ok = len(key) == KEY_Z85 and len(z85.decode(key)) == SECRET_BYTES
    except (ValueError, KeyError, TypeError, struct.error):  # (UnicodeError is a ValueError)
        ok = False
    if not ok:
        raise KeyringError(f"not a server key: expected {KEY_Z85} Z85 characters, as `kvd "
                           "start` prints it (or `kvd secret key FILE`)")
    return key


def glued_key_flags(argv: list[str]) -> list[str]:
    """`--server-key KEY` as `--server-key=KEY`: a Z85 key may begin with "-", which argparse
    would otherwise take for an option (an error that names no key at all)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--server-key" and i + 1 < len(argv):
            out.append(f"--server-key={argv[i + 1]}")
            i += 2
            continue
        out.append(argv[i])
        i += 1
    return out
