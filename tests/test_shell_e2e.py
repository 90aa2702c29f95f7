"""kvsh in a real terminal (tmux) against a real kvd: what a person sees and does."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.terminal import Terminal

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("tmux") is None, reason="end-to-end tests need tmux"
)


@pytest.fixture
def shell(kvd, tmp_path) -> Iterator[Terminal]:
    term = Terminal(tmp_path, [sys.executable, "-m", "kvsh", "--port", str(kvd.port)])
    try:
        term.wait_for(f"127.0.0.1:{kvd.port}>", what="the prompt")
        term.wait_for("● n1", what="the toolbar's connection line")
        yield term
    finally:
        term.close()


def test_tab_completes_a_key_from_the_server(kvd, shell):
    with kvd.client() as c:
        c.mset({"user:alice": "ada", "user:bob": "bob", "order:1": "x"})
    shell.type("get user:a")
    shell.send("Tab")
    shell.wait_for(f"127.0.0.1:{kvd.port}> get user:alice", what="the key completed by Tab")
    shell.send("Enter")
    shell.wait_for('"ada"', what="the value of the completed key")


def test_members_shows_a_table(shell):
    shell.enter("MEMBERS")
    screen = shell.wait_for("1 member, 1 alive", what="the MEMBERS table's caption")
    header = next((line for line in screen.splitlines() if "address" in line), "")
    assert "name" in header and "status" in header, screen
    assert any("n1" in line and "alive" in line for line in screen.splitlines()), screen


def test_watch_shows_another_clients_write_and_ctrl_c_returns_to_the_prompt(kvd, shell):
    shell.enter("WATCH user:")
    shell.wait_for("watching 'user:'", what="the WATCH acknowledgement")
    with kvd.client() as c:
        c.set("user:carol", "hi")
        c.set("order:9", "not watched")
    shell.wait_for('SET user:carol "hi"', what="the event written by another client")
    shell.send("C-c")
    shell.wait_for("resume with: WATCH user: FROM", what="how to resume the watch")
    shell.enter("PING")
    screen = shell.wait_for("PONG", what="the prompt working again after Ctrl-C")
    assert "order:9" not in screen


def test_an_unknown_command_is_rejected_before_it_is_sent(shell):
    shell.type("FROB x")
    shell.wait_for("unknown command 'FROB'", what="the toolbar flagging the command")
    shell.send("Enter")
    shell.wait_for(lambda s: "unknown command 'FROB'" in s and "(error)" not in s,
                   what="a one-line hint, the line kept, nothing sent")


def test_the_node_going_away_and_coming_back(kvd, shell):
    kvd.stop()
    shell.wait_for("unreachable", what="the toolbar noticing the node is gone")
    shell.enter("GET k")
    shell.wait_for(lambda s: "(error) UNREACHABLE" in s and "reconnects" in s,
                   what="one error line and the reconnect hint")
    kvd.start()
    shell.wait_for("● n1", what="the toolbar seeing the node back")
    shell.enter("PING")
    shell.wait_for("PONG", what="commands working again")


def test_watch_from_the_cursor_it_stopped_at_replays_what_was_missed(kvd, shell):
    shell.enter("WATCH user:")
    shell.wait_for("watching 'user:'", what="the WATCH acknowledgement")
    with kvd.client() as c:
        c.set("user:1", "seen")
    shell.wait_for('SET user:1 "seen"', what="the first event")
    shell.send("C-c")
    screen = shell.wait_for("resume with: ", what="the resume hint")
    resume = screen.split("resume with: ")[1].splitlines()[0].strip()
    with kvd.client() as c:
        c.set("user:2", "missed")
    shell.enter(resume)
    shell.wait_for(lambda s: "replaying what was missed" in s and 'SET user:2 "missed"' in s,
                   what="the change made while not watching, replayed")
    shell.send("C-c")
