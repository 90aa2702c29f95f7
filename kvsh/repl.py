"""The interactive shell: a prompt_toolkit session over the same execution path as -c."""

from __future__ import annotations

from prompt_toolkit import PromptSession

from kvsh.client import Client
from kvsh.execute import run_line


def repl(client: Client, printer, session: PromptSession | None = None) -> int:
    from kvsh.cli import show

    session = session or PromptSession()
    prompt = f"{client.host}:{client.port}> "
    while True:
        try:
            line = session.prompt(prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C clears the line
        except EOFError:
            return 0  # Ctrl-D quits
        if line.strip().lower() in ("quit", "exit"):
            return 0
        outcome = run_line(client, line)
        if outcome is not None:
            show(outcome, printer)
