"""Rendering: an outcome in, text out. Pure functions, tested by printing into strings.

Three plain formats for scripts (CONTRACT.md) — `plain` (values as is, `(nil)` for missing),
`raw` (values only) and `json` (one document per reply) — and `rich` for people at a terminal.
"""

from __future__ import annotations

import base64
import json

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kvsh.execute import Outcome
from shared.codec import ReplyKind
from shared.errors import KvError

NIL = b"(nil)"


def error_of(outcome: Outcome) -> KvError | None:
    """The error an outcome carries, whether raised locally or sent by the server."""
    if outcome.error is not None:
        return outcome.error
    if outcome.reply is not None and outcome.reply.is_error:
        code, message = outcome.reply.value  # type: ignore[misc]
        err = KvError(str(message))
        err.code = str(code)
        return err
    return None


# -- plain and raw: bytes for stdout ------------------------------------------------------

def _b(value: object) -> bytes:
    if value is None:
        return NIL
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _plain_lines(value: object, raw: bool) -> list[bytes]:
    if isinstance(value, list):
        return [line for item in value for line in _plain_lines(item, raw)] or (
            [] if raw else [b"(empty list)"]
        )
    if isinstance(value, dict):
        if raw:
            return [_b(v) for v in value.values()]
        return [_b(k) + b": " + (_b(v) if not isinstance(v, list | dict) else _json_bytes(v))
                for k, v in value.items()]
    if value is None and raw:
        return [b""]
    return [_b(value)]


def plain(outcome: Outcome, raw: bool = False) -> bytes:
    """Unstyled text: one value per line; errors as `(error) CODE: message`."""
    err = error_of(outcome)
    if err is not None:
        return f"(error) {err.code}: {err.message}\n".encode()
    assert outcome.reply is not None
    return b"".join(line + b"\n" for line in _plain_lines(outcome.reply.value, raw))


# -- JSON ----------------------------------------------------------------------------------

def to_jsonable(value: object) -> object:
    """bytes become text when they are UTF-8, else {"base64": ...}; the rest maps as is."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    return value


def _json_bytes(value: object) -> bytes:
    return json.dumps(to_jsonable(value), ensure_ascii=False).encode()


def as_json(outcome: Outcome) -> bytes:
    err = error_of(outcome)
    if err is not None:
        return _json_bytes({"error": {"code": err.code, "message": err.message}}) + b"\n"
    assert outcome.reply is not None
    return _json_bytes(outcome.reply.value) + b"\n"


# -- rich, for a terminal --------------------------------------------------------------------

def show_bytes(value: bytes) -> str:
    """Text for a value: UTF-8 as is, anything else escaped (never raw control bytes)."""
    text = value.decode("utf-8", "backslashreplace")
    if any(ch < " " and ch not in "\n\t" for ch in text):
        text = text.encode("unicode_escape").decode("ascii")
    return text


def rich_value(value: object, kind: ReplyKind | None = None) -> RenderableType:
    if value is None:
        return Text("(nil)", style="dim italic")
    if isinstance(value, bool | int):
        return Text(f"(integer) {int(value)}", style="cyan")
    if isinstance(value, str):
        return Text(value, style="green")
    if isinstance(value, bytes):
        return Text(f'"{show_bytes(value)}"')
    if isinstance(value, dict):
        return _table(value)
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return _records(value)
        if not value:
            return Text("(empty list)", style="dim italic")
        width = len(str(len(value)))
        return Group(*[
            Text.assemble((f"{i:>{width}}) ", "dim"), rich_value(v))  # type: ignore[arg-type]
            if not isinstance(v, list | dict) else Group(Text(f"{i:>{width}})", "dim"),
                                                         rich_value(v))
            for i, v in enumerate(value, 1)
        ])
    return Text(repr(value))


def _cell(value: object) -> str:
    if isinstance(value, bytes):
        return show_bytes(value)
    return "" if value is None else str(value)


def _table(mapping: dict) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in mapping.items():
        table.add_row(_cell(key), _cell(value))
    return table


def _records(rows: list[dict]) -> Table:
    columns: list[str] = []
    for row in rows:
        columns.extend(str(k) for k in row if str(k) not in columns)
    table = Table(*columns)
    for row in rows:
        table.add_row(*[_cell(row.get(c)) for c in columns])
    return table


def rich(outcome: Outcome) -> RenderableType:
    err = error_of(outcome)
    if err is not None:
        return Text(f"(error) {err.code}: {err.message}", style="bold red")
    assert outcome.reply is not None
    return rich_value(outcome.reply.value, outcome.reply.kind)


def event_plain(event: dict) -> bytes:
    """One tab-separated line per change: cursor, origin, set|del, key, value."""
    head = f"{event['cursor']}\t{event['origin']}\t".encode()
    if event["deleted"]:
        return head + b"del\t" + event["key"] + b"\n"
    return head + b"set\t" + event["key"] + b"\t" + event["value"] + b"\n"


def event_rich(event: dict) -> Text:
    import time

    stamp = time.strftime("%H:%M:%S", time.localtime((event.get("stamp", 0) >> 16) / 1000))
    text = Text.assemble((f"{stamp} ", "dim"), (f"{event['origin']:<16} ", "magenta"))
    if event["deleted"]:
        text.append("DEL ", style="red bold")
        text.append(show_bytes(event["key"]), style="bold")
    else:
        text.append("SET ", style="green bold")
        text.append(show_bytes(event["key"]), style="bold")
        text.append(f' "{show_bytes(event["value"])}"')
    return text
