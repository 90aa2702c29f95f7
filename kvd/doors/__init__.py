"""The doors: protocol adapters the loop drives. Each turns a client's bytes into the node's
requests and the node's replies back into bytes; none touches the store itself, and none
replies before the loop has committed the turn's writes.

Today: kvd.doors.native (kv's own protocol over ZeroMQ). Imports kvd.state and `shared` only.
"""
