"""/metrics: the node's counters in Prometheus's text format, built with prometheus_client.

A custom collector reads the node when Prometheus scrapes (INFO's map, MEMBERS, the doors'
counters, the loop's turn-time histogram): nothing is added to the request path but the
counters the node keeps anyway. Names follow Prometheus's conventions: base units (seconds,
bytes), `_total` on counters, labels only of small fixed sets (command, error code, door,
member status, peer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from kvd.doors.respinfo import rss_bytes
from kvd.state.node import Node

STATUSES = ("alive", "suspect", "dead", "left")


class TurnTimes(Protocol):
    """The loop's histogram of turn durations (kvd.loop.TurnTimes)."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float


class Collector:
    def __init__(self, node: Node, turns: Callable[[], TurnTimes | None]) -> None:
        self.node = node
        self.turns = turns

    def collect(self) -> Iterator[Metric]:
        node = self.node
        now = node.clock.time_ms()
        info = node.info(now)
        yield _gauge("kv_up", "1 while the node serves", 1)
        g = GaugeMetricFamily("kv_info", "The node's name and version", labels=["name", "version"])
        g.add_metric([str(info.get("name", "")), str(info.get("version", ""))], 1)
        yield g
        yield _gauge("kv_uptime_seconds", "Seconds since the node started", info.get("uptime_s", 0))
        yield _gauge("kv_keys", "Live keys", info.get("keys", 0))
        yield _gauge("kv_expiring_keys", "Live keys with an expiry", node.expiring(now))
        yield _gauge("kv_tombstones", "Deletions kept for peers", info.get("tombstones", 0))
        yield from self._commands(info)
        yield from self._clients(info)
        yield _gauge("kv_memory_rss_bytes", "Resident memory of the process", rss_bytes())
        yield _gauge("kv_log_bytes", "Size of the append-only log", info.get("log_size", 0))
        yield _counter("kv_log_fsyncs", "fsync calls on the log", info.get("log_fsyncs", 0))
        yield _counter("kv_log_compactions", "Log rewrites", info.get("log_compactions", 0))
        yield _counter("kv_log_errors", "Log writes or fsyncs that failed",
                       info.get("log_errors", 0))
        yield _gauge("kv_log_writable", "1 while the log takes writes",
                     1 if info.get("log_writable", True) else 0)
        yield _gauge("kv_users", "Users defined (0: an open node)", info.get("users", 0))
        yield _counter("kv_auth_successes", "Logins that succeeded",
                       info.get("auth_successes", 0))
        yield _counter("kv_auth_failures", "Logins checked and refused (wrong name, password "
                       "or token)", info.get("auth_failures", 0))
        yield _counter("kv_auth_throttled", "Logins refused unchecked: their host must wait "
                       "after failures", info.get("auth_throttled", 0))
        yield from self._cluster(info)
        yield from self._turn_times()

    def _commands(self, info: dict) -> Iterator[Metric]:
        counts = CounterMetricFamily("kv_commands", "Commands run, by command",
                                     labels=["command"])
        for name, n in sorted(self.node.command_counts.items()):
            counts.add_metric([name], n)
        yield counts
        errors = CounterMetricFamily("kv_command_errors", "Error replies, by error code",
                                     labels=["code"])
        for key, n in sorted(self.node.counters.items()):
            if key.startswith("error_"):
                errors.add_metric([key[6:]], n)
        yield errors

    def _clients(self, info: dict) -> Iterator[Metric]:
        g = GaugeMetricFamily("kv_connected_clients", "Open client connections, by door",
                              labels=["door"])
        for door, key in (("native", "connections_open"), ("resp", "resp_clients"),
                          ("http", "http_clients")):
            if key in info:
                g.add_metric([door], info[key])
        yield g
        tls = CounterMetricFamily("kv_tls_handshake_failures", "TLS handshakes that failed "
                                  "(bad bytes, a refused client certificate, too slow), by door",
                                  labels=["door"])
        for door in ("resp", "http"):
            if info.get(f"{door}_tls"):
                tls.add_metric([door], info[f"{door}_tls_handshake_failures"])
        yield tls

    def _cluster(self, info: dict) -> Iterator[Metric]:
        rows = self.node.members_source(self.node.clock.wall_ms()) \
            if self.node.members_source else []
        members = GaugeMetricFamily("kv_members", "Cluster members, by status",
                                    labels=["status"])
        for status in STATUSES:
            members.add_metric([status], sum(1 for r in rows if r.get("status") == status))
        yield members
        lag = GaugeMetricFamily("kv_replication_lag_seconds", "Age of our oldest write a peer "
                                "has not acknowledged", labels=["peer"])
        for r in rows:
            if not r.get("self"):
                lag.add_metric([str(r["name"])], r.get("lag_ms", 0) / 1000)
        yield lag
        # The cluster's own sum: INFO has other `dropped_` keys (the native door's replies)
        yield _counter("kv_gossip_dropped", "Peer messages dropped (from strangers, malformed, "
                       "of another cluster or version; requests a peer could not take)",
                       info.get("gossip_dropped", 0))
        for key, name, text in (("ae_rounds", "kv_antientropy_rounds", "Anti-entropy passes"),
                                ("ae_keys_pulled", "kv_antientropy_keys_pulled",
                                 "Keys anti-entropy pulled from peers"),
                                ("ae_keys_pushed", "kv_antientropy_keys_pushed",
                                 "Keys anti-entropy pushed to peers")):
            if key in info:
                yield _counter(name, text, info[key])
        if "max_clock_offset_ms" in info:
            yield _gauge("kv_max_clock_offset_seconds", "Largest clock offset to a live peer",
                         (info["max_clock_offset_ms"] or 0) / 1000)

    def _turn_times(self) -> Iterator[Metric]:
        turns = self.turns()
        if turns is None:
            return
        h = HistogramMetricFamily("kv_loop_turn_seconds", "Duration of the loop's turns")
        running, buckets = 0, []
        for bound, n in zip(turns.bounds, turns.counts, strict=False):
            running += n
            buckets.append((repr(bound), running))
        running += turns.counts[-1]
        buckets.append(("+Inf", running))
        h.add_metric([], buckets, turns.total)
        yield h


def render(collector: Collector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return generate_latest(registry)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)
