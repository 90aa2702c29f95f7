"""`kvd bench`: the load generator and its report. A client of kvd like any other: it speaks
the wire protocol from `shared` and imports nothing of the daemon.
"""
