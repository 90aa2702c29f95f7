"""INFO for the Redis door: the node's INFO map as Redis's sectioned text.

Tools parse these lines (redis-cli, exporters, redis-benchmark's CONFIG look-ups read
`redis_version`), so the names and shapes are Redis's: `# Section` headers, `key:value` lines,
CRLF line ends, `db0:keys=N,expires=M,avg_ttl=0`. kv's own fields follow in `# Cluster`.
"""

from __future__ import annotations

import os
import resource

REDIS_VERSION = "7.0.15"  # the Redis whose replies this door follows (Debian's redis-server)

SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "keyspace",
            "cluster")


def info_text(info: dict, clients: int, expires: int, sections: list[bytes]) -> bytes:
    wanted = {s.decode("utf-8", "replace").lower() for s in sections}
    if not wanted or wanted & {"all", "everything", "default"}:
        wanted = set(SECTIONS)
    blocks = [(name, builder(info, clients, expires)) for name, builder in _BUILDERS.items()
              if name in wanted]
    text = "\r\n".join(f"# {name.capitalize()}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in rows)
                       for name, rows in blocks)
    return text.encode()


def _server(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    return [("redis_version", REDIS_VERSION), ("kv_version", info.get("version", "")),
            ("redis_mode", "standalone"), ("os", os.uname().sysname),
            ("process_id", info.get("pid", os.getpid())), ("tcp_port", info.get("resp_port", 0)),
            ("uptime_in_seconds", info.get("uptime_s", 0)),
            ("uptime_in_days", info.get("uptime_s", 0) // 86400),
            ("executable", "kvd"), ("kv_name", info.get("name", ""))]


def _clients(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    return [("connected_clients", clients), ("maxclients", info.get("resp_maxclients", 0)),
            ("blocked_clients", 0)]


def _memory(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    used = rss_bytes() or rss
    return [("used_memory", used), ("used_memory_human", _human(used)),
            ("used_memory_rss", used), ("used_memory_peak", rss),
            ("used_memory_peak_human", _human(rss)), ("maxmemory", 0),
            ("mem_allocator", "pymalloc")]


def _persistence(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    writable = info.get("log_writable", True)
    return [("loading", 0), ("rdb_changes_since_last_save", 0),
            ("aof_enabled", 0 if info.get("fsync") == "off" else 1),
            ("aof_last_write_status", "ok" if writable else "err"),
            ("kv_fsync", info.get("fsync", "")), ("kv_log_bytes", info.get("log_bytes", 0))]


def _stats(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    return [("total_connections_received", info.get("resp_connections_received", 0)),
            ("total_commands_processed", info.get("commands_processed", 0)),
            ("rejected_connections", info.get("resp_rejected_connections", 0)),
            ("expired_keys", 0), ("keyspace_hits", 0), ("keyspace_misses", 0),
            ("total_error_replies", info.get("errors", 0)),
            ("kv_tls_handshake_failures", info.get("resp_tls_handshake_failures", 0))]


def _replication(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    # kv has no masters and replicas: every node takes writes (see # Cluster).
    return [("role", "master"), ("connected_slaves", 0)]


def _keyspace(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    keys = info.get("keys", 0)
    return [("db0", f"keys={keys},expires={expires},avg_ttl=0")] if keys else []


def _cluster(info: dict, clients: int, expires: int) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("cluster_enabled", 0)]
    for key in ("name", "cluster", "members", "digest", "epoch", "max_clock_offset_ms"):
        if key in info:
            rows.append((f"kv_{key}", info[key]))
    return rows


_BUILDERS = {"server": _server, "clients": _clients, "memory": _memory,
             "persistence": _persistence, "stats": _stats, "replication": _replication,
             "keyspace": _keyspace, "cluster": _cluster}


def rss_bytes() -> int:
    """This process's resident memory now (Linux's /proc; 0 where it is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _human(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024:
            return f"{n:.2f}{unit}" if unit != "B" else f"{n}B"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.2f}T"
