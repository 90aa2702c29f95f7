"""`kvsh` command line: pick the mode (one-shot, pipe, REPL) and the output format.

Every mode runs lines through `execute.run_line` and prints with `render`; a mode only decides
where lines come from and where replies go. In pipe mode every line gets exactly one reply on
stdout, flushed at once, so a program can converse with kvsh line by line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable

from kvsh import render
from kvsh.client import Client
from kvsh.execute import Exit, Outcome, run_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvsh", description="The kv shell.")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7700, help="server port (default 7700)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for each reply (default 5)")
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON document per reply")
    fmt.add_argument("--raw", action="store_true", help="values only, no decoration")
    parser.add_argument("-c", dest="command", metavar="COMMAND", help="run one command and exit")
    return parser


class Printer:
    """Writes outcomes to stdout in the chosen format; rich only for a human at a terminal."""

    def __init__(self, fmt: str, stream=None, pager: bool = False) -> None:
        self.fmt = fmt
        self.out = stream or sys.stdout
        self.pager = pager  # the REPL pages replies taller than the screen
        self._console = None

    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.out, highlight=False)
        return self._console

    def outcome(self, outcome: Outcome) -> None:
        if self.fmt == "rich":
            self.print_rich(render.rich(outcome))
            return
        data = {"json": render.as_json, "raw": lambda o: render.plain(o, raw=True),
                "plain": render.plain}[self.fmt](outcome)
        self._write(data)

    def print_rich(self, renderable) -> None:
        console = self.console()
        if self.pager and render.height(console, renderable) >= console.height - 1:
            with console.pager(styles=True):
                console.print(renderable)
        else:
            console.print(renderable)

    def event(self, event: dict) -> None:
        """One item of a WATCH stream: a change, or a notice that it was lost or resumed."""
        if "lost" in event or "watching" in event:
            if self.fmt == "rich":
                self.console().print(render.notice_rich(event))
            else:  # notices go to stderr: stdout keeps one line per change for scripts
                print(render.notice_text(event), file=sys.stderr, flush=True)
        elif self.fmt == "rich":
            self.console().print(render.event_rich(event))
        elif self.fmt == "json":
            self._write(render._json_bytes(event) + b"\n")
        else:
            self._write(render.event_plain(event))

    def text(self, text: str) -> None:
        """A message from the shell itself (HELP, CONNECT), in plain formats."""
        self._write(text.encode())

    def _write(self, data: bytes) -> None:
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            self.out.flush()
            buffer.write(data)
            buffer.flush()
        else:
            self.out.write(data.decode("utf-8", "replace"))
            self.out.flush()


def run_lines(client: Client, lines: Iterable[str], printer: Printer,
              on_outcome: Callable[[Outcome], None] | None = None) -> int:
    """Run each line in order; the exit code is the highest seen."""
    worst = Exit.OK
    for line in lines:
        outcome = run_line(client, line.rstrip("\r\n"))
        if outcome is None:
            continue
        show(outcome, printer)
        worst = max(worst, outcome.exit_code)
        if on_outcome:
            on_outcome(outcome)
    return int(worst)


def show(outcome: Outcome, printer: Printer) -> None:
    """Print a reply, then a streaming command's events until Ctrl-C."""
    printer.outcome(outcome)
    if outcome.events is None:
        return
    try:
        for event in outcome.events:
            printer.event(event)
    except KeyboardInterrupt:
        pass
    finally:
        outcome.events.close()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.host, args.port, args.timeout)
    fmt = "json" if args.json else "raw" if args.raw else None
    try:
        if args.command is not None:
            return run_lines(client, [args.command], Printer(fmt or _human_format()))
        if not sys.stdin.isatty():
            return run_lines(client, sys.stdin, Printer(fmt or "plain"))
        from kvsh.repl import repl

        return repl(client, Printer(fmt or _human_format()))
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


def _human_format() -> str:
    return "rich" if sys.stdout.isatty() else "plain"
