"""Which CURVE key pair each peer link uses (kvd.cluster.links), without sockets: round robin
over the keyring on failed handshakes, and monitor events mapped back to the SUB's endpoints."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from kvd.cluster.links import CurveLinks
from kvd.cluster.peers import Peers
from shared.keyring import Keyring

E = "tcp://10.0.0.2:7701"


def test_a_failed_link_moves_round_robin_and_a_success_settles_it(caplog) -> None:
    links = CurveLinks(Keyring([b"n" * 32, b"o" * 32, b"p" * 32]))
    assert links.index.get(E, 0) == 0
    with caplog.at_level(logging.WARNING, "kvd.cluster.links"):
        # two failures of the same link in one read count once: the second was of the old pair
        assert links.outcomes([(E, False), (E, False)], 0, "gossip") == {E}
        assert links.index[E] == 1 and not caplog.records
        assert links.outcomes([(E, True)], 10, "gossip") == set()
        assert links.index[E] == 1  # the pair that worked stays
        for now in (20, 30, 40):  # a whole cycle fails: the secret probably differs
            assert links.outcomes([(E, False)], now, "gossip") == {E}
    assert links.index[E] == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"the CURVE handshake with {E} (gossip) fails with every key of our keyring: its "
        "cluster secret probably differs from ours — every node needs the same "
        "--cluster-secret-file"]


def test_with_one_secret_there_is_nothing_else_to_try() -> None:
    links = CurveLinks(Keyring([b"n" * 32]))
    assert links.outcomes([(E, False)], 0, "requests") == set()
    assert links.index.get(E, 0) == 0 and links.failures == 1


@pytest.mark.parametrize(("seen", "ours"), [
    ("tcp://localhost:7701", "tcp://localhost:7701"),  # as connected
    ("tcp://127.0.0.1:7701", "tcp://localhost:7701"),  # resolved, after a reconnect
    ("tcp://10.0.0.2:7702", "tcp://10.0.0.2:7702"),
    ("tcp://10.0.0.3:7701", ""),  # not ours
    ("tcp://127.0.0.1:9", ""),
])
def test_monitor_events_map_back_to_the_endpoint_connected(seen: str, ours: str) -> None:
    stub = SimpleNamespace(subscribed={"localhost:7701", "10.0.0.2:7702"})
    assert Peers._subscribed_as(stub, seen) == ours  # type: ignore[arg-type]
