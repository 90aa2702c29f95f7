"""Server keys kvsh has seen, as ssh's known_hosts: trust on first use, then insist.

One line per node, `host:port z85key` (`#` comments and blank lines are kept and skipped), in
the user's config dir (`known_hosts` under platformdirs' "kvsh"). `choose` decides which key a
connection uses:

| given      | stored          | result                                              |
| ---------- | --------------- | --------------------------------------------------- |
| none       | none            | no key: a plain connection                          |
| none       | K               | K                                                   |
| K          | none            | K, remembered once a handshake with it succeeds     |
| K          | K               | K                                                   |
| K          | another key     | refused (KeyChanged): the file is left as it is     |

A node's key changes when its cluster's secret is rotated; it also changes when someone else
answers at that address. Telling the two apart is the user's call, so kvsh refuses and says
which line to remove, as ssh does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from shared.errors import KvError
from shared.keyring import server_key


class KeyChanged(KvError):
    code = "KEY_CHANGED"


@dataclass(frozen=True)
class Choice:
    key: bytes | None  # what to connect with
    remember: bool  # store it once a handshake with it succeeds (first use)


def default_path() -> Path:
    return platformdirs.user_config_path("kvsh", appauthor=False) / "known_hosts"


def lookup(path: Path, host: str) -> tuple[bytes, int] | None:
    """The key stored for `host` (host:port) and its line number, or None."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if len(words) == 2 and not words[0].startswith("#") and words[0] == host:
            return words[1].encode(), number
    return None


def choose(path: Path, host: str, given: str | None) -> Choice:
    """Which key to use for `host` (host:port); KeyChanged when `given` contradicts the file."""
    key = server_key(given) if given else None
    stored = lookup(path, host)
    if stored is None:
        return Choice(key, key is not None)
    known, line = stored
    if key is None or key == known:
        return Choice(known, False)
    raise KeyChanged(
        f"WARNING: the server key of {host} has changed!\n"
        f"  known: {known.decode()}  ({path}, line {line})\n"
        f"  given: {key.decode()}\n"
        "Someone may be answering in its place, or its cluster's secret was rotated.\n"
        f"If the change is expected, remove line {line} of {path} and run again "
        "(the new key is then remembered). Nothing was sent.")


def remember(path: Path, host: str, key: bytes) -> None:
    """Append `host key` to the file (made, with its folder, if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        f.seek(0, 2)
        if f.tell():
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":  # a hand-edited file may end mid-line
                f.write("\n")
        f.write(f"{host} {key.decode()}\n")
