"""A 3-node kvd cluster as one bench target: writes spread round-robin over its members.

Clustering is built on its own branch; until a node started with --join reports the others
in INFO `members`, the suite skips this target with a note instead of measuring three
unconnected nodes and calling them a cluster.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.targets import Kvd

FORM_S = 10.0


class Cluster:
    label = "cluster-3"

    def __init__(self, home: Path, fsync: str = "everysec", size: int = 3,
                 label: str | None = None, secret: Path | None = None) -> None:
        """`secret`: a cluster secret file; the nodes then encrypt (CURVE) everything."""
        self.home, self.fsync, self.size = home, fsync, size
        self.label = label or Cluster.label
        self.secret = secret
        self.nodes: list[Kvd] = []

    @property
    def server_key(self) -> str | None:
        return self.nodes[0].server_key if self.nodes else None

    @property
    def endpoints(self) -> list[str]:
        return [n.endpoint for n in self.nodes]

    @property
    def endpoint(self) -> str:
        return self.nodes[0].endpoint

    def start(self) -> Cluster:
        first = Kvd(self.home, self.fsync, name=f"{self.label}-1", secret=self.secret).start()
        self.nodes = [first]
        for i in range(2, self.size + 1):
            join = [f"127.0.0.1:{first.port}"]
            self.nodes.append(Kvd(self.home, self.fsync, name=f"{self.label}-{i}",
                                  join=join, secret=self.secret).start())
        return self

    def formed(self) -> bool:
        """True once every node sees all members; False after FORM_S."""
        end = time.monotonic() + FORM_S
        while time.monotonic() < end:
            if all(int(n.info().get("members", 1)) >= self.size for n in self.nodes):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
