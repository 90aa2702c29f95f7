"""A real kvd compacts its log while a client keeps writing, and every key survives a restart."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.procs import wait_for

KEYS = 500


def test_compaction_under_concurrent_writes_keeps_every_key(kvd_factory, tmp_path: Path
                                                            ) -> None:
    config = tmp_path / "kvd.toml"
    config.write_text("compaction_min_size = 50000\ncompaction_ratio = 2.0\n")
    node = kvd_factory("n1", ["--fsync", "always", "--config", str(config)])
    expected: dict[bytes, bytes] = {}
    stop = threading.Event()

    def write() -> None:
        with node.client(timeout=10) as client:
            for r in range(100_000):  # bounded; stopped once two compactions are done
                if stop.is_set():
                    return
                batch = {b"k%d" % ((r * 50 + i) % KEYS): b"v%d-%d" % (i, r) for i in range(50)}
                replies = client.pipeline(["SET", k, v] for k, v in batch.items())
                assert not any(reply.is_error for reply in replies)
                expected.update(batch)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    with node.client() as client:
        wait_for(lambda: client.info()["log_compactions"] >= 2 or not writer.is_alive(),
                 deadline_s=60, what="two compactions while writing")
    stop.set()
    writer.join(20)
    assert not writer.is_alive() and len(expected) == KEYS
    with node.client() as client:
        info = client.info()
        assert info["log_compactions"] >= 2 and info["last_compaction_at"] > 0
        assert client.mget(*expected) == list(expected.values())
        digest = info["digest"]
    assert node.stop() == 0
    again = kvd_factory("n1", ["--config", str(config)])
    with again.client() as client:
        assert client.mget(*expected) == list(expected.values())
        assert client.info()["digest"] == digest
