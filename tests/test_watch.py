"""WatchHub: live events, resumption from a cursor, and the reset when history is gone."""

from __future__ import annotations

from kvd.state.store import Entry
from kvd.state.watch import WatchHub


def e(value: bytes | None, stamp: int = 1) -> Entry:
    return Entry(value, stamp, "n1")


def drain(hub: WatchHub, client: bytes, rid: int, room: int = 1 << 30) -> list[dict]:
    """What a door sends a subscriber behind when its queue has `room` for that many events."""
    sent = []
    for ev in hub.owed(client, rid):
        if len(sent) == room:
            break
        sent.append(ev)
        hub.sent(client, rid, ev)
    return sent


def test_resume_from_a_cursor_replays_only_what_was_missed() -> None:
    hub = WatchHub(history=100)
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    ack = hub.subscribe(b"c", 1, b"k", since=3, current=lambda p: [])
    assert ack["history"] == "replayed"
    assert [ev["cursor"] for ev in drain(hub, b"c", 1)] == [4, 5]
    assert [ev["key"] for _, _, ev in hub.record(b"k9", e(None))] == [b"k9"]


def test_a_cursor_older_than_the_history_gets_the_current_state_first() -> None:
    hub = WatchHub(history=2)
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    state = [(b"k3", e(b"v")), (b"k4", e(b"v"))]
    ack = hub.subscribe(b"c", 1, b"k", since=1, current=lambda p: state)
    assert ack["history"] == "reset"
    assert [ev["key"] for ev in drain(hub, b"c", 1)] == [b"k3", b"k4"]


def test_cancel_and_dropping_a_client_stop_its_streams() -> None:
    hub = WatchHub()
    hub.subscribe(b"a", 1, b"", None, lambda p: [])
    hub.subscribe(b"a", 2, b"x", None, lambda p: [])
    hub.subscribe(b"b", 1, b"", None, lambda p: [])
    assert hub.cancel(b"a", 1)
    assert len(hub.record(b"x1", e(b"v"))) == 3 - 1
    hub.drop_client(b"a")
    assert [c for c, _, _ in hub.record(b"x2", e(b"v"))] == [b"b"]


def test_a_stalled_subscriber_is_never_skipped_ahead() -> None:
    """The door could not send event 3 (the client stopped reading): nothing more is pushed,
    and once it reads again it gets 3 and everything after, in order, then live events."""
    hub = WatchHub(history=100)
    hub.subscribe(b"c", 1, b"", None, lambda p: [])
    hub.subscribe(b"d", 1, b"", None, lambda p: [])
    for i in range(3):
        hub.record(b"k%d" % i, e(b"v"))
    hub.stalled(b"c", 1, 3)
    assert [c for c, _, _ in hub.record(b"k3", e(b"v"))] == [b"d"]
    assert hub.backlog and hub.heartbeats() == [(b"d", 1, hub.heartbeats()[0][2])]
    assert [ev["cursor"] for ev in drain(hub, b"c", 1, room=1)] == [3]
    assert [ev["cursor"] for ev in drain(hub, b"c", 1)] == [4]
    assert not hub.backlog  # caught up: live again
    assert sorted(c for c, _, _ in hub.record(b"k4", e(b"v"))) == [b"c", b"d"]


def test_a_subscriber_that_falls_out_of_the_history_ends_with_lagged() -> None:
    hub = WatchHub(history=4)
    hub.subscribe(b"c", 1, b"k", None, lambda p: [])
    hub.record(b"k1", e(b"v"))
    hub.record(b"x", e(b"v"))
    hub.stalled(b"c", 1, 3)  # 1 was sent, 3 could not be
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    [lagged] = drain(hub, b"c", 1)
    assert (lagged["error"], lagged["cursor"]) == ("LAGGED", 2)
    assert "FROM 2" in lagged["message"]
    assert len(hub) == 0 and hub.lagged == 1 and not hub.backlog  # the stream is over
    state = [(b"k4", e(b"v"))]
    assert hub.subscribe(b"c", 2, b"k", 2, lambda p: state)["history"] == "reset"
    assert [ev["key"] for ev in drain(hub, b"c", 2)] == [b"k4"]


def test_lagged_during_the_current_state_names_the_cursor_that_resets_again() -> None:
    """Part of a reset's state went out, then the history moved on: resuming from where the
    state began would lose the rest of it, so LAGGED names the FROM cursor, not the state's."""
    hub = WatchHub(history=2)
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    state = [(b"k%d" % i, e(b"v")) for i in range(3)]
    assert hub.subscribe(b"c", 1, b"k", 1, lambda p: state)["history"] == "reset"
    assert [ev["key"] for ev in drain(hub, b"c", 1, room=2)] == [b"k0", b"k1"]
    for i in range(3):
        hub.record(b"k%d" % i, e(b"w"))
    [lagged] = drain(hub, b"c", 1)
    assert (lagged["error"], lagged["cursor"]) == ("LAGGED", 1)
