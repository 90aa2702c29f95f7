"""The completer with real prompt_toolkit Documents, and the key source with a fake client."""

from __future__ import annotations

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from kvsh.completer import KvCompleter, quote
from kvsh.keysource import KeySource, glob_escape
from shared.codec import Reply, ReplyKind


class FakeSource:
    def __init__(self, keys=(), members=()):
        self._keys = sorted(keys)
        self._members = list(members)
        self.asked: list[bytes] = []

    def keys(self, prefix: bytes) -> list[bytes]:
        self.asked.append(prefix)
        return [k for k in self._keys if k.startswith(prefix)]

    def ttls(self, keys):
        return {k: (-1 if k != b"user:2" else 42) for k in keys}

    def members(self):
        return self._members


def complete(text: str, source=None) -> list:
    completer = KvCompleter(source or FakeSource())
    return list(completer.get_completions(Document(text, len(text)), CompleteEvent()))


def texts(text: str, source=None) -> list[str]:
    return [c.text for c in complete(text, source)]


def test_command_names_follow_the_typed_case():
    assert texts("se") == ["set", "setex", "setnx", "setrange"]
    assert texts("SE") == ["SET", "SETEX", "SETNX", "SETRANGE"]
    assert texts("Ex") == ["EXEC", "EXISTS", "EXIT", "EXPIRE", "EXPIREAT"]
    assert "CONNECT" in texts("")


def test_command_completion_shows_the_summary_and_replaces_the_word():
    [c] = complete("mg")
    assert c.text == "mget" and c.start_position == -2
    assert "several keys" in c.display_meta_text


def test_keys_come_from_the_source_with_ttl_meta():
    source = FakeSource([b"user:1", b"user:2", b"order:1"])
    got = complete("GET us", source)
    assert [c.text for c in got] == ["user:1", "user:2"]
    assert got[0].start_position == -2
    assert [c.display_meta_text for c in got] == ["no expiry", "expires in 42s"]
    assert source.asked == [b"us"]


def test_every_key_slot_completes_keys_but_values_do_not():
    source = FakeSource([b"a1", b"a2"])
    assert texts("SET a", source) == ["a1", "a2"]
    assert texts("SET a1 a", source) == []  # the value slot
    assert texts("MGET a1 a", source) == ["a1", "a2"]  # repeated keys
    assert texts("MSET a1 x a", source) == ["a1", "a2"]
    assert texts("DEL ", source) == ["a1", "a2"]


def test_options_where_the_table_says_they_fit():
    assert texts("SET k v ") == ["EX", "PX", "EXAT", "PXAT", "KEEPTTL", "NX", "XX", "GET"]
    assert texts("set k v e") == ["ex", "exat"]
    assert texts("SET k v EX 10 ") == ["NX", "XX", "GET"]  # one expiry option at most
    assert texts("SET k v NX ") == ["EX", "PX", "EXAT", "PXAT", "KEEPTTL", "GET"]
    assert texts("SCAN 0 ") == ["MATCH", "COUNT", "TYPE"]
    assert texts("SCAN 0 MATCH ", FakeSource([b"x"])) == ["x"]  # a pattern: keys offered
    assert texts("SCAN 0 COUNT ") == []  # a number
    assert texts("WATCH p ") == ["FROM"]
    assert texts("GET k ") == []  # nothing fits after GET's key


def test_help_completes_command_names_and_unknown_commands_nothing():
    assert texts("HELP wa") == ["watch"]
    assert texts("FROB ") == []


def test_connect_completes_member_addresses_and_names():
    source = FakeSource(members=[{"name": "n1", "address": "127.0.0.1:7700", "status": "alive"}])
    got = complete("CONNECT ", source)
    assert [c.text for c in got] == ["127.0.0.1:7700", "n1"]
    assert "alive" in got[0].display_meta_text
    assert texts("CONNECT n", source) == ["n1"]


def test_keys_with_spaces_are_quoted_and_quoted_words_replaced_whole():
    source = FakeSource([b"my key", b"my-key"])
    got = complete('GET "my', source)
    assert [c.text for c in got] == ['"my key"', "my-key"]
    assert got[0].start_position == -3
    assert quote('a"b') == '"a\\"b"'


# -- the key source ----------------------------------------------------------------------

class FakeClient:
    def __init__(self, keys):
        self.store = sorted(keys)
        self.scans: list[tuple[int, bytes, int]] = []

    def scan(self, cursor, match, count):
        self.scans.append((cursor, match, count))
        prefix = match[:-1].replace(b"[*]", b"*")
        hits = [k for k in self.store if k.startswith(prefix)]
        page = hits[cursor:cursor + count]
        nxt = cursor + count
        return (0 if nxt >= len(hits) else nxt), page

    def pipeline(self, commands):
        return [Reply(0, ReplyKind.INT, -1) for _ in commands]

    def members(self):
        return [{"name": "n1"}]

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_key_source_scans_by_prefix_and_answers_longer_prefixes_from_its_cache():
    client, clock = FakeClient([b"user:1", b"user:2", b"order:1"]), Clock()
    source = KeySource(lambda: client, ttl_s=2, clock=clock)
    assert source.keys(b"u") == [b"user:1", b"user:2"]
    assert source.keys(b"user:2") == [b"user:2"]
    assert client.scans == [(0, b"u*", 50)]
    clock.now = 5  # stale
    source.keys(b"u")
    assert len(client.scans) == 2
    source.invalidate()
    source.keys(b"u")
    assert len(client.scans) == 3


def test_key_source_caps_and_bounds_its_scans():
    client = FakeClient([f"k{i:04}".encode() for i in range(1000)])
    source = KeySource(lambda: client, cap=100, count=50)
    assert len(source.keys(b"k")) == 100
    assert len(client.scans) == 2
    source.keys(b"k0")  # a capped answer does not stand in for longer prefixes
    assert len(client.scans) == 4


def test_glob_characters_in_a_prefix_are_matched_literally():
    assert glob_escape(b"a*b?[c") == b"a[*]b[?][[]c"
