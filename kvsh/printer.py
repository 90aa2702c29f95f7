"""Where replies go: an outcome (and a WATCH stream's events) written to stdout in the chosen
format — rich for a human at a terminal, plain, raw or JSON for everything else. Every mode of
kvsh (one-shot, pipe, REPL) prints through here.
"""

from __future__ import annotations

import sys

from kvsh import render
from kvsh.execute import Outcome


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
