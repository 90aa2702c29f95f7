"""The sans-IO TLS session (kvd.doors.tls) with no sockets: a server session and a client
session pass their bytes to each other through memory. Also the server context's refusals
and the TLS settings' checks in kvd.config."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from kvd import config
from kvd.doors.tls import TlsError, TlsLink, TlsSession, TlsSetupError, server_context
from tests.tlscerts import Certs, make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def sessions(certs: Certs, ca: Path | None = None, client: ssl.SSLContext | None = None
             ) -> tuple[TlsSession, TlsSession]:
    server = TlsSession(server_context(certs.cert, certs.key, ca))
    return server, TlsSession(client or certs.client_context(), server_side=False,
                              server_hostname="localhost")


def exchange(server: TlsSession, client: TlsSession) -> tuple[bytes, bytes]:
    """Start the client, then pass bytes both ways until neither has any to send; return
    the plaintext each side received (server's, client's)."""
    got_server, got_client = [], []
    client.feed(b"")  # nothing came yet: the client starts its handshake (a ClientHello)
    to_server = client.data_to_send()
    for _ in range(10):
        got_server.append(server.feed(to_server) if to_server else b"")
        to_client = server.data_to_send()
        got_client.append(client.feed(to_client) if to_client else b"")
        to_server = client.data_to_send()
        if not to_server and not to_client:
            break
    return b"".join(got_server), b"".join(got_client)


def test_a_handshake_through_memory_then_data_both_ways(certs: Certs) -> None:
    server, client = sessions(certs)
    assert exchange(server, client) == (b"", b"")
    assert server.established and client.established
    assert server.version in ("TLSv1.2", "TLSv1.3")
    assert server.feed(client.encrypt(b"PING\r\n")) == b"PING\r\n"
    assert client.feed(server.encrypt(b"+PONG\r\n")) == b"+PONG\r\n"


def test_data_sent_with_the_final_handshake_bytes_is_not_lost(certs: Certs) -> None:
    server, client = sessions(certs)
    client.feed(b"")
    server.feed(client.data_to_send())  # ClientHello
    client.feed(server.data_to_send())  # ServerHello .. Finished: the client is done
    assert client.established and not server.established
    pipelined = b"SET a 1\r\n" * 100
    flight = client.encrypt(pipelined)  # the client's Finished and its requests, together
    assert server.feed(flight) == pipelined
    assert server.established


def test_early_plaintext_waits_for_the_handshake(certs: Certs) -> None:
    server, client = sessions(certs)
    assert server.encrypt(b"hello") == b""  # nothing can be encrypted yet: it is held
    assert exchange(server, client) == (b"", b"hello")  # ... and sent once it can be


def test_megabytes_in_odd_pieces_arrive_whole(certs: Certs) -> None:
    server, client = sessions(certs)
    exchange(server, client)
    payload = bytes(range(256)) * 4096  # 1 MiB, not compressible into a lucky accident
    wire = client.encrypt(payload)
    got = b"".join(server.feed(wire[i:i + 1337]) for i in range(0, len(wire), 1337))
    assert got == payload
    reply = server.encrypt(payload)
    assert client.feed(reply) == payload


def test_close_notify_ends_the_peer_and_ours_is_sent_once(certs: Certs) -> None:
    server, client = sessions(certs)
    exchange(server, client)
    assert server.feed(client.encrypt(b"QUIT\r\n") + client.close()) == b"QUIT\r\n"
    assert server.peer_closed
    goodbye = server.encrypt(b"+OK\r\n") + server.close()  # a reply still goes, then ours
    assert client.feed(goodbye) == b"+OK\r\n" and client.peer_closed
    assert server.close() == b"" and server.encrypt(b"late") == b""


@pytest.mark.parametrize("garbage", [b"*1\r\n$4\r\nPING\r\n", b"GET / HTTP/1.1\r\n\r\n",
                                     b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff",
                                     b"\x16\x03\x03\xff\xff" + b"\x00" * 64])
def test_bytes_that_are_not_tls_fail_the_handshake_once(certs: Certs, garbage: bytes) -> None:
    server, _ = sessions(certs)
    with pytest.raises(TlsError) as failed:
        server.feed(garbage)
    assert failed.value.reason
    assert not server.established
    assert server.feed(b"more") == b""  # a failed session takes nothing more


def test_a_plaintext_client_is_named_as_one(certs: Certs) -> None:
    server, _ = sessions(certs)
    with pytest.raises(TlsError, match="plain"):
        server.feed(b"PING\r\n")


def test_with_a_ca_a_client_without_a_certificate_is_refused(certs: Certs) -> None:
    server, client = sessions(certs, ca=certs.ca)
    with pytest.raises(TlsError, match="no certificate"):
        exchange(server, client)
    assert not server.established


def test_with_a_ca_a_stranger_certificate_is_refused(certs: Certs) -> None:
    stranger = certs.client_context(certs.stranger_cert, certs.stranger_key)
    server, client = sessions(certs, ca=certs.ca, client=stranger)
    with pytest.raises(TlsError):
        exchange(server, client)
    assert not server.established


def test_with_a_ca_a_certificate_it_signed_gets_through(certs: Certs) -> None:
    signed = certs.client_context(certs.client_cert, certs.client_key)
    server, client = sessions(certs, ca=certs.ca, client=signed)
    exchange(server, client)
    assert server.feed(client.encrypt(b"PING\r\n")) == b"PING\r\n"


def test_tls_older_than_1_2_is_refused(certs: Certs) -> None:
    old = certs.client_context()
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.warns(DeprecationWarning):
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 would not even offer TLS 1.1
    server, client = sessions(certs, client=old)
    with pytest.raises(TlsError, match="older than 1.2"):
        exchange(server, client)
    assert not server.established


def test_the_link_reads_like_a_socket() -> None:
    link = TlsLink(None, 0.0)  # type: ignore[arg-type]
    with pytest.raises(BlockingIOError):
        link.recv(10)
    link.plain.extend([b"abcdef", b"gh"])
    assert [link.recv(4), link.recv(4), link.recv(4)] == [b"abcd", b"ef", b"gh"]
    link.eof = True
    assert link.recv(4) == b""


# -- the server context and the settings ---------------------------------------------------


def test_a_key_that_is_not_the_certificates_is_one_clear_line(certs: Certs) -> None:
    with pytest.raises(TlsSetupError) as failed:
        server_context(certs.cert, certs.client_key)
    message = str(failed.value)
    assert "--tls-cert" in message and "--tls-key" in message and "\n" not in message


def test_a_key_with_a_passphrase_is_refused_not_prompted_for(certs: Certs,
                                                             tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(TlsSetupError, match="passphrase"):
        server_context(certs.cert, locked)


def test_a_ca_file_that_is_not_pem_is_one_clear_line(certs: Certs, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError, match="--tls-ca"):
        server_context(certs.cert, certs.key, junk)


def load(tmp_path: Path, **flags: object) -> config.Config:
    """config.load with an empty config file (never the user's own)."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return config.load(empty, {"data_dir": tmp_path, **flags})


def test_settings_cert_and_key_go_together(certs: Certs, tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="--tls-cert needs --tls-key"):
        load(tmp_path, tls_cert=certs.cert)
    with pytest.raises(config.ConfigError, match="--tls-key needs --tls-cert"):
        load(tmp_path, tls_key=certs.key)
    with pytest.raises(config.ConfigError, match="--tls-ca needs"):
        load(tmp_path, tls_ca=certs.ca)
    assert load(tmp_path).tls_cert is None


def test_settings_files_must_be_readable(certs: Certs, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(config.ConfigError, match=f"cannot read --tls-key {missing}"):
        load(tmp_path, tls_cert=certs.cert, tls_key=missing)
    with pytest.raises(config.ConfigError, match="cannot read --tls-ca"):
        load(tmp_path, tls_cert=certs.cert, tls_key=certs.key, tls_ca=tmp_path)  # a folder


def test_settings_come_from_the_file_and_flags_win(certs: Certs, tmp_path: Path) -> None:
    toml = tmp_path / "kvd.toml"
    toml.write_text(f'tls_cert = "{certs.client_cert}"\ntls_key = "{certs.client_key}"\n'
                    f'tls-ca = "{certs.ca}"\n')
    cfg = config.load(toml, {"data_dir": tmp_path, "tls_cert": certs.cert})
    assert (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) == (certs.cert, certs.client_key, certs.ca)
