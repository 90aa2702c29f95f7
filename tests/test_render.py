"""Rendering into a string Console: what a person at a terminal sees, and the plain formats."""

from __future__ import annotations

import io

from rich.console import Console

from kvsh.execute import Outcome
from kvsh.render import (
    as_json,
    event_plain,
    event_rich,
    height,
    help_view,
    notice_text,
    plain,
    rich,
)
from kvsh.shellcmds import SHELL_COMMANDS
from shared.codec import Reply, ReplyKind
from shared.commands import COMMANDS
from shared.errors import ArityError

KIND = {bytes: ReplyKind.BYTES, int: ReplyKind.INT, list: ReplyKind.LIST, dict: ReplyKind.MAP,
        type(None): ReplyKind.NIL, str: ReplyKind.STATUS}


def outcome(name: str, value) -> Outcome:
    return Outcome([name.encode()], COMMANDS[name], Reply(1, KIND[type(value)], value))


def screen(renderable, width: int = 80) -> str:
    """The text a terminal of `width` columns would show, styles dropped."""
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def styled(renderable) -> str:
    console = Console(width=80, force_terminal=True, color_system="standard")
    with console.capture() as cap:
        console.print(renderable)
    return cap.get()


MEMBERS = [
    {"name": "n1", "address": "127.0.0.1:7700", "status": "alive", "self": True,
     "last_seen_ms": 0, "lag": 0},
    {"name": "n2", "address": "127.0.0.1:7702", "status": "suspect", "last_seen_ms": 2500,
     "lag": 4},
    {"name": "n3", "address": "127.0.0.1:7704", "status": "dead", "last_seen_ms": 30000,
     "lag": 0},
]


def test_members_is_a_table_with_coloured_status():
    text = screen(rich(outcome("MEMBERS", MEMBERS)))
    header = next(line for line in text.splitlines() if "name" in line)
    assert all(col in header for col in ("name", "address", "status", "last seen", "lag"))
    assert "2.5s ago" in text and "3 members, 1 alive" in text
    colours = styled(rich(outcome("MEMBERS", MEMBERS)))
    assert "\x1b[1;32malive" in colours and "\x1b[1;33msuspect" in colours
    assert "\x1b[1;31mdead" in colours


def test_members_shows_fields_it_does_not_know_as_extra_columns():
    rows = [{**MEMBERS[0], "incarnation": 3}]
    header = next(line for line in screen(rich(outcome("MEMBERS", rows))).splitlines()
                  if "name" in line)
    assert "incarnation" in header


def test_members_keeps_the_contract_columns_whole_and_adds_extras_as_they_fit():
    row = {**MEMBERS[0], "address": "127.0.0.1:55127", "gossip": "127.0.0.1:55128",
           "incarnation": 1795912345678, "behind": 0, "clock_offset_ms": -30001}

    def header(width: int) -> str:
        text = screen(rich(outcome("MEMBERS", [row])), width)
        return next(line for line in text.splitlines() if "name" in line)

    narrow, wide = header(80), header(200)
    assert "address" in narrow and "status" in narrow and "…" not in narrow
    assert "clock_offset_ms" not in narrow
    assert "clock_offset_ms" in wide and "incarnation" in wide


def test_info_is_a_table():
    text = screen(rich(outcome("INFO", {"name": "n1", "keys": 3, "digest": "00ff"})))
    assert "INFO" in text
    assert any("name" in line and "n1" in line for line in text.splitlines())


def test_scalars_are_styled_like_redis_cli():
    assert screen(rich(outcome("GET", b"hello"))) == '"hello"\n'
    assert screen(rich(outcome("DBSIZE", 3))) == "(integer) 3\n"
    assert screen(rich(outcome("GET", None))) == "(nil)\n"
    error = Outcome([b"GET"], error=ArityError("wrong number of arguments for GET"))
    assert screen(rich(error)) == "(error) WRONG_ARITY: wrong number of arguments for GET\n"
    assert "\x1b[1;31m" in styled(rich(error))


def test_binary_is_escaped_never_raw_control_bytes():
    text = screen(rich(outcome("GET", b"\x00\x1b[2Jbell\x07\xff")))
    assert "\x1b" not in text and "\x00" not in text
    assert "\\x00" in text and "\\xff" in text


def test_json_values_are_pretty_printed():
    text = screen(rich(outcome("GET", b'{"user": {"name": "ada", "tags": [1, 2]}}')))
    assert text.splitlines()[:3] == ["{", '  "user": {', '    "name": "ada",']
    assert screen(rich(outcome("GET", b"[not json"))) == '"[not json"\n'
    assert screen(rich(outcome("GET", b"42"))) == '"42"\n'  # a JSON scalar stays a string


def test_lists_are_numbered_and_long_key_lists_laid_out_in_columns():
    assert screen(rich(outcome("MGET", [b"a", None]))) == '1) "a"\n2) (nil)\n'
    keys = [f"user:{i:02}".encode() for i in range(40)]
    text = screen(rich(outcome("KEYS", keys)), width=60)
    lines = text.splitlines()
    assert lines[0] == "(40 keys)"
    assert lines[1].split()[:2] == ["user:00", f"user:{len(lines) - 1:02}"]  # top to bottom
    assert len(lines) < 12


def test_scan_shows_the_next_cursor_then_the_keys():
    text = screen(rich(outcome("SCAN", [b"17", [b"a", b"b"]])))
    assert text.splitlines() == ["next cursor: 17", '1) "a"', '2) "b"']


def test_height_decides_the_pager():
    console = Console(width=40, height=10, force_terminal=True)
    assert height(console, rich(outcome("MGET", [b"x"] * 30))) == 30


def test_plain_and_json_stay_plain():
    assert plain(outcome("MEMBERS", MEMBERS[:1])).startswith(b"name: n1\naddress: ")
    assert plain(outcome("GET", b'{"a": 1}')) == b'{"a": 1}\n'
    assert as_json(outcome("GET", None)) == b"null\n"
    assert b"\x1b" not in plain(outcome("KEYS", [b"k"] * 40))


def test_watch_events_and_notices():
    event = {"cursor": 7, "key": b"user:1", "value": b"ada", "deleted": False, "origin": "n2",
             "stamp": (1_700_000_000_000 << 16), "expires_at": 0}
    assert event_plain(event) == b"7\tn2\tset\tuser:1\tada\n"
    text = screen(event_rich(event))
    assert "n2" in text and "SET" in text and 'user:1 "ada"' in text
    gone = screen(event_rich({**event, "deleted": True, "value": None}))
    assert "DEL user:1" in gone
    ack = screen(rich(outcome("WATCH", {"watching": b"user:", "cursor": 5, "history": "reset"})))
    assert "watching 'user:' from cursor 5" in ack and "current state first" in ack
    assert "interrupted" in notice_text({"lost": "gone"})
    assert "replayed" in notice_text({"watching": b"u", "cursor": 9, "history": "replayed"})
    lagged = notice_text({"watching": b"u", "cursor": 30, "history": "reset", "lagged": 12})
    assert "fell behind after cursor 12" in lagged and "current state first" in lagged
    assert "\n" not in lagged


def test_help_lists_every_command_and_marks_shell_ones():
    text = screen(help_view([*COMMANDS.values(), *SHELL_COMMANDS.values()], set(SHELL_COMMANDS)),
                  width=120)
    for name in [*COMMANDS, *SHELL_COMMANDS]:
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert "(shell)" in text
    one = screen(help_view([COMMANDS["SET"]]))
    assert " ".join(one.split("\n")[:2]).startswith("SET key value [EX seconds | PX milliseconds")
