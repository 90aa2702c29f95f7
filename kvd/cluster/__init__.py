"""The cluster: membership (SWIM-style), replication streams, catch-up and anti-entropy repair,
the peer messages' bodies, and the peer sockets.

Everything but kvd.cluster.peers and kvd.cluster.links (which CURVE keys the peer sockets use)
is sans-IO: it takes a peer message (or a tick) and the time and returns what to send.
kvd.cluster.peers moves those bytes over ZeroMQ and is driven by the daemon's loop. Imports
kvd.state and `shared` only.
"""
