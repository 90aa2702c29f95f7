"""The state machine: the node, its store, its hybrid logical clock, the command handlers and
the WATCH hub.

No I/O and no clock of its own: requests and the time go in, replies and the applied changes
come out, so everything here is deterministic and tested with a fake clock. Imports only
`shared` and the standard library.
"""
