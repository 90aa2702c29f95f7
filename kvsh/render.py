"""Rendering: an outcome in, text out. Pure functions, tested by printing into strings.

Three plain formats for scripts (CONTRACT.md) — `plain` (values as is, `(nil)` for missing),
`raw` (values only) and `json` (one document per reply) — and `rich` for people at a terminal.
"""

from __future__ import annotations

import base64
import json

from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from kvsh.execute import Outcome
from shared.codec import ReplyKind
from shared.errors import KvError

NIL = b"(nil)"
COLUMNS_FROM = 12  # key lists at least this long are laid out in columns, like ls
STATUS_STYLE = {"alive": "bold green", "suspect": "bold yellow", "dead": "bold red",
                "left": "dim"}


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
    if isinstance(value, KvError):  # one of EXEC's results
        return [f"(error) {value.code}: {value.message}".encode()]
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
    if isinstance(value, KvError):  # one of EXEC's results
        return {"error": {"code": value.code, "message": value.message}}
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
        return json_value(value) or Text(f'"{show_bytes(value)}"')
    if isinstance(value, dict):
        return _table(value)
    if isinstance(value, KvError):  # one of EXEC's results
        return Text(f"(error) {value.code}: {value.message}", style="bold red")
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


def json_value(value: bytes) -> RenderableType | None:
    """A JSON object or array, pretty-printed and coloured; None for anything else."""
    head = value[:1].lstrip() or value.lstrip()[:1]
    if head not in (b"{", b"["):
        return None
    try:
        json.loads(value)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        return None
    return JSON(value.decode("utf-8"), indent=2)


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


_MEMBER_KEYS = {"name", "address", "status", "self", "last_seen_ms", "last_seen", "lag"}


def members_table(rows: list[dict], width: int | None = None) -> Table:
    """MEMBERS: one row per node, status coloured, this node marked; fields beyond the
    contract's (whatever membership adds later) follow as extra columns, as many as fit in
    `width` whole, so the contract's columns are never squeezed to an ellipsis."""
    extra = list(dict.fromkeys(str(k) for r in rows for k in r if str(k) not in _MEMBER_KEYS))
    core = ["", "name", "address", "status", "last seen", "lag"]
    cells = [["*" if r.get("self") else "", _cell(r.get("name")), _cell(r.get("address")),
              str(r.get("status", "?")), _last_seen(r), _cell(r.get("lag", ""))] for r in rows]
    if width is not None:
        used = sum(_column_width(h, [c[i] for c in cells]) for i, h in enumerate(core)) + 1
        fitting = []
        for k in extra:
            need = _column_width(k, [_cell(r.get(k)) for r in rows])
            if used + need > width:
                break
            fitting.append(k)
            used += need
        extra = fitting
    table = Table(*core, *extra)
    for row, base in zip(rows, cells, strict=True):
        status = base[3]
        table.add_row(*base[:3], Text(status, style=STATUS_STYLE.get(status, "")), *base[4:],
                      *[_cell(row.get(k)) for k in extra])
    alive = sum(1 for r in rows if r.get("status") == "alive")
    table.caption = f"{len(rows)} member{'s' if len(rows) != 1 else ''}, {alive} alive"
    return table


def _column_width(header: str, values: list[str]) -> int:
    return max([len(header), *map(len, values)]) + 3  # a space each side and a border


