"""The log: the append-only record format, the writer and its fsync policies, recovery at
start-up and compaction.

Owns every byte kvd writes to its data dir's log files. Takes the node's applied changes and
writes them; at start-up replays them into the node. Imports kvd.state and `shared` only.
"""
