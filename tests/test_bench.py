"""The bench runs on a tiny workload. Never a performance check: figures are not asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from array import array

import pytest

from kvd.bench.loadgen import Workload
from kvd.bench.runner import endpoints_of, percentile, split, summarise
from tests.procs import ROOT, env_for


def test_percentile_is_nearest_rank() -> None:
    values = array("q", range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([], 50) == 0.0


def test_split_spreads_requests_evenly() -> None:
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(7, 7)) == 7


def test_endpoints_pair_hosts_and_ports() -> None:
    assert endpoints_of(None, [1, 2]) == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]
    assert endpoints_of(["a", "b"], [5]) == ["tcp://a:5", "tcp://b:5"]


def test_summarise_merges_clients() -> None:
    w = Workload("set", 4, pipeline=2)
    parts = [(2, 0, 10.0, 11.0, array("q", [1000, 3000]).tobytes()),
             (2, 1, 10.5, 12.0, array("q", [2000, 4000]).tobytes())]
    r = summarise("set", parts, w, 2)
    assert (r.requests, r.errors, r.seconds, r.rps) == (4, 1, 2.0, 2.0)
    assert (r.p50_us, r.max_us) == (2.0, 4.0)


def test_kvd_bench_against_a_node(kvd, tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvd", "bench", "--port", str(kvd.port), "--clients", "2",
         "--pipeline", "8", "--requests", "400", "--keyspace", "50", "--ops", "set,get,mixed",
         "--json"],
        capture_output=True, env=env_for(tmp_path), timeout=120, check=True)
    doc = json.loads(out.stdout)
    assert [r["op"] for r in doc["results"]] == ["set", "get", "mixed"]
    assert all(r["requests"] == 400 and r["errors"] == 0 and r["rps"] > 0
               for r in doc["results"])


def test_kvd_bench_against_a_node_that_encrypts(kvd_factory, tmp_path) -> None:
    from kvd.config import new_secret_file

    key = new_secret_file(tmp_path / "secret").current.public.decode()
    node = kvd_factory("curve", ["--cluster-secret-file", str(tmp_path / "secret")],
                       server_key=key)
    argv = [sys.executable, "-m", "kvd", "bench", "--port", str(node.port), "--clients", "1",
            "--pipeline", "8", "--requests", "200", "--ops", "set", "--json"]
    out = subprocess.run([*argv, "--server-key", key], capture_output=True,
                         env=env_for(tmp_path), timeout=120, check=True)
    assert json.loads(out.stdout)["results"][0]["errors"] == 0
    bad = subprocess.run([*argv, "--server-key", "nope"], capture_output=True,
                         env=env_for(tmp_path), timeout=120, text=True)
    assert bad.returncode == 2 and "not a server key" in bad.stderr


def test_one_client_spreads_its_writes_over_every_endpoint(kvd, kvd_factory, tmp_path) -> None:
    """Two unconnected nodes, one client, non-batched pipelining: each node takes a share."""
    other = kvd_factory("n2")
    subprocess.run(
        [sys.executable, "-m", "kvd", "bench", "--port", str(kvd.port), "--port",
         str(other.port), "--clients", "1", "--pipeline", "4", "--no-batch", "--requests", "200",
         "--keyspace", "1000", "--ops", "set", "--json"],
        capture_output=True, env=env_for(tmp_path), timeout=120, check=True)
    sizes = []
    for node in (kvd, other):
        with node.client() as c:
            sizes.append(c.dbsize())
    assert sum(sizes) >= 150 and all(n >= 50 for n in sizes), sizes


def expected_distinct(keyspace: int, draws: int) -> float:
    """Distinct keys after `draws` uniform draws with replacement from `keyspace` keys."""
    return keyspace * (1 - (1 - 1 / keyspace) ** draws)


def test_batched_bench_draws_every_key_from_the_whole_keyspace(kvd, tmp_path) -> None:
    """One client, full batches of 256: the distinct keys written are what uniform draws give
    (it used to cycle 64 prepared batches, 16,384 keys, whatever the keyspace)."""
    keyspace = requests = 60_000
    subprocess.run(
        [sys.executable, "-m", "kvd", "bench", "--port", str(kvd.port), "--clients", "1",
         "--pipeline", "256", "--requests", str(requests), "--keyspace", str(keyspace),
         "--ops", "set", "--json"],
        capture_output=True, env=env_for(tmp_path), timeout=120, check=True)
    with kvd.client() as c:
        written = c.dbsize()
    expected = expected_distinct(keyspace, requests)  # about 37,927; sd about 76
    assert abs(written - expected) < 0.01 * expected, (written, round(expected))


@pytest.mark.parametrize("ops", ["set", "get", "mixed"])
@pytest.mark.parametrize("keyspace", [1_000, 300_000])  # prebuilt keys, and formatted per draw
def test_a_prepared_batch_gets_fresh_keys_from_the_whole_keyspace(ops: str, keyspace: int
                                                                  ) -> None:
    import msgpack

    from kvd.bench.loadgen import Commands, Prepared

    prepared = Prepared(Commands(Workload(ops, 0, keyspace=keyspace, seed=3)), 0, 256)
    seen: set[bytes] = set()
    frames = 40
    for _ in range(frames):
        version, kind, items = msgpack.unpackb(prepared.next_frame())
        assert (version, kind) == (1, 3) and [rid for rid, _ in items] == list(range(1, 257))
        for _, argv in items:
            n = int(argv[1].removeprefix(b"key:"))
            assert 0 <= n < keyspace and len(argv[1]) == 16
            assert argv[0] == (b"SET" if ops == "set" or (ops == "mixed" and n & 1) else b"GET")
            assert ops == "get" or argv[0] == b"GET" or argv[2] == b"v" * 100
            seen.add(argv[1])
    expected = expected_distinct(keyspace, frames * 256)
    assert abs(len(seen) - expected) < 0.05 * expected, (len(seen), round(expected))


def test_kvd_bench_plain_output_when_piped(kvd, tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvd", "bench", "--port", str(kvd.port), "--clients", "1",
         "--requests", "50", "--ops", "get", "--no-batch", "--pipeline", "4"],
        capture_output=True, env=env_for(tmp_path), timeout=120, check=True, text=True)
    assert "GET" in out.stdout and "\x1b[" not in out.stdout


def test_kvd_bench_unreachable_exits_3(tmp_path) -> None:
    from tests.procs import free_port

    out = subprocess.run(
        [sys.executable, "-m", "kvd", "bench", "--port", str(free_port()), "--requests", "5",
         "--clients", "1"],
        capture_output=True, env=env_for(tmp_path), timeout=120)
    assert out.returncode == 3


def test_suite_quick_run(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
                         capture_output=True, env=env_for(tmp_path), timeout=240, cwd=ROOT)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    targets = {r["target"] for r in doc["runs"]}
    assert {"raw", "raw-loop", "kvd-no", "kvd-everysec", "kvd-always", "kvd-curve"} <= targets
    assert all(r["errors"] == 0 for r in doc["runs"])
    assert "| target |" in (tmp_path / "latest.md").read_text()


def test_turn_sections_run(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.turns", "--requests", "40"],
                         capture_output=True, env=env_for(tmp_path), timeout=240, cwd=ROOT,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()
            if line.startswith("| sequential") or line.startswith("| pipelined")]
    assert [r[0].strip() for r in rows] == ["sequential SET", "sequential GET", "pipelined SET",
                                            "pipelined SET, 3-node cluster"]
    turns = [int(r[1].replace(",", "")) for r in rows]
    assert turns[0] == turns[1] == 41  # a turn per request and the opening PING; no fill
    assert float(rows[0][8]) > 0 and float(rows[1][8]) == 0  # only SET commits to the log
    assert float(rows[2][10]) == 0 < float(rows[3][10])  # only a cluster applies peers' writes


def test_replica_cost_runs_and_the_replica_takes_every_write(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.replicacost", "--rounds", "1",
                          "--batches", "3"], capture_output=True, env=env_for(tmp_path),
                         timeout=120, cwd=ROOT, text=True)
    assert out.returncode == 0, out.stderr[-2000:]  # it checks the replica's digest itself
    assert "3-node cluster in all" in out.stdout


def test_log_codec_bench_runs(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.logcodec", "--rounds", "1", "--keys",
                          "3000"], capture_output=True, env=env_for(tmp_path), timeout=120,
                         cwd=ROOT, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    heads = [line.split(",")[0].split(":")[0] for line in out.stdout.splitlines()]
    assert heads == ["encode"] * 3 + ["replay", "compaction of 3000 keys"]


def test_paired_run_times_each_server(kvd, kvd_factory) -> None:
    from kvd.bench.runner import run_paired

    other = kvd_factory("n2")
    w = Workload("mixed", 30, keyspace=10)
    results = run_paired([f"tcp://127.0.0.1:{kvd.port}", f"tcp://127.0.0.1:{other.port}"], w)
    assert [r.requests for r in results] == [30, 30]
    assert all(r.errors == 0 and r.p50_us > 0 for r in results)


@pytest.mark.parametrize("shape", ["cycle", "loop"])
def test_the_raw_ceilings_answer_like_a_store(tmp_path, shape: str) -> None:
    """Both ceilings are only worth comparing with if they do the work: a GET finds the SET."""
    from bench.targets import Raw, RawLoop
    from kvsh.client import Client

    server = (Raw if shape == "cycle" else RawLoop)(tmp_path).start()
    try:
        with Client("127.0.0.1", server.port, timeout=10) as c:
            c.set(b"k", b"v")
            assert c.get(b"k") == b"v" and c.get(b"nope") is None
            replies = c.pipeline([[b"SET", b"a", b"1"], [b"GET", b"a"], [b"GET", b"k"]])
            assert [r.value for r in replies] == ["OK", b"1", b"v"]
            replies = c.pipeline([[b"GET", b"a"]] * 50, batch=False)
            assert [r.value for r in replies] == [b"1"] * 50
    finally:
        server.stop()


def test_free_ports_never_repeat_nor_take_a_gossip_successor() -> None:
    from bench.targets import free_port

    ports = [free_port() for _ in range(150)]
    taken = set(ports) | {p + 1 for p in ports}
    assert len(taken) == 2 * len(ports), "a port or its gossip successor was handed out twice"


@pytest.mark.skipif(shutil.which("redis-benchmark") is None,
                    reason="redis-benchmark is not installed (apt-get install redis-tools)")
def test_the_tls_bench_runs(tmp_path) -> None:
    """bench.tls on a tiny load: two nodes, certificates, redis-benchmark --tls, the table."""
    pytest.importorskip("trustme", reason="bench.tls makes its certificates with trustme")
    out = subprocess.run([sys.executable, "-m", "bench.tls", "--reps", "1", "--requests", "2000"],
                         capture_output=True, text=True, env=env_for(tmp_path), timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "| a: -c 50 -P 16 | SET |" in out.stdout and "pipelined SET through TLS" in out.stdout


def test_the_resp_bench_runs_and_saves_its_table(tmp_path) -> None:
    """bench.resp on a tiny load: redis-benchmark against kvd's Redis door and redis-server."""
    from bench.targets import Redis

    if not Redis.available():
        pytest.skip("bench.resp needs redis-server and redis-benchmark (.ci/run installs them)")
    out = subprocess.run([sys.executable, "-m", "bench.resp", "--reps", "1", "--requests",
                          "2000", "--out", str(tmp_path)], capture_output=True, text=True,
                         env=env_for(tmp_path), timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "latest-resp.md").read_text()
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| a:")
            or line.startswith("| b:")]
    assert [(r[0].strip()[:1], r[1].strip()) for r in rows] == [
        ("a", "SET"), ("a", "GET"), ("b", "SET"), ("b", "GET")], text
    assert all(float(r[4].replace(",", "")) > 0 and float(r[5].replace(",", "")) > 0
               for r in rows), text


