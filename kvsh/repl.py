"""The interactive shell: a prompt_toolkit session over the same execution path as `-c`.

What it adds to `execute.run_line` is all about the person typing: completion from the server
(in a worker thread), highlighting, the syntax toolbar, validation on Enter, history with
fish-style suggestions, and a connection that can come and go. Invariants:

- The main thread owns `self.client`; the completer and the link monitor each own their own
  client (ZeroMQ sockets stay with one thread).
- A command that cannot reach the server prints one line and leaves the prompt working; the
  next command (or the monitor) reconnects by itself.
- Shell commands (`kvsh.shellcmds`) and HELP are answered here and never sent.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import platformdirs
from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.history import FileHistory, History
from prompt_toolkit.styles import Style

from kvsh import knownhosts, lexer, render, toolbar
from kvsh.completer import KvCompleter, quote
from kvsh.execute import Outcome, run_line, split
from kvsh.grammar import all_commands, find
from kvsh.keybindings import key_bindings
from kvsh.keysource import KeySource
from kvsh.link import LinkState, Monitor
from kvsh.printer import show
from kvsh.progress import PASTE_PROGRESS_FROM, keys_by_scan, run_with_progress
from kvsh.shellcmds import SHELL_COMMANDS
from kvsh.validator import KvValidator
from shared.client import Client
from shared.commands import COMMANDS, parse
from shared.errors import KvError, Unreachable

SIDE_TIMEOUT_S = 1.0  # completion and the monitor give up fast: typing must never wait


def history_path() -> Path:
    """Where the history lives: platformdirs' user state dir (XDG_STATE_HOME on Linux)."""
    path = platformdirs.user_state_path("kvsh", appauthor=False)
    path.mkdir(parents=True, exist_ok=True)
    return path / "history"


