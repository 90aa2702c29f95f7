"""Progress for what takes more than a moment in the shell: long pastes and large KEYS.

Both only matter to a person at a terminal; with plain output (or few lines, or a small
keyspace) they step aside and the ordinary path runs. Progress is drawn with rich on the
printer's own console, so replies printed meanwhile appear above the bar.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from kvsh.execute import Outcome
from shared.codec import Reply, ReplyKind
from shared.commands import Command, parse

PASTE_PROGRESS_FROM = 200  # pasted lines
KEYS_PROGRESS_FROM = 50_000  # live keys: beyond this KEYS runs as SCAN with a progress bar
SCAN_COUNT = 5_000


def run_with_progress(lines: list[str], run: Callable[[str], None], console) -> None:
    """Run many lines one by one under a progress bar (a multi-thousand-line paste)."""
    columns = (TextColumn("running pasted lines"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("paste", total=len(lines))
        for line in lines:
            run(line)
            progress.advance(task)


def keys_by_scan(client, command: Command, argv: list[bytes], console) -> Outcome | None:
    """KEYS over a large keyspace as a SCAN loop with a progress display; None when small."""
    if client.dbsize() < KEYS_PROGRESS_FROM:
        return None
    call = parse(command, argv[1:])
    pattern = call.args[0] if call.args else b"*"
    found: list[bytes] = []
    columns = (SpinnerColumn(), TextColumn("KEYS {task.fields[pattern]}: {task.completed} found"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("keys", total=None,
                                 pattern=pattern.decode("utf-8", "replace"))
        for batch in _scan(client, pattern):
            found.extend(batch)
            progress.update(task, completed=len(found))
    return Outcome(argv, command, reply=Reply(0, ReplyKind.LIST, found))


def _scan(client, pattern: bytes) -> Iterable[list[bytes]]:
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, pattern, SCAN_COUNT)
        yield keys
        if cursor == 0:
            return
