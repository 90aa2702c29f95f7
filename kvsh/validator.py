"""Validation on Enter: a line the table rejects stays in the buffer with a one-line hint.

The check is the one `execute.run_line` makes before sending (split, look up, parse), widened
to the shell's own commands, so what the prompt accepts is exactly what would be sent.
"""

from __future__ import annotations

import difflib

from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError, Validator

from kvsh.execute import split
from kvsh.grammar import all_commands, find
from shared.commands import parse
from shared.errors import KvError, UnknownCommand


def problem(line: str) -> str | None:
    """Why `line` would be rejected, in one line; None when it is fine (or blank/comment)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    try:
        argv = split(line)
        name = argv[0].decode("utf-8", "replace")
        command = find(name)
        if command is None:
            raise UnknownCommand(f"unknown command '{name}'{_did_you_mean(name)}")
        parse(command, argv[1:])
    except KvError as exc:
        return exc.message
    return None


def _did_you_mean(name: str) -> str:
    typed = name.upper()
    close = difflib.get_close_matches(typed, [c.name for c in all_commands()], n=5)
    if not close:
        return " — try HELP for the list"
    # Of the similar names, the fewest typing mistakes away: GTE is a swap from GET, two
    # letters short of GETEX, though difflib ranks GETEX first.
    best = min(close, key=lambda c: _typos(typed, c))
    return f" — did you mean {best}?"


def _typos(a: str, b: str) -> int:
    """Edits from a to b, a swap of neighbours counting as one (optimal string alignment)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


class KvValidator(Validator):
    def validate(self, document: Document) -> None:
        text = document.text
        if "\n" in text:
            return  # a multi-line paste: each line is checked as it runs
        message = problem(text)
        if message is not None:
            raise ValidationError(len(text), message)
