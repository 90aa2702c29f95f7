"""/health across a node's life, as a load balancer polls it: 503 "starting" while the log
replays (never "connection refused" once the port is bound), 200 while serving, 503 "shutting
down" or a closed port after SIGTERM — and never a request left hanging."""

from __future__ import annotations

import http.client
import json
import signal
import threading
from pathlib import Path

from tests.procs import Kvd, wait_for

KEYS = 200_000  # a log whose replay takes long enough for a poller to see it, on any machine
POLL_TIMEOUT_S = 5.0  # a poll that takes this long counts as a hang


def poll_health(node: Kvd) -> tuple[int, dict] | str:
    """(status, JSON) of one GET /health, or why there was none ("refused", "reset", ...)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=POLL_TIMEOUT_S)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "hang"
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return "reset"
    finally:
        conn.close()


class Poller:
    """Polls /health in a thread until stopped; keeps every outcome, in order."""

    def __init__(self, node: Kvd) -> None:
        self.node = node
        self.seen: list[tuple[int, dict] | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(poll_health(self.node))
            self._stop.wait(0.005)  # a polling interval, not a guess at how long anything takes

    def stop(self) -> list[tuple[int, dict] | str]:
        self._stop.set()
        self._thread.join(POLL_TIMEOUT_S * 2)
        assert not self._thread.is_alive(), "the poller hung"
        return self.seen


def kinds(seen: list[tuple[int, dict] | str]) -> list[str]:
    """Each outcome as one word, consecutive repeats folded: the story the poller saw."""
    out: list[str] = []
    for s in seen:
        # a connection caught mid-request at the hand-over hears the JSON error STARTING
        word = s if isinstance(s, str) else \
            f"{s[0]} {s[1].get('status') or s[1]['error']['code'].lower()}"
        if not out or out[-1] != word:
            out.append(word)
    return out


def test_health_says_starting_during_the_replay_then_ok(tmp_path: Path) -> None:
    node = Kvd(tmp_path, "big").start()
    try:
        with node.client(timeout=60) as c:
            for start in range(0, KEYS, 10_000):
                c.pipeline([[b"SET", b"k%d" % i, b"v" * 50] for i in range(start, start + 10_000)])
        assert node.stop() == 0
        node.start(wait=False)
        poller = Poller(node)
        node.wait_ready()
        wait_for(lambda: poller.seen and poller.seen[-1] == (200, {"status": "ok"}),
                 what="/health to say ok")
        story = kinds(poller.stop())
    finally:
        node.stop()
    # refused only until the process binds the port (its imports), then never again
    assert story[-1] == "200 ok" and "503 starting" in story, story
    assert "hang" not in story and story.count("refused") <= 1, story
    assert story.index("503 starting") > story.index("refused") if "refused" in story else True
    assert all(s in ("refused", "503 starting", "200 ok") for s in story), story
    first = next(s for s in poller.seen if s != "refused")
    assert first == (503, {"status": "starting", "reason": "the node is replaying its log"})


def test_other_routes_get_a_json_503_with_retry_after_while_starting(tmp_path: Path) -> None:
    from kvd.doors.starting import StartingDoor

    with StartingDoor("127.0.0.1", 0) as door:
        port = door.listener.getsockname()[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=POLL_TIMEOUT_S)
        conn.request("PUT", "/v1/kv/a", body=b"x" * 100_000)  # a body it never reads
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert (resp.status, resp.getheader("retry-after")) == (503, "1")
        assert doc["error"]["code"] == "STARTING" and doc["error"]["message"], doc
        conn.close()
        listener = door.hand_over()
    assert listener.fileno() >= 0  # handed over open, for the real door to take
    listener.close()


def test_health_says_shutting_down_after_sigterm_and_nothing_hangs(tmp_path: Path) -> None:
    node = Kvd(tmp_path, "bye").start()
    try:
        poller = Poller(node)
        wait_for(lambda: (200, {"status": "ok"}) in poller.seen, what="/health to say ok")
        node.signal(signal.SIGTERM)
        assert node.proc is not None and node.proc.wait(20) == 0
        wait_for(lambda: poller.seen[-1] in ("refused", "reset"), what="the port to close")
        story = kinds(poller.stop())
    finally:
        node.kill()
    assert "hang" not in story, story
    assert story[0] == "200 ok" and "503 unavailable" in story, story
    closing = story.index("503 unavailable")
    assert "200 ok" not in story[closing:], story  # once going, it never says ok again
    reasons = {s[1]["reason"] for s in poller.seen if not isinstance(s, str) and s[0] == 503}
    assert reasons == {"shutting down"}, reasons
