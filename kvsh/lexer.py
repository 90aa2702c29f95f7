"""Highlighting by the command table: each word coloured by the slot it fills.

The command name, keys, values, numbers, patterns and options each get a style class; a word
the table has no room for, an unknown command or a non-number where a number is due gets
`class:error`, so a mistake shows before Enter. Styles live in `STYLE`, merged by the REPL.
"""

from __future__ import annotations

from prompt_toolkit.document import Document
from prompt_toolkit.lexers import Lexer

from kvsh.grammar import Role, Slot, all_commands, find, slots, words
from shared.commands import Command, Kind

STYLE = {
    "command": "bold ansiblue",
    "command.partial": "ansiblue",
    "key": "ansiyellow",
    "value": "",
    "string": "",
    "integer": "ansicyan",
    "pattern": "ansimagenta",
    "node": "ansigreen",
    "option": "bold ansigreen",
    "error": "ansired underline",
}

_KIND_CLASS = {
    Kind.KEY: "key",
    Kind.VALUE: "value",
    Kind.STRING: "string",
    Kind.INTEGER: "integer",
    Kind.PATTERN: "pattern",
    Kind.COMMAND: "command",
    Kind.NODE: "node",
}


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def word_class(command: Command, slot: Slot, text: str, last: bool) -> str:
    """The style class of one argument word (`last`: the user may still be typing it)."""
    if slot.role is Role.EXTRA or (slot.role is Role.OPTION and slot.option is None):
        prefix = slot.role is Role.OPTION and any(
            o.token.startswith(text.upper()) for o in command.options)
        return "command.partial" if last and prefix else "error"
    if slot.role is Role.OPTION:
        return "option"
    kind = slot.kind
    if kind is Kind.INTEGER and not _is_int(text) and not (last and text in ("", "-")):
        return "error"
    if kind is Kind.COMMAND and find(text) is None and not last:
        return "error"
    return _KIND_CLASS.get(kind, "") if kind else ""


def classify(line: str) -> list[tuple[int, int, str]]:
    """(start, end, style class) for each word of a line."""
    ws = words(line)
    if not ws:
        return []
    last_open = ws[-1].end == len(line)  # the user may still be typing the last word
    name = ws[0].value
    command = find(name)
    if command is None:
        partial = last_open and len(ws) == 1 and any(
            c.name.startswith(name.upper()) for c in all_commands())
        return [(ws[0].start, ws[0].end, "command.partial" if partial else "error")] + [
            (w.start, w.end, "") for w in ws[1:]]
    out = [(ws[0].start, ws[0].end, "command")]
    args = [w.value for w in ws[1:]]
    for i, (w, slot) in enumerate(zip(ws[1:], slots(command, args), strict=True)):
        last = last_open and i == len(args) - 1
        out.append((w.start, w.end, word_class(command, slot, w.value, last)))
    return out


def fragments(line: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for start, end, cls in classify(line):
        if start > pos:
            out.append(("", line[pos:start]))
        out.append((f"class:{cls}" if cls else "", line[start:end]))
        pos = end
    if pos < len(line):
        out.append(("", line[pos:]))
    return out


class KvLexer(Lexer):
    def lex_document(self, document: Document):
        lines = document.lines
        return lambda i: fragments(lines[i]) if i < len(lines) else []
