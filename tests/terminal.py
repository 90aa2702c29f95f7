"""A real terminal for end-to-end tests: a program in its own tmux server, read as a screen.

Each Terminal runs one command in a private tmux server (its own `-L` socket, so nothing is
shared with anyone else's tmux) and is read back with capture-pane. Waiting polls the screen
with a deadline; a failed wait raises with what was expected, what was seen and the full
screen, so a failure reads without re-running it.
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.procs import DEADLINE_S, env_for

_ids = itertools.count(1)


class Terminal:
    def __init__(self, home: Path, argv: list[str], width: int = 100, height: int = 30) -> None:
        self.socket = f"kv-e2e-{os.getpid()}-{next(_ids)}"
        env = env_for(home)
        exports = {k: env[k] for k in ("PYTHONPATH", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
                                       "XDG_STATE_HOME", "XDG_CACHE_HOME")}
        command = "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in exports.items())
        command += " PAGER=cat " + shlex.join(argv) + "; echo '[exited]'; sleep 600"
        self._tmux("new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height),
                   command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=DEADLINE_S)
        if done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def send(self, *keys: str) -> None:
        """Keys as tmux names them: text, "Enter", "Tab", "C-c", "C-d"."""
        self._tmux("send-keys", "-t", "main", *keys)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "main", "-l", text)

    def enter(self, line: str) -> None:
        """Type a line and press Enter, as a person runs a command."""
        self.type(line)
        self.send("Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "main")

    def wait_for(self, expected: str | Callable[[str], bool], deadline_s: float = DEADLINE_S,
                 what: str | None = None) -> str:
        """Poll the screen until `expected` (a substring or a predicate) shows; return it."""
        check = expected if callable(expected) else (lambda s: expected in s)
        end = time.monotonic() + deadline_s
        while True:
            screen = self.screen()
            if check(screen):
                return screen
            if time.monotonic() > end:
                raise AssertionError(
                    f"timed out after {deadline_s}s\n"
                    f"expected: {what or expected!r}\n"
                    f"actual (last screen):\n{'-' * 40}\n{screen}{'-' * 40}"
                )
            time.sleep(0.05)  # a polling interval, not a guess at how long anything takes

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=DEADLINE_S)
        tmpdir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
        (tmpdir / self.socket).unlink(missing_ok=True)  # tmux leaves its socket file behind
