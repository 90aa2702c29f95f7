"""The REPL session driven through prompt_toolkit's pipe input, against a real kvd.

Keys go in as a terminal would send them; replies come out of a plain Printer into a string.
Each test starts its own shell (and history), sharing one daemon per module.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from kvsh.client import Client
from kvsh.printer import Printer
from kvsh.repl import Shell, history_path
from tests.procs import Kvd, free_port

PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[Kvd]:
    kvd = Kvd(tmp_path_factory.mktemp("repl"), "n1").start()
    yield kvd
    try:
        kvd.stop()
    finally:
        kvd.kill()


def session(port: int, keys: str, history=None) -> tuple[Shell, str]:
    """Run a shell over `keys` until they run out (EOF quits); returns it and what it printed."""
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(keys)
        inp.close()  # end of input: the prompt sees EOF after the keys, like Ctrl-D
        shell = Shell(Client("127.0.0.1", port, timeout=2), Printer("plain", out),
                      history=history or InMemoryHistory(), input=inp, output=DummyOutput(),
                      monitor=False)
        shell.run()
    return shell, out.getvalue()


def test_commands_run_and_print(node):
    _, out = session(node.port, "SET greeting hello\rGET greeting\rDBSIZE\r")
    assert out.splitlines()[:2] == ["OK", "hello"]


def test_a_rejected_line_is_not_sent_and_stays_editable(node):
    # "GTE k" fails validation; Ctrl-U clears it; the next line runs.
    _, out = session(node.port, "SET rej 1\rGTE rej\r\x15GET rej\r")
    assert out.splitlines() == ["OK", "1"]


def test_ctrl_c_clears_the_line_and_ctrl_d_quits(node):
    shell, out = session(node.port, "GET nothing-here\x03SET cc 1\r\x04SET after 1\r")
    assert out.splitlines() == ["OK"]  # the cleared line never ran; nothing after Ctrl-D
    with node.client() as c:
        assert c.get("after") is None


def test_a_multi_line_paste_runs_line_by_line(node):
    paste = PASTE_START + "SET p1 a\nSET p2 b\nMGET p1 p2\n" + PASTE_END
    _, out = session(node.port, paste)
    assert out.splitlines() == ["OK", "OK", "a", "b"]


def test_history_is_kept_and_suggested(node):
    history = InMemoryHistory()
    session(node.port, "SET hist-key 42\r", history)
    assert "SET hist-key 42" in list(history.get_strings())
    # Up recalls the last line in a new session; it runs again unchanged.
    shell, out = session(node.port, "\x1b[A\rGET hist-key\r", history)
    assert out.splitlines() == ["OK", "42"]
    assert shell.session.auto_suggest is not None  # fish-style suggestions from this history


def test_history_file_lives_in_the_user_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert history_path() == tmp_path / "kvsh" / "history"


def test_help_and_shell_commands_are_answered_locally(node):
    _, out = session(node.port, "HELP set\rHELP\rexit\rSET never 1\r")
    assert out.splitlines()[0].startswith("SET key value [EX seconds | PX milliseconds")
    assert any(line.startswith("CONNECT address") for line in out.splitlines())
    with node.client() as c:
        assert c.get("never") is None  # EXIT stopped the shell


def test_connect_switches_nodes_and_refuses_a_dead_one(node, kvd_factory):
    other = kvd_factory("n2")
    dead = free_port()
    shell, out = session(node.port, f"CONNECT 127.0.0.1:{dead}\rCONNECT 127.0.0.1:{other.port}\r"
                                    "SET where n2\r")
    assert f"still connected to 127.0.0.1:{node.port}" in out
    assert f"connected to 127.0.0.1:{other.port}" in out
    assert shell.client.port == other.port
    with other.client() as c:
        assert c.get("where") == b"n2"


def test_the_daemon_going_away_is_reported_and_the_shell_recovers(kvd_factory):
    node = kvd_factory("gone")
    shell, out = session(node.port, "SET a 1\r")
    node.stop()
    out = io.StringIO()
    shell.printer = Printer("plain", out)
    shell.run_line("GET a")
    assert shell.link.up is False
    assert "(error)" in out.getvalue() and "reconnects when the node is back" in out.getvalue()
    node.start()
    shell.run_line("PING")
    assert shell.link.up is True
    assert out.getvalue().splitlines()[-1] == "PONG"


def test_writes_invalidate_the_completion_cache(node):
    shell, _ = session(node.port, "SET cache:a 1\r")
    assert shell.keys.keys(b"cache:") == [b"cache:a"]
    shell.run_line("SET cache:b 1")
    assert shell.keys.keys(b"cache:") == [b"cache:a", b"cache:b"]
    shell.keys.close()


def test_ctrl_r_finds_an_old_line(node):
    history = InMemoryHistory()
    for line in ("SET search-me 7", "PING"):
        history.append_string(line)
    _, out = session(node.port, "\x12search-me\r\rGET search-me\r", history)
    assert out.splitlines() == ["OK", "7"]


def test_a_long_paste_runs_under_a_progress_bar_with_rich_output(node):
    lines = "".join(f"SET bulk:{i} {i}\n" for i in range(250))
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(PASTE_START + lines + PASTE_END)
        inp.close()
        Shell(Client("127.0.0.1", node.port), Printer("rich", out), history=InMemoryHistory(),
              input=inp, output=DummyOutput(), monitor=False).run()
    assert out.getvalue().count("OK") == 250
    with node.client() as c:
        assert c.get("bulk:249") == b"249"


def test_the_prompt_shows_an_open_transaction(node):
    """As redis-cli's `(TX)`: from MULTI's OK until EXEC or DISCARD answers."""
    out = io.StringIO()
    with create_pipe_input() as inp:
        shell = Shell(Client("127.0.0.1", node.port, timeout=2), Printer("plain", out),
                      history=InMemoryHistory(), input=inp, output=DummyOutput(),
                      monitor=False)
        assert not shell._message()[0][1].endswith("(TX)> ")
        shell.run_line("MULTI")
        shell.run_line("SET tx 1")
        assert shell._message()[0][1].endswith("(TX)> ")
        shell.run_line("EXEC")
        assert not shell._message()[0][1].endswith("(TX)> ")
        shell.run_line("GET tx")
        shell.client.close()
    assert out.getvalue().splitlines() == ["OK", "QUEUED", "OK", "1"]
