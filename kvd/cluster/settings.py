"""The cluster's tunables: timers, periods and chunk sizes, one frozen value per node."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvd.cluster.antientropy import STEP_ENTRIES
from kvd.cluster.membership import Timers
from kvd.cluster.peerwire import ENVELOPE


@dataclass(frozen=True)
class Settings:
    cluster: str = "kv"
    timers: Timers = field(default_factory=Timers)
    sync_every_ms: int = 2000  # anti-entropy period, while no writes flow
    sync_max_ms: int = 20_000  # ... and at the latest, whatever flows
    request_timeout_ms: int = 1500
    gap_grace_ms: int = 500  # how long a write may be in flight before we call it lost
    join_retry_ms: int = 500
    join_warn_ms: int = 5000  # no WELCOME after this long: say why it may be (once)
    catchup_chunk: int = 2000
    gossip_chunk: int = 1000
    # The most key, value and origin bytes (plus ENTRY_OVERHEAD each) that one peer message
    # carries, unless a single entry is bigger: then it travels alone. Why this bound: the
    # smallest frame limit a peer applies is its client door's (max_value + 1 MiB; peer
    # requests arrive there), then its SUB and DEALER sockets' (`peer_max_message`, at least
    # that much). A message of several entries is at most chunk_bytes + ENVELOPE, under 1 MiB;
    # one entry alone is at most max_value + 64 KiB of key + ENVELOPE, also under max_value +
    # 1 MiB. Both fit, whatever max_value is, as long as every node has the same max_value.
    # A frame over the limit is not only lost: ZeroMQ drops the connection with it.
    chunk_bytes: int = 1024 * 1024 - 2 * ENVELOPE
    gc_every_ms: int = 200
    gc_buckets: int = 64  # buckets scanned per gc tick
    tombstone_max_age_ms: int = 7 * 24 * 3600 * 1000
    step_entries: int = STEP_ENTRIES
    max_clock_offset_ms: int = 500  # a peer's clock further off than this is logged
