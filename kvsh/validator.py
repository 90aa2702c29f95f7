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
    close = difflib.get_close_matches(name.upper(), [c.name for c in all_commands()], n=1)
    return f" — did you mean {close[0]}?" if close else " — try HELP for the list"


class KvValidator(Validator):
    def validate(self, document: Document) -> None:
        text = document.text
        if "\n" in text:
            return  # a multi-line paste: each line is checked as it runs
        message = problem(text)
        if message is not None:
            raise ValidationError(len(text), message)