class MembersView:
    """MEMBERS laid out for the width it is drawn in (known only when rich renders it)."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __rich_console__(self, console, options):  # noqa: ANN001, ANN204
        yield members_table(self.rows, options.max_width)


def _last_seen(row: dict) -> str:
    if row.get("self"):
        return "now"
    if isinstance(row.get("last_seen_ms"), int | float):
        return f"{row['last_seen_ms'] / 1000:.1f}s ago"
    return _cell(row.get("last_seen"))


def info_table(info: dict) -> Table:
    table = Table("field", "value", show_header=False, title="INFO", title_justify="left")
    for key, value in info.items():
        table.add_row(Text(_cell(key), style="bold"), _cell(value))
    return table


def key_list(keys: list) -> RenderableType:
    """KEYS: sorted; numbered like redis-cli when short, in columns (top to bottom) when long."""
    keys = sorted(keys, key=lambda k: k if isinstance(k, bytes) else str(k).encode())
    if len(keys) < COLUMNS_FROM:
        return rich_value(keys)
    cells = [show_bytes(k) if isinstance(k, bytes) else str(k) for k in keys]
    return Group(Text(f"({len(keys)} keys)", style="dim"), KeyColumns(cells))


class KeyColumns:
    """Words in columns filled top to bottom, as many as the console is wide (like ls)."""

    def __init__(self, cells: list[str]) -> None:
        self.cells = cells

    def __rich_console__(self, console, options):
        width = max(cell_len(c) for c in self.cells) + 2
        ncols = max(1, min(len(self.cells), options.max_width // width))
        nrows = -(-len(self.cells) // ncols)
        grid = Table.grid(padding=(0, 2, 0, 0))
        for _ in range(ncols):
            grid.add_column(no_wrap=True, overflow="ellipsis")
        for r in range(nrows):
            grid.add_row(*[Text(self.cells[i]) if (i := c * nrows + r) < len(self.cells)
                           else "" for c in range(ncols)])
        yield grid


def scan_page(value: list) -> RenderableType:
    cursor, keys = value
    return Group(Text(f"next cursor: {_cell(cursor)}", style="dim"), key_list(keys))


def watch_ack(ack: dict) -> Text:
    history = ack.get("history")
    text = Text.assemble(("watching ", "dim"), (f"'{show_bytes(ack.get('watching', b''))}'",
                                                 "bold"),
                         (f" from cursor {ack.get('cursor')}", "dim"))
    if history == "reset":
        text.append(" — that history is gone: current state first", style="yellow")
    elif history == "replayed":
        text.append(" — replaying what was missed", style="dim")
    text.append(" (Ctrl-C stops)", style="dim")
    return text


_VIEWS = {
    "MEMBERS": (list, MembersView),
    "INFO": (dict, info_table),
    "KEYS": (list, key_list),
    "SCAN": (list, scan_page),
    "WATCH": (dict, watch_ack),
}


def rich(outcome: Outcome) -> RenderableType:
    err = error_of(outcome)
    if err is not None:
        return Text(f"(error) {err.code}: {err.message}", style="bold red")
    assert outcome.reply is not None
    value = outcome.reply.value
    view = _VIEWS.get(outcome.command.name) if outcome.command else None
    if view and isinstance(value, view[0]):
        return view[1](value)
    return rich_value(value, outcome.reply.kind)


def notice_text(item: dict) -> str:
    """A WATCH stream notice: the connection was lost, or the stream resumed (also after the
    node ended it with LAGGED because we read too slowly: one line says both)."""
    if "lost" in item:
        return f"-- watch interrupted: {item['lost']}"
    how = {"replayed": "missed changes replayed", "reset": "history gone: current state first",
           "live": "live"}.get(str(item.get("history")), str(item.get("history")))
    if "lagged" in item:
        return (f"-- watch fell behind after cursor {item['lagged']} (reading too slowly); "
                f"resumed from there ({how})")
    return f"-- watch resumed at cursor {item.get('cursor')} ({how})"


def notice_rich(item: dict) -> Text:
    return Text(notice_text(item), style="bold yellow" if "lost" in item else "bold green")


def height(console, renderable: RenderableType) -> int:
    """How many lines `renderable` takes on `console` (to decide whether to page it)."""
    return len(console.render_lines(renderable, console.options, pad=False))


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


def help_view(commands: list, shell: set[str] | frozenset[str] = frozenset()) -> RenderableType:
    """HELP in the REPL: every command's syntax and summary, or one command in detail."""
    if len(commands) == 1:
        c = commands[0]
        lines = [Text(c.syntax, style="bold"), Text(c.summary)]
        lines += [Text.assemble(("  " + a.name, "yellow"), f"  {a.kind.value}"
                                + (", optional" if a.optional else "")) for a in c.args]
        lines += [Text.assemble(("  " + o.token, "green"),
                                f"  {o.value.name} ({o.value.kind.value})" if o.value else "")
                  for o in c.options]
        if c.name in shell:
            lines.append(Text("a shell command: kvsh answers it, the server never sees it",
                              style="dim"))
        return Group(*lines)
    table = Table("command", "summary", box=None, pad_edge=False)
    for c in commands:
        table.add_row(Text(c.syntax, style="bold"),
                      c.summary + (" (shell)" if c.name in shell else ""))
    return table
