"""The kv Python client's public import path: `from kvsh.client import connect`, and the
errors it raises (`ServerError`, `Unreachable`, `Timeout`, all `KvError`s).

The client itself lives in `shared.client`, because the daemon uses it too (`kvd status`,
`kvd stop`) and kvd must not import the shell. Users import it from here: this path has been
the documented one since the client existed, and it stays while things move behind it.
"""

from shared.client import BATCH_BYTES, Client, connect, value_of
from shared.errors import KvError, ServerError, Timeout, Unreachable

__all__ = ["BATCH_BYTES", "Client", "KvError", "ServerError", "Timeout", "Unreachable",
           "connect", "value_of"]
