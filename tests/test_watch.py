"""WatchHub: live events, resumption from a cursor, and the reset when history is gone."""

from __future__ import annotations

from kvd.state.store import Entry
from kvd.state.watch import WatchHub


def e(value: bytes | None, stamp: int = 1) -> Entry:
    return Entry(value, stamp, "n1")


def test_resume_from_a_cursor_replays_only_what_was_missed() -> None:
    hub = WatchHub(history=100)
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    ack, owed = hub.subscribe(b"c", 1, b"k", since=3, current=lambda p: [])
    assert ack["history"] == "replayed"
    assert [ev["cursor"] for _, _, ev in owed] == [4, 5]
    assert [ev["key"] for _, _, ev in hub.record(b"k9", e(None))] == [b"k9"]


def test_a_cursor_older_than_the_history_gets_the_current_state_first() -> None:
    hub = WatchHub(history=2)
    for i in range(5):
        hub.record(b"k%d" % i, e(b"v"))
    state = [(b"k3", e(b"v")), (b"k4", e(b"v"))]
    ack, owed = hub.subscribe(b"c", 1, b"k", since=1, current=lambda p: state)
    assert ack["history"] == "reset"
    assert [ev["key"] for _, _, ev in owed] == [b"k3", b"k4"]


def test_cancel_and_dropping_a_client_stop_its_streams() -> None:
    hub = WatchHub()
    hub.subscribe(b"a", 1, b"", None, lambda p: [])
    hub.subscribe(b"a", 2, b"x", None, lambda p: [])
    hub.subscribe(b"b", 1, b"", None, lambda p: [])
    assert hub.cancel(b"a", 1)
    assert len(hub.record(b"x1", e(b"v"))) == 3 - 1
    hub.drop_client(b"a")
    assert [c for c, _, _ in hub.record(b"x2", e(b"v"))] == [b"b"]