class Shell:
    def __init__(self, client: Client, printer, history: History | None = None,
                 input=None, output=None, monitor: bool = True) -> None:
        self.client = client
        self.printer = printer
        self.link = LinkState(client.host, client.port)
        self.keys = KeySource(self._side_client)
        self.monitor = Monitor(self.link, self._side_client) if monitor else None
        self.session: PromptSession = PromptSession(
            history=history if history is not None else FileHistory(str(history_path())),
            auto_suggest=AutoSuggestFromHistory(),
            completer=ThreadedCompleter(KvCompleter(self.keys)),
            complete_while_typing=True,
            lexer=lexer.KvLexer(),
            validator=KvValidator(),
            validate_while_typing=False,
            bottom_toolbar=self._toolbar,
            style=Style.from_dict({**lexer.STYLE, **toolbar.STYLE,
                                   "prompt": "bold", "prompt.down": "bold ansired"}),
            key_bindings=key_bindings(),
            input=input,
            output=output,
        )
        self.running = True

    def _side_client(self) -> Client:
        return self.client.clone(timeout=min(self.client.timeout, SIDE_TIMEOUT_S))

    def _toolbar(self):
        buffer = self.session.default_buffer
        return toolbar.toolbar(buffer.document.text_before_cursor, self.link,
                               rejected=buffer.validation_error is not None)

    def _message(self):
        if self.link.up is False:
            return [("class:prompt.down", f"{self.link.address} (down)> ")]
        tx = "(TX)" if self.client.in_transaction else ""  # as redis-cli marks an open MULTI
        return [("class:prompt", f"{self.link.address}{tx}> ")]

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> int:
        if self.monitor:
            self.monitor.on_change = self._redraw
            self.monitor.start()
        try:
            while self.running:
                try:
                    text = self.session.prompt(self._message)
                except KeyboardInterrupt:
                    continue  # Ctrl-C clears the line
                except EOFError:
                    break  # Ctrl-D quits
                try:
                    self.run_text(text)
                except KeyboardInterrupt:  # Ctrl-C while waiting for a reply, or mid-paste
                    self.client.reset()  # a late reply must not meet the next request
                    self._say("interrupted", dim=True)
        finally:
            if self.monitor:
                self.monitor.stop()
            self.keys.close()
            self.client.close()  # after CONNECT this is not the client the caller made
        return 0

    def _redraw(self) -> None:
        app = self.session.app
        if app.is_running:
            app.invalidate()

    def run_text(self, text: str) -> None:
        """One accepted input: a line, or a paste of many run one by one."""
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) >= PASTE_PROGRESS_FROM and self.printer.fmt == "rich":
            run_with_progress(lines, self.run_line, self.printer.console())
            return
        for line in lines:
            if not self.running:
                return
            self.run_line(line)

    def run_line(self, line: str) -> None:
        try:
            argv = split(line)
        except KvError:
            argv = []
        name = argv[0].decode("utf-8", "replace").upper() if argv else ""
        if name in SHELL_COMMANDS:
            self._shell_command(name, argv)
            return
        if name == "HELP":
            self._help(argv)
            return
        if self.link.up is False:
            self.client.reset()  # a fresh connection fails fast, or finds the node back
        outcome = self._keys(argv) if name == "KEYS" else None
        outcome = outcome or run_line(self.client, line)
        if outcome is None:
            return
        self._note(outcome)
        if outcome.events is not None:
            self._watch(outcome)
            return
        show(outcome, self.printer)
        if isinstance(outcome.error, Unreachable):
            self._say("the shell keeps working and reconnects when the node is back "
                      "(or CONNECT to another)", dim=True)

    def _watch(self, outcome: Outcome) -> None:
        """Show a WATCH until Ctrl-C, then say how to resume from where it stopped."""
        assert outcome.reply is not None and outcome.events is not None
        since = parse(COMMANDS["WATCH"], outcome.argv[1:]).options.get("FROM")
        # Until an event arrives, resuming from FROM (not the ack's cursor) keeps a replay whole.
        cursor = [outcome.reply.value["cursor"] if since is None  # type: ignore[index]
                  else since]

        def tracked(events):
            try:
                for event in events:
                    if "key" in event:  # a change: a resumed stream's ack is not one yet
                        cursor[0] = event["cursor"]
                    elif "lagged" in event:  # the node said how far we had got
                        cursor[0] = event["lagged"]
                    yield event
            finally:
                events.close()

        show(replace(outcome, events=tracked(outcome.events)), self.printer)
        prefix = outcome.argv[1].decode("utf-8", "surrogateescape")
        self._say(f"stopped; resume with: WATCH {quote(prefix)} FROM {cursor[0]}", dim=True)

    def _keys(self, argv: list[bytes]) -> Outcome | None:
        if self.printer.fmt != "rich":
            return None
        try:
            return keys_by_scan(self.client, COMMANDS["KEYS"], argv, self.printer.console())
        except KvError:
            return None  # let the ordinary path run and report it

    def _note(self, outcome: Outcome) -> None:
        """Keep the link state and the key cache in step with what just happened."""
        if isinstance(outcome.error, Unreachable):
            self.link.lost(outcome.error.message)
            if self.monitor:
                self.monitor.poke()
            return
        if outcome.error is None:
            self.link.saw(self.client.last_rtt)
        if outcome.command is not None and outcome.command.mutating:
            self.keys.invalidate()

    # -- commands answered here --------------------------------------------------------------

    def _shell_command(self, name: str, argv: list[bytes]) -> None:
        if name in ("EXIT", "QUIT"):
            self.running = False
        elif name == "CLEAR":
            self.printer.console().clear()
        elif name == "CONNECT" and len(argv) == 2:
            self.connect(argv[1].decode("utf-8", "replace"))
        else:
            self._say(f"usage: {SHELL_COMMANDS[name].syntax}", error=True)

    def connect(self, target: str) -> bool:
        """Switch to another node: host:port, a port, or a member's name."""
        for member in self.keys.members():
            if member.get("name") == target:
                target = str(member.get("address", target))
        host, _, port = target.rpartition(":")
        host = host or self.client.host
        if not port.isdigit():
            self._say(f"CONNECT wants host:port or a member's name, not '{target}'", error=True)
            return False
        # The key known_hosts holds for it, else ours: the members of a cluster share one.
        known = knownhosts.lookup(knownhosts.default_path(), f"{host}:{port}")
        candidate = self.client.clone(host, int(port), server_key=known[0] if known else None)
        try:
            candidate.ping()
        except KvError as exc:
            candidate.close()
            self._say(f"{exc.message} — still connected to {self.link.address}", error=True)
            return False
        self.client.close()
        self.client = candidate
        self.link = LinkState(host, int(port))
        self.link.saw(candidate.last_rtt)
        self.keys.retarget(self._side_client)
        if self.monitor:
            self.monitor.retarget(self.link, self._side_client)
        self._say(f"connected to {self.link.address}")
        return True

    def _help(self, argv: list[bytes]) -> None:
        commands = all_commands()
        if len(argv) > 1:
            found = find(argv[1].decode("utf-8", "replace"))
            if found is None:
                self._say(f"no command '{argv[1].decode('utf-8', 'replace')}'", error=True)
                return
            commands = [found]
        view = render.help_view(commands, set(SHELL_COMMANDS))
        if self.printer.fmt == "rich":
            self.printer.print_rich(view)
        else:
            self.printer.text("".join(f"{c.syntax}  {c.summary}\n" for c in commands))

    def _say(self, text: str, error: bool = False, dim: bool = False) -> None:
        if self.printer.fmt == "rich":
            style = "dim" if dim else "bold red" if error else "green"
            self.printer.console().print(text, style=style, markup=False, highlight=False)
        else:
            self.printer.text(("(error) " if error else "") + text + "\n")


def repl(client: Client, printer) -> int:
    printer.pager = True
    os.environ.setdefault("LESS", "FRX")  # as git does: colours through, quit if one screen
    return Shell(client, printer).run()
