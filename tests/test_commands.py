"""The command table: complete both ways, and one grammar for both sides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kvd.state.handlers import HANDLERS
from shared.commands import COMMANDS, Kind, lookup, parse
from shared.errors import ArityError, NotInteger, SyntaxError_, UnknownCommand

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "CONTRACT.md"


def test_every_command_has_a_handler_and_every_handler_a_command() -> None:
    assert set(COMMANDS) - set(HANDLERS) == set(), "commands without a handler"
    assert set(HANDLERS) - set(COMMANDS) == set(), "handlers without a command"


@pytest.mark.skipif(not CONTRACT.exists(), reason="../shared/CONTRACT.md is not beside the repo")
def test_the_table_covers_every_command_of_the_contract() -> None:
    table = CONTRACT.read_text().split("## Commands", 1)[1]
    names = set(re.findall(r"^\| `([A-Z]+)", table, re.M))
    assert names and names <= set(COMMANDS)


def test_lookup_is_case_insensitive_and_names_unknown_commands() -> None:
    assert lookup("get") is COMMANDS["GET"]
    assert lookup(b"GeT") is COMMANDS["GET"]
    with pytest.raises(UnknownCommand, match="'NOPE'"):
        lookup("NOPE")


def test_set_options_parse_in_any_order_and_convert_integers() -> None:
    call = parse(COMMANDS["SET"], [b"k", b"v", b"nx", b"EX", b"10"])
    assert call.args == (b"k", b"v")
    assert call.options == {"NX": True, "EX": 10}


@pytest.mark.parametrize(
    "name, args, error",
    [
        ("GET", [], ArityError),
        ("GET", [b"a", b"b"], ArityError),
        ("MSET", [b"a", b"1", b"b"], ArityError),
        ("MGET", [], ArityError),
        ("DBSIZE", [b"x"], ArityError),
        ("EXPIRE", [b"k", b"soon"], NotInteger),
        ("SET", [b"k", b"v", b"EX"], SyntaxError_),
        ("SET", [b"k", b"v", b"EX", b"1", b"PX", b"5"], SyntaxError_),
        ("SET", [b"k", b"v", b"NX", b"XX"], SyntaxError_),
        ("SET", [b"k", b"v", b"BOGUS"], SyntaxError_),
        ("SCAN", [b"zero"], NotInteger),
    ],
)
def test_bad_arguments_raise_the_stable_error(name: str, args: list[bytes], error: type) -> None:
    with pytest.raises(error) as info:
        parse(COMMANDS[name], args)
    assert COMMANDS[name].syntax in str(info.value) or error is SyntaxError_


def test_repeating_groups_keep_their_kinds() -> None:
    assert parse(COMMANDS["MSET"], [b"a", b"1", b"b", b"2"]).args == (b"a", b"1", b"b", b"2")
    assert parse(COMMANDS["DEL"], [b"a", b"b", b"c"]).args == (b"a", b"b", b"c")


def test_syntax_is_written_from_the_table() -> None:
    assert COMMANDS["SET"].syntax == (
        "SET key value [EX seconds | PX milliseconds | EXAT unix-seconds | PXAT "
        "unix-milliseconds | KEEPTTL] [NX | XX] [GET]")
    assert COMMANDS["MSET"].syntax == "MSET key value [key value ...]"
    assert COMMANDS["SCAN"].syntax == "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]"


def test_flags() -> None:
    mutating = {n for n, c in COMMANDS.items() if c.mutating}
    assert {"SET", "MSET", "DEL", "EXPIRE", "INCR", "RENAME", "FLUSHDB"} <= mutating
    assert not mutating & {"GET", "MGET", "TTL", "KEYS", "SCAN", "EXISTS", "STRLEN"}
    assert [n for n, c in COMMANDS.items() if c.streaming] == ["WATCH"]
    assert COMMANDS["GET"].args[0].kind is Kind.KEY
