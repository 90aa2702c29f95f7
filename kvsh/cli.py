"""`kvsh` command line: pick the mode (one-shot, pipe, REPL) and the output format.

Every mode runs lines through `execute.run_line` and prints with `render`; a mode only decides
where lines come from and where replies go. In pipe mode every line gets exactly one reply on
stdout, flushed at once, so a program can converse with kvsh line by line.

A node that encrypts (CURVE) is reached with its server key: `--server-key` or KV_SERVER_KEY,
or the key remembered for that host:port in known_hosts (kvsh.knownhosts), where a key given
for a new host:port is stored once a handshake with it succeeds.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Iterable

from kvsh import knownhosts
from kvsh.execute import Exit, Outcome, run_line
from kvsh.printer import Printer, show
from shared import keyring
from shared.client import Client
from shared.errors import KvError


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
    parser.add_argument("--user", help="log in as this user; the password comes from "
                        "KV_PASSWORD or a prompt, never from the command line")
    parser.add_argument("--server-key", metavar="KEY", default=os.environ.get("KV_SERVER_KEY"),
                        help="the node's CURVE server key, when it encrypts (default: "
                        "$KV_SERVER_KEY, else the key known_hosts remembers for HOST:PORT)")
    return parser


class NoPassword(Exception):
    pass


def password_for(user: str | None) -> str | None:
    if user is None:
        return None
    password = os.environ.get("KV_PASSWORD")
    if password is not None:
        return password
    try:  # the terminal, even when stdin is a script: getpass reads /dev/tty
        with open("/dev/tty"):
            pass
    except OSError:
        raise NoPassword(f"--user {user} needs a password and there is no terminal to ask "
                         "on — set KV_PASSWORD") from None
    return getpass.getpass(f"password for {user}: ")


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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(keyring.glued_key_flags(argv))
    host, known = f"{args.host}:{args.port}", knownhosts.default_path()
    try:
        choice = knownhosts.choose(known, host, args.server_key)
    except KvError as exc:  # a changed key (nothing is sent) or one that is no key at all
        print(f"kvsh: {exc}", file=sys.stderr)
        return int(Exit.ERROR)
    try:
        password = password_for(args.user)
    except NoPassword as exc:
        print(f"kvsh: {exc}", file=sys.stderr)
        return int(Exit.ERROR)
    except (KeyboardInterrupt, EOFError):
        return 130
    client = Client(args.host, args.port, args.timeout, choice.key, args.user, password)
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
        if choice.remember and client.handshaken and choice.key is not None:
            knownhosts.remember(known, host, choice.key)


def _human_format() -> str:
    return "rich" if sys.stdout.isatty() else "plain"
