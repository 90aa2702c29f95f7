"""The cluster's tunables: timers, periods and chunk sizes, one frozen value per node."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvd.cluster.antientropy import STEP_ENTRIES
from kvd.cluster.membership import Timers


@dataclass(frozen=True)
class Settings:
    cluster: str = "kv"
    timers: Timers = field(default_factory=Timers)
    sync_every_ms: int = 2000  # anti-entropy period, while no writes flow
    sync_max_ms: int = 20_000  # ... and at the latest, whatever flows
    request_timeout_ms: int = 1500
    gap_grace_ms: int = 500  # how long a write may be in flight before we call it lost
    join_retry_ms: int = 500
    catchup_chunk: int = 2000
    gossip_chunk: int = 1000
    gc_every_ms: int = 200
    gc_buckets: int = 64  # buckets scanned per gc tick
    tombstone_max_age_ms: int = 7 * 24 * 3600 * 1000
    step_entries: int = STEP_ENTRIES
    max_clock_offset_ms: int = 500  # a peer's clock further off than this is logged
