"""What a member says of itself in its heartbeats, beside its membership: its HTTP door and its
keyspace digest. MEMBERS reports them, so the console compares digests and links to members
through its own node. Optional on the wire: a heartbeat from an older node has neither."""

from __future__ import annotations

import dataclasses

from shared.codec import MsgType, Peer
from tests.sim import SimNet


def rows(net: SimNet, name: str) -> dict[str, dict]:
    return {r["name"]: r for r in net.nodes[name].cluster.members_view(net.now)}


def test_members_learn_each_others_http_door_and_digest() -> None:
    net = SimNet()
    net.add("n0").cluster.http = "http://10.0.0.1:7780"
    net.add("n1", ["n0:1"]).cluster.http = "https://[::1]:8443"
    net.run(2000)
    net.write("n1", b"k", b"v")
    net.run(1000)
    seen = rows(net, "n0")
    assert seen["n0"]["http"] == "http://10.0.0.1:7780" and seen["n0"]["digest_age_ms"] == 0
    assert seen["n1"]["http"] == "https://[::1]:8443"
    digest = f"{net.nodes['n1'].node.store.digest:016x}"
    assert seen["n1"]["digest"] == digest == seen["n0"]["digest"] != f"{0:016x}"
    assert 0 <= seen["n1"]["digest_age_ms"] <= net.settings.timers.heartbeat_ms + 50


def test_a_closed_door_is_none() -> None:
    net = SimNet().form("n0", "n1")  # Cluster's default: no HTTP door
    assert rows(net, "n0")["n1"]["http"] is None


def heartbeat(net: SimNet, name: str, **change: object) -> Peer:
    out = net.nodes[name].cluster._heartbeat(net.now)  # the one the next tick would send
    assert out.msg.type is MsgType.HEARTBEAT
    body = {k: v for k, v in {**out.msg.body, **change}.items() if v is not None}
    return dataclasses.replace(out.msg, body=body)


def test_a_heartbeat_from_an_older_node_is_taken_without_them() -> None:
    net = SimNet()
    net.add("n0")
    net.add("n1", ["n0:1"])
    net.run(50)  # joined, before n1's first heartbeat could have told anything
    n0 = net.nodes["n0"].cluster
    n0.http_of.clear()
    n0.digest_of.clear()
    n0.receive(heartbeat(net, "n1", http=None, digest=None), net.now)
    assert n0.counters["dropped_malformed"] == 0
    row = rows(net, "n0")["n1"]
    assert (row["http"], row["digest"], row["digest_age_ms"]) == (None, None, None)


def test_malformed_fields_drop_the_heartbeat() -> None:
    net = SimNet().form("n0", "n1")
    n0 = net.nodes["n0"].cluster
    for bad in ({"http": 7780}, {"digest": -1}, {"digest": 1 << 64}, {"digest": "ab"}):
        before = n0.counters["dropped_malformed"]
        n0.receive(heartbeat(net, "n1", **bad), net.now)
        assert n0.counters["dropped_malformed"] == before + 1, bad
