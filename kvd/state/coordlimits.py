"""What the coordination namespace holds at most (kvd.raft.coord enforces it; the command
hand-off, kvd.state.coordcmds, refuses an oversize argument before it costs a log entry).

Constants, not settings: every node must reject the same writes (the state machine is
deterministic), and a snapshot of a full namespace must fit in one Raft message on every node
(the native door, which takes the peers' Raft messages, accepts frames of at least MIN_FRAME).
"""

MAX_KEY = 4096  # a key, lock or election name
MAX_VALUE = 512 * 1024  # a value or a candidate's value (Consul's KV limit)
QUOTA = 8 * 1024 * 1024  # keys + values + names + candidates' values, in bytes
MAX_LEASES = 100_000
MIN_FRAME = 16 * 1024 * 1024  # a full namespace's snapshot, with room for its framing