def test_the_coordination_bench_runs(tmp_path) -> None:
    """The kvd half always runs; pysyncobj (installed for the bench only, in no extra) is
    measured when present, its rows saying "not installed" otherwise."""
    from bench.coordination import syncobj_available

    out = subprocess.run([sys.executable, "-m", "bench.coordination", "--quick", "--out",
                          str(tmp_path)], capture_output=True, env=env_for(tmp_path),
                         timeout=120, cwd=ROOT, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "latest-coordination.md").read_text()
    assert "| sequential" in text and "| pipelined" in text and "| kvd 3 nodes |" in text
    assert ("not installed" in text) != syncobj_available()


def test_the_http_bench_runs(tmp_path) -> None:
    """bench.httpdoor on a tiny load: kvd's HTTP door and the h11 ceiling, side by side."""
    out = subprocess.run([sys.executable, "-m", "bench.httpdoor", "--reps", "1", "--requests",
                          "200", "--clients", "2"], capture_output=True, text=True,
                         env=env_for(tmp_path), timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| op | kvd req/s | h11 ceiling req/s |" in out.stdout, out.stdout
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()
            if line.startswith(("| GET |", "| PUT |"))]
    assert [r[0].strip() for r in rows] == ["GET", "PUT"], out.stdout
    assert all(float(cell.split()[0].replace(",", "")) > 0 for r in rows for cell in r[1:])
