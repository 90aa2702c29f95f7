"""kvd: the kv daemon.

One subpackage per concern; imports point one way, down this list (tests/test_layout.py holds
the code to it, cycles included):

- process life: kvd.cli, kvd.config, kvd.daemon, kvd.usercli (`kvd user`), kvd.raftcli
  (`kvd raft`)
- the loop: kvd.loop — polls every socket, runs a turn through the node, commits the turn's
  writes, then replies — and kvd.consensus, which drives the Raft group from it
- kvd.doors (protocol adapters), kvd.cluster (gossip, membership, repair, peer sockets),
  kvd.raft (consensus: the Raft core and its storage, the coordination namespace),
  kvd.log (durability), kvd.bench (`kvd bench`: a client like any other) — none imports
  another
- kvd.state: the state machine (node, store, clock, command handlers, watch hub), no I/O
- shared: the command table, the codec, the errors, the client, the CURVE keyring
"""

__version__ = "0.1.0"
