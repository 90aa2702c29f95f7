"""WATCH resumption: cursors unique across restarts, resets, heartbeats (pure), and a client
that resumes after a daemon restart (real processes)."""

from __future__ import annotations

from kvd.state.store import Entry
from kvd.state.watch import WatchHub


def entry(value: bytes | None) -> Entry:
    return Entry(value, 1, "n1")


def current(prefix: bytes):
    return [(b"user:1", entry(b"now"))]


def drain(hub: WatchHub, client: bytes, rid: int) -> list[dict]:
    """What a door sends a subscriber with a replay or a state owed, when it can send it all."""
    sent = []
    for ev in hub.owed(client, rid):
        sent.append(ev)
        hub.sent(client, rid, ev)
    return sent


def test_events_go_to_subscribers_of_matching_prefixes():
    hub = WatchHub(first_cursor=100)
    ack = hub.subscribe(b"c", 1, b"user:", None, current)
    assert ack == {"watching": b"user:", "cursor": 100, "history": "live"} and not hub.backlog
    assert hub.record(b"order:1", entry(b"x")) == []
    [(client, rid, ev)] = hub.record(b"user:1", entry(b"a"))
    assert (client, rid, ev["cursor"], ev["key"], ev["deleted"]) == (b"c", 1, 102, b"user:1",
                                                                     False)


def test_from_a_held_cursor_replays_what_was_missed():
    hub = WatchHub(first_cursor=0)
    for i in range(5):
        hub.record(f"user:{i}".encode(), entry(b"v"))
    ack = hub.subscribe(b"c", 1, b"user:", 3, current)
    assert ack["history"] == "replayed"
    assert [ev["cursor"] for ev in drain(hub, b"c", 1)] == [4, 5]
    ack = hub.subscribe(b"c", 2, b"user:", 5, current)  # caught up
    assert ack["history"] == "replayed" and drain(hub, b"c", 2) == []


def test_a_cursor_out_of_the_history_resets_with_the_current_state():
    hub = WatchHub(history=2, first_cursor=0)
    for i in range(5):
        hub.record(f"user:{i}".encode(), entry(b"v"))
    ack = hub.subscribe(b"c", 1, b"user:", 1, current)
    assert ack["history"] == "reset"
    assert [(ev["key"], ev["value"]) for ev in drain(hub, b"c", 1)] == [(b"user:1", b"now")]


def test_a_cursor_from_an_earlier_run_or_never_issued_resets():
    earlier = WatchHub(first_cursor=1_000 << 20)
    for _ in range(3):
        earlier.record(b"user:1", entry(b"v"))
    restarted = WatchHub(first_cursor=1_005 << 20)  # booted 5 ms later: cursors never repeat
    assert restarted.subscribe(b"c", 1, b"user:", earlier.cursor, current)["history"] == "reset"
    assert restarted.subscribe(b"c", 2, b"user:", restarted.cursor + 10, current)[
        "history"] == "reset"


def test_heartbeats_reach_every_subscriber_until_cancelled():
    hub = WatchHub(first_cursor=7)
    hub.subscribe(b"a", 1, b"", None, current)
    hub.subscribe(b"b", 2, b"x", None, current)
    beats = hub.heartbeats()
    assert sorted((c, r) for c, r, _ in beats) == [(b"a", 1), (b"b", 2)]
    assert beats[0][2] == {"heartbeat": True, "cursor": 7}
    hub.cancel(b"a", 1)
    hub.drop_client(b"b")
    assert hub.heartbeats() == []


def test_the_client_resumes_across_a_daemon_restart(kvd_factory):
    node = kvd_factory("w1")
    with node.client(timeout=2) as watcher, node.client() as writer:
        events = watcher.watch("user:", poll_s=0.1, silence_s=1.5)
        ack = next(events)
        assert ack["history"] == "live"
        writer.set("user:1", "a")
        first = next(events)
        assert (first["key"], first["value"], first["origin"]) == (b"user:1", b"a", "w1")
        node.stop()
        assert "lost" in next(events)  # heartbeats stopped: the stream noticed
        node.start()
        resumed = next(events)
        assert resumed["history"] == "reset"  # a new run: its history starts after our cursor
        writer.reset()
        writer.set("user:2", "b")
        keys = set()
        while b"user:2" not in keys:
            keys.add(next(events)["key"])
        events.close()
