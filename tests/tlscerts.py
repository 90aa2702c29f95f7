"""Certificates for the TLS tests, made by the test itself (trustme): nothing outside the
repository, nothing that expires between runs.

A CA; a server certificate it signed for `localhost` and `127.0.0.1`; a client certificate
it signed; and a client certificate another CA signed (a stranger's). Every file is PEM.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

trustme = pytest.importorskip("trustme", reason="trustme is a test dependency: "
                              "pip install -e .[test]")


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate: what clients trust, and what --tls-ca names
    cert: Path  # the server's certificate
    key: Path  # ... and its key
    client_cert: Path  # a client certificate the CA signed
    client_key: Path
    stranger_cert: Path  # a client certificate another CA signed
    stranger_key: Path

    def client_context(self, cert: Path | None = None, key: Path | None = None
                       ) -> ssl.SSLContext:
        """A client context that trusts the CA, optionally with a client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(cert, key)
        return context


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client@kv.test")
    stranger = other.issue_cert("stranger@kv.test")
    paths = {name: folder / f"{name}.pem" for name in (
        "ca", "cert", "key", "client_cert", "client_key", "stranger_cert", "stranger_key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for who, blob in (("", server), ("client_", client), ("stranger_", stranger)):
        blob.cert_chain_pems[0].write_to_path(str(paths[f"{who}cert"]))
        blob.private_key_pem.write_to_path(str(paths[f"{who}key"]))
    return Certs(**paths)
