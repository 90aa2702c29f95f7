"""Consensus: the Raft core (sans-IO, in the shape of etcd's raft library), its storage, and
the coordination state machine it replicates (kvd.raft.coord), with what a node keeps around
it: its clients' requests until answered (kvd.raft.requests), OBSERVE's waiters
(kvd.raft.observers) and operators' removals (kvd.raft.removals).

Owns leader election, log replication, commitment, membership (one server at a time), leader
transfer, ReadIndex reads, snapshots, and the durable format of a node's Raft state. The core
(`kvd.raft.core.Raft`) does no I/O and reads no clock: it takes ticks, messages and proposals,
and hands back, in a `Ready`, what the caller must persist, send and apply, in that order. Its
randomness (election timeouts) comes from an injected `random.Random`, so a seed replays a run.

Imports kvd.state and `shared` only (a sibling of kvd.cluster, kvd.log, kvd.doors: it imports
none of them, and the loop drives it).
"""
