"""The cluster keyring, sans IO: key derivation (pinned), the secret file's text, the ZAP policy,
and the ZAP handler's replies (fed frames by hand, no socket)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import zmq
from zmq.auth.base import VERSION
from zmq.utils import z85

from kvd.doors.zap import Gatekeeper
from shared import keyring
from shared.keyring import (
    CLIENT_DOMAIN,
    CLIENT_USER,
    GOSSIP_DOMAIN,
    PEER_USER,
    Keyring,
    KeyringError,
    decide,
    derive,
    parse,
    server_key,
)

SECRET = bytes(range(32))
# Changing the derivation changes every cluster's keys: nodes of two versions would no longer
# link. These pin it.
PINNED_PUBLIC = b"/nBoNY?I9t+(zK&7oof[=b5:oz<^}e@#<w:U2Xk0"


def test_derivation_is_pinned_and_follows_the_documented_recipe() -> None:
    pair = derive(SECRET)
    expected_secret = z85.encode(hmac.new(SECRET, b"kv curve key v1", hashlib.sha256).digest())
    assert pair.secret == expected_secret
    assert pair.public == zmq.curve_public(expected_secret) == PINNED_PUBLIC
    assert derive(SECRET) == pair  # deterministic: every node derives the same pair
    assert derive(bytes(32)).public != pair.public


def test_a_keyring_puts_the_current_secret_first_and_knows_every_peer_key() -> None:
    old, new = bytes(32), SECRET
    ring = Keyring([new, old, new])
    assert [p.public for p in ring.pairs] == [derive(new).public, derive(old).public]
    assert ring.current == derive(new)
    assert ring.peer_keys == {z85.decode(derive(new).public), z85.decode(derive(old).public)}
    with pytest.raises(KeyringError):
        Keyring([])


def test_no_secret_ever_shows_in_a_repr() -> None:
    ring = Keyring([SECRET, bytes(32)])
    shown = repr(ring) + repr(ring.current) + repr(ring.pairs)
    assert SECRET.hex() not in shown
    for pair in ring.pairs:
        assert pair.secret.decode() not in shown
    assert derive(SECRET).public.decode() in repr(ring)


def test_the_file_text_one_secret_a_line_current_first() -> None:
    text = f"# rolled in on Monday\n\n  {SECRET.hex()}  \n{bytes(32).hex()}\n"
    ring = parse(text, "f")
    assert ring.current == derive(SECRET) and len(ring.pairs) == 2
    assert parse(keyring.new_secret(), "f").current != parse(keyring.new_secret(), "f").current


@pytest.mark.parametrize(("text", "says"), [
    ("", "holds no secret"),
    ("# only a comment\n", "holds no secret"),
    ("abcd\n", "line 1 is not a secret: expected 64 hex digits"),
    (f"{SECRET.hex()}\n{'z' * 64}\n", "line 2 is not a secret: it holds characters"),
])
def test_a_bad_file_says_which_line_and_never_echoes_it(text: str, says: str) -> None:
    with pytest.raises(KeyringError) as err:
        parse(text, "secret.txt")
    assert says in err.value.message and err.value.message.startswith("secret.txt")
    for line in text.splitlines():
        if len(line) > 8:
            assert line not in err.value.message


CURRENT, PREVIOUS, STRANGER = derive(SECRET), derive(bytes(32)), derive(b"x" * 32)
RING = Keyring([SECRET, bytes(32)])


@pytest.mark.parametrize(("domain", "pair", "verdict"), [
    (GOSSIP_DOMAIN, CURRENT, (True, PEER_USER)),
    (GOSSIP_DOMAIN, PREVIOUS, (True, PEER_USER)),  # a node still on the old secret
    (GOSSIP_DOMAIN, STRANGER, (False, "not a cluster key")),
    (CLIENT_DOMAIN, CURRENT, (True, PEER_USER)),
    (CLIENT_DOMAIN, PREVIOUS, (True, PEER_USER)),
    (CLIENT_DOMAIN, STRANGER, (True, CLIENT_USER)),  # a shell's ephemeral key: a client
    (b"", CURRENT, (False, "unknown domain")),
    (b"other", STRANGER, (False, "unknown domain")),
])
def test_the_zap_policy(domain: bytes, pair: keyring.KeyPair, verdict: tuple) -> None:
    assert decide(domain, pair.raw_public, RING.peer_keys) == verdict
    assert RING.decide(domain, pair.raw_public) == verdict


def test_server_keys_are_checked_before_use() -> None:
    key = derive(SECRET).public
    assert server_key(key.decode()) == key and server_key(b" " + key + b"\n") == key
    for bad in ("", "short", "x" * 39, "#" * 40, "~" * 40, "é" * 40):
        with pytest.raises(KeyringError, match="not a server key"):
            server_key(bad)


class FakeZap:
    def __init__(self, requests: list[list[bytes]]) -> None:
        self.requests, self.sent = list(requests), []

    def recv_multipart(self, flags: int = 0) -> list[bytes]:
        if not self.requests:
            raise zmq.Again()
        return self.requests.pop(0)

    def send_multipart(self, frames: list[bytes]) -> None:
        self.sent.append(frames)


def zap_request(rid: bytes, domain: bytes, mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [VERSION, rid, domain, b"10.0.0.9", b"", mechanism, *credentials]


def test_the_zap_handler_answers_each_request_and_counts_refusals() -> None:
    gate = Gatekeeper(RING)
    gate.zap_socket = FakeZap([  # type: ignore[assignment]
        zap_request(b"1", GOSSIP_DOMAIN, b"CURVE", PREVIOUS.raw_public),
        zap_request(b"2", GOSSIP_DOMAIN, b"CURVE", STRANGER.raw_public),
        zap_request(b"3", CLIENT_DOMAIN, b"CURVE", STRANGER.raw_public),
        zap_request(b"4", GOSSIP_DOMAIN, b"NULL"),
        [b"9.9", b"5", GOSSIP_DOMAIN, b"a", b"", b"CURVE", CURRENT.raw_public],  # bad version
        [VERSION, b"6"],  # too short
    ])
    gate.answer(now=100.0)
    assert [f[1:5] for f in gate.zap_socket.sent] == [
        [b"1", b"200", b"OK", PEER_USER.encode()],
        [b"2", b"400", b"not a cluster key", b""],
        [b"3", b"200", b"OK", CLIENT_USER.encode()],
        [b"4", b"400", b"not a CURVE handshake", b""],
        [b"5", b"400", b"Invalid version", b""],
        [b"6", b"400", b"Not enough frames", b""],
    ]
    assert gate.info() == {"curve_refused": 2}


def test_a_server_key_that_begins_with_a_dash_is_taken_as_the_flag_s_value() -> None:
    """Z85 keys may begin with "-" (about 1 in 85): argparse would read it as an option."""
    import argparse

    argv = ["--port", "7", "--server-key", "-abc.def", "-c", "PING"]
    glued = keyring.glued_key_flags(argv)
    assert glued == ["--port", "7", "--server-key=-abc.def", "-c", "PING"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--port")
    parser.add_argument("--server-key")
    parser.add_argument("-c")
    assert parser.parse_args(glued).server_key == "-abc.def"
    assert keyring.glued_key_flags(["--server-key"]) == ["--server-key"]  # argparse says why
