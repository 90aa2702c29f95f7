"""Highlighting, validation and the syntax hint: all read a half-typed line by the table."""

from __future__ import annotations

import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError

from kvsh.grammar import words
from kvsh.lexer import KvLexer, classify
from kvsh.link import LinkState
from kvsh.toolbar import connection, current_part, hint, toolbar
from kvsh.validator import KvValidator, problem
from shared.commands import COMMANDS


def classes(line: str) -> list[str]:
    return [cls for _, _, cls in classify(line)]


@pytest.mark.parametrize("line, expected", [
    ("SET k v EX 10 NX", ["command", "key", "value", "option", "integer", "option"]),
    ("set k v ex ten", ["command", "key", "value", "option", "error"]),
    ("GET a b", ["command", "key", "error"]),
    ("FROB x", ["error", ""]),
    ("SE", ["command.partial"]),
    ("SE ", ["error"]),
    ("SCAN 0 MATCH a* COUNT 5", ["command", "integer", "option", "pattern", "option", "integer"]),
    ("SCAN 0 MA", ["command", "integer", "command.partial"]),
    ("SCAN 0 bogus ", ["command", "integer", "error"]),
    ("HELP nope ", ["command", "error"]),
    ("CONNECT 127.0.0.1:7700", ["command", "node"]),
    ('MSET "a b" 1', ["command", "key", "value"]),
])
def test_words_are_classed_by_the_slot_they_fill(line, expected):
    assert classes(line) == expected


def test_the_lexer_keeps_every_character_of_the_line():
    line = 'SET  "a b"  v  EX 1'
    frags = KvLexer().lex_document(Document(line))(0)
    assert "".join(text for _, text in frags) == line
    assert ("class:key", '"a b"') in frags


def test_words_keep_spans_and_survive_an_open_quote():
    ws = words('GET "a \\" b" \'x y')
    assert [w.value for w in ws] == ['GET', 'a " b', "x y"]
    assert (ws[1].start, ws[1].end) == (4, 12)


@pytest.mark.parametrize("line, fragment", [
    ("FROB", "unknown command 'FROB'"),
    ("GTE k", "did you mean GET?"),
    ("GET", "wrong number of arguments for GET"),
    ("SET k v EX soon", "not an integer"),
    ("SET k v NX XX", "exclude each other"),
    ('GET "open', "close the quote"),
    ("CONNECT", "wrong number of arguments for CONNECT"),
])
def test_the_validator_rejects_with_a_one_line_hint(line, fragment):
    with pytest.raises(ValidationError) as info:
        KvValidator().validate(Document(line))
    assert fragment in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize("line", ["", "  ", "# note", "GET k", "set k v px 5 xx",
                                  "CONNECT h:1", "SET a 1\nGET a\nbogus"])
def test_the_validator_accepts_good_lines_blank_lines_and_pastes(line):
    KvValidator().validate(Document(line))
    assert problem(line.split("\n")[0]) is None


@pytest.mark.parametrize("line, part", [
    ("SET", 0), ("SET k", 1), ("SET k ", 2), ("SET k v EX", 3), ("SET k v EX 5", 3),
    ("SET k v NX", 4), ("SET k v ", -1), ("MGET a b", 2), ("GET a b", -1),
])
def test_the_hint_highlights_the_argument_under_the_cursor(line, part):
    assert current_part(line)[1] == part


def test_the_hint_shows_the_syntax_with_the_current_part_marked():
    frags = hint("SET k")
    assert ("class:toolbar.current", "key") in frags
    assert COMMANDS["SET"].syntax in "".join(
        t for s, t in frags if "syntax" in s or "current" in s)
    assert any("unknown command" in t for _, t in hint("FROB "))
    assert "SCAN · SET" in hint("S")[0][1]
    assert not any("unexpected" in t for _, t in hint("SET k v e"))  # an option being typed
    assert any("unexpected 'BOGUS'" in t for _, t in hint("SET k v bogus "))


def test_a_rejected_line_says_so_in_the_toolbar():
    text = "".join(t for _, t in toolbar("GTE k", LinkState("h", 1, True, "n1"), rejected=True))
    assert text.startswith("not sent")


def test_the_connection_line_names_node_address_size_and_rtt():
    text = "".join(t for _, t in connection(LinkState("127.0.0.1", 7700, True, "n1", 3, 0.42)))
    assert text == "● n1 127.0.0.1:7700 · 3 members · rtt 0.4 ms"
    led = LinkState("127.0.0.1", 7700, True, "n1", 3, 0.42, leader="n2")
    assert "· 3 members · leader n2 · rtt" in "".join(t for _, t in connection(led))
    down = "".join(t for _, t in connection(LinkState("127.0.0.1", 7700, False)))
    assert "unreachable" in down
