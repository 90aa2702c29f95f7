"""kvsh's known_hosts: trust on first use, then insist (kvsh.knownhosts), without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvsh.knownhosts import Choice, KeyChanged, choose, lookup, remember
from shared.keyring import KeyringError, derive

A, B = derive(b"a" * 32).public, derive(b"b" * 32).public


def test_the_table(tmp_path: Path) -> None:
    path = tmp_path / "kvsh" / "known_hosts"
    assert choose(path, "h:1", None) == Choice(None, False)  # nothing known, nothing given
    assert choose(path, "h:1", A.decode()) == Choice(A, True)  # first use: remember it
    remember(path, "h:1", A)
    assert choose(path, "h:1", None) == Choice(A, False)  # known: used
    assert choose(path, "h:1", A.decode()) == Choice(A, False)
    assert choose(path, "h:2", B.decode()) == Choice(B, True)  # another port, another node
    before = path.read_bytes()
    with pytest.raises(KeyChanged) as err:
        choose(path, "h:1", B.decode())
    message = err.value.message
    assert "has changed" in message and f"remove line 1 of {path}" in message
    assert A.decode() in message and B.decode() in message
    assert path.read_bytes() == before


def test_lines_are_found_by_exact_host_and_port(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"# kv nodes\n\nh:10 {B.decode()}\nh:1 {A.decode()}")  # no final newline
    assert lookup(path, "h:1") == (A, 4) and lookup(path, "h:10") == (B, 3)
    assert lookup(path, "h") is None and lookup(path, "# kv") is None
    remember(path, "g:1", B)
    assert path.read_text().splitlines()[-2:] == [f"h:1 {A.decode()}", f"g:1 {B.decode()}"]


def test_a_given_key_that_is_no_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        choose(tmp_path / "known_hosts", "h:1", "not-a-key")
