"""Completion: command names, options where they fit, keys and members from the server.

What may go at the cursor is read from the command table (`kvsh.grammar`); keys and members
come from a `KeySource`. The REPL wraps this in a ThreadedCompleter, so a round trip to the
server never stalls typing. Case follows the user: `se<Tab>` gives `set`, `SE<Tab>` `SET`.
"""

from __future__ import annotations

from collections.abc import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from kvsh.grammar import Role, all_commands, find, open_options, slot_at, words
from kvsh.render import show_bytes
from shared.commands import Kind

TTL_META_MAX = 30  # keys whose TTL is fetched for the meta column (one pipelined round trip)


def follow_case(typed: str, word: str) -> str:
    """`word` in lower case when the user types in lower case, else as written (upper)."""
    letters = [c for c in typed if c.isalpha()]
    return word.lower() if letters and all(c.islower() for c in letters) else word


def quote(text: str) -> str:
    """A word as it must be typed so the shell splits it back to `text`."""
    if text and not any(c.isspace() or c in "'\"\\#" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ttl_meta(ttl: int | None) -> str:
    if ttl is None or ttl == -2:
        return ""
    if ttl == -1:
        return "no expiry"
    return f"expires in {ttl}s"


class KvCompleter(Completer):
    def __init__(self, source) -> None:
        self.source = source  # a KeySource, or anything with keys/ttls/members

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterable[Completion]:
        before = document.text_before_cursor
        ws = words(before)
        typing = bool(ws) and ws[-1].end == len(before)
        current = ws[-1] if typing else None
        raw = before[current.start:] if current else ""
        value = current.value if current else ""
        done = [w.value for w in (ws[:-1] if typing else ws)]
        if not done:
            yield from self._commands(value, raw)
            return
        command = find(done[0])
        if command is None:
            return
        args = done[1:]
        slot = slot_at(command, args + [value], len(args))
        if slot.role is Role.OPTION:
            yield from self._options(command, args, value, raw)
        elif slot.role in (Role.ARG, Role.OPTION_VALUE) and slot.kind is not None:
            yield from self._by_kind(slot.kind, value, raw)

    def _commands(self, value: str, raw: str) -> Iterable[Completion]:
        for c in sorted(all_commands(), key=lambda c: c.name):
            if c.name.startswith(value.upper()):
                yield Completion(follow_case(value, c.name), -len(raw), display_meta=c.summary)

    def _options(self, command, args: list[str], value: str, raw: str) -> Iterable[Completion]:
        for o in open_options(command, args):
            if o.token.startswith(value.upper()):
                meta = f"{o.token} {o.value.name}" if o.value else o.token
                if o.group:
                    meta += f" ({o.group})"
                yield Completion(follow_case(value, o.token), -len(raw), display_meta=meta)

    def _by_kind(self, kind: Kind, value: str, raw: str) -> Iterable[Completion]:
        if kind in (Kind.KEY, Kind.PATTERN):
            yield from self._keys(value, raw)
        elif kind is Kind.COMMAND:
            for c in sorted(all_commands(), key=lambda c: c.name):
                if c.name.startswith(value.upper()):
                    yield Completion(follow_case(value, c.name), -len(raw), display_meta=c.summary)
        elif kind is Kind.NODE:
            yield from self._members(value, raw)

    def _keys(self, value: str, raw: str) -> Iterable[Completion]:
        keys = self.source.keys(value.encode("utf-8", "surrogateescape"))
        ttls = self.source.ttls(keys[:TTL_META_MAX]) if keys else {}
        for key in keys:
            text = key.decode("utf-8", "surrogateescape")
            yield Completion(quote(text), -len(raw), display=show_bytes(key),
                             display_meta=ttl_meta(ttls.get(key)))

    def _members(self, value: str, raw: str) -> Iterable[Completion]:
        for m in self.source.members():
            name, address = str(m.get("name", "")), str(m.get("address", ""))
            meta = f"{m.get('status', '?')} · {name}"
            for text in dict.fromkeys((address, name)):
                if text and text.startswith(value):
                    yield Completion(quote(text), -len(raw), display_meta=meta)
