"""A real kvd whose log cannot grow (a file-size limit stands in for a full disk): writes get
IO_ERROR and are not applied, reads go on, INFO says so, and a restart has exactly the
acknowledged writes."""

from __future__ import annotations

import shutil

import pytest

from shared.errors import ServerError
from tests.procs import Kvd

LIMIT = 64 * 1024  # bytes any file of the daemon may reach (RLIMIT_FSIZE)


class LimitedKvd(Kvd):
    def argv(self) -> list[str]:
        return ["prlimit", f"--fsize={LIMIT}", *super().argv()]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_a_log_that_cannot_grow_refuses_writes_and_keeps_serving_reads(kvd_factory, tmp_path
                                                                       ) -> None:
    node = LimitedKvd(tmp_path, "n1", ["--fsync", "always"]).start()
    acked: dict[bytes, bytes] = {}
    refused: list[bytes] = []
    try:
        with node.client() as client:
            for i in range(2000):  # 2000 x ~170 bytes is well past the limit
                key, value = b"k%d" % i, b"v" * 100 + b"%d" % i
                try:
                    client.set(key, value)
                    acked[key] = value
                except ServerError as exc:
                    assert exc.code == "IO_ERROR"
                    refused.append(key)
                    if len(refused) >= 3:
                        break
            assert acked and len(refused) == 3
            assert client.get(refused[0]) is None  # not applied in memory either
            # In a batch, exactly the writes fail; the reads around them are answered.
            first = next(iter(acked))
            replies = client.pipeline([["GET", first], ["SET", "late", "v" * 200], ["GET", first]])
            assert [r.value for r in replies[::2]] == [acked[first]] * 2
            assert replies[1].is_error and replies[1].value[0] == "IO_ERROR"
            refused.append(b"late")
            assert client.get(next(iter(acked))) == acked[next(iter(acked))]  # reads go on
            info = client.info()
            assert info["log_errors"] >= 3 and "failed" in info["log_error"]
    finally:
        node.stop()
    assert "the write was refused" in node.stderr()
    again = kvd_factory("n1")  # same data dir, no limit
    with again.client() as client:
        assert client.mget(*acked) == list(acked.values())
        assert client.mget(*refused) == [None] * len(refused)
        assert client.dbsize() == len(acked)
