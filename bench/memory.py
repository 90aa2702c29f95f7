"""Memory and restart: RSS of a node holding N keys (16-byte keys, 100-byte values), the same
data in Redis, and how long a node takes to replay its log on restart.

Each figure is taken on fresh processes, so the keyspace measured is exactly the one loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.redisbench import fill_commands
from bench.targets import Kvd, Redis, rss_bytes
from kvd.bench.loadgen import key_of
from kvsh.client import Client

CHUNK = 20_000  # commands per pipeline() call; the client splits them into ~1 MiB BATCHes


def fill_kvd(port: int, keys: int, value_size: int) -> None:
    value = b"v" * value_size
    with Client("127.0.0.1", port, timeout=60) as c:
        for start in range(0, keys, CHUNK):
            c.pipeline([b"SET", key_of(n), value] for n in range(start, min(keys, start + CHUNK)))


def kvd_memory(home: Path, keys: int, value_size: int) -> dict:
    node = Kvd(home, "everysec", name="kvd-memory").start()
    try:
        empty = rss_bytes(node.pid)
        t0 = time.monotonic()
        fill_kvd(node.port, keys, value_size)
        fill_s = time.monotonic() - t0
        info = node.info()
        out = {"keys": info["keys"], "rss_bytes": rss_bytes(node.pid), "empty_rss_bytes": empty,
               "fill_s": fill_s}
        node.stop()
        out.update(replay(node, keys))
        return out
    finally:
        node.stop()


def replay(node: Kvd, keys: int) -> dict:
    """Restart on the same data dir; time until it answers, and what it holds then."""
    t0 = time.monotonic()
    node.start()
    ready_s = time.monotonic() - t0
    info = node.info()
    if info["keys"] < keys:
        return {"replay": None, "replay_note": f"restart held {info['keys']} of {keys} keys: "
                "no durable log on this branch yet"}
    return {"replay": {"ready_s": ready_s, "replay_s": info.get("replay_s"),
                       "rss_bytes_after": rss_bytes(node.pid)}}


def redis_memory(home: Path, keys: int, value_size: int) -> dict:
    redis = Redis(home / "redis-memory").start()
    try:
        empty = rss_bytes(redis.pid)
        redis.cli("--pipe", input=fill_commands(keys, value_size))
        return {"keys": int(redis.cli("DBSIZE").strip()), "rss_bytes": rss_bytes(redis.pid),
                "empty_rss_bytes": empty}
    finally:
        redis.stop()
