"""kvsh against a real kvd: one-shot, pipe mode, JSON, raw, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.procs import Kvd, env_for, free_port, run_kvsh


def sh(kvd: Kvd, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return run_kvsh(kvd.home, kvd.port, *args, input=input)


# (line, expected stdout or None to skip, exit code); each case builds on the ones before it
SESSION = [
        ("PING", b"PONG\n", 0),
        ("PING hi", b"hi\n", 0),
        ('SET greeting "hello world"', b"OK\n", 0),
        ("GET greeting", b"hello world\n", 0),
        ("GET missing", b"(nil)\n", 1),
        ("TTL missing", b"-2\n", 1),
        ("TTL greeting", b"-1\n", 0),
        ("SET tmp v EX 100", b"OK\n", 0),
        ("EXPIRE greeting 50", b"1\n", 0),
        ("EXPIRE nothing 50", b"0\n", 0),
        ("SET greeting x NX", b"(nil)\n", 0),
        ("MSET a 1 b 2", b"OK\n", 0),
        ("MGET a missing b", b"1\n(nil)\n2\n", 0),
        ("EXISTS a b missing", b"2\n", 0),
        ("KEYS [ab]", None, 0),
        ("DBSIZE", b"4\n", 0),
        ("DEL a b missing", b"2\n", 0),
        ("SCAN 0 MATCH tmp COUNT 10", b"0\ntmp\n", 0),
        ("HELP get", b"GET key\nGet the value of a key\n", 0),
        ("NOSUCH x", None, 2),
        ("GET", None, 2),
        ("EXPIRE k soon", None, 2),
        ("SET k 'unclosed", None, 2),
]


def test_every_command_one_shot(kvd: Kvd) -> None:
    for line, out, code in SESSION:
        result = sh(kvd, "-c", line)
        assert result.returncode == code, (line, result.stdout, result.stderr)
        if out is not None:
            assert result.stdout == out, line
        if code == 2:
            assert result.stdout.startswith(b"(error) ")
            assert len(result.stdout.splitlines()) == 1


def test_the_same_session_through_pipe_mode(kvd: Kvd) -> None:
    script = "".join(line + "\n" for line, _, _ in SESSION).encode()
    result = sh(kvd, input=script)
    assert result.returncode == max(code for _, _, code in SESSION)
    got = result.stdout
    for _, out, _ in SESSION:  # every expected block appears, in order
        if out is not None:
            index = got.find(out)
            assert index >= 0, (out, got)
            got = got[index + len(out):]


def test_info_and_members_in_plain_and_json(kvd: Kvd) -> None:
    info = json.loads(sh(kvd, "--json", "-c", "INFO").stdout)
    assert {"name", "version", "uptime_s", "keys", "digest", "members", "fsync"} <= set(info)
    plain = sh(kvd, "-c", "INFO").stdout.decode()
    assert f"digest: {info['digest']}" in plain
    members = json.loads(sh(kvd, "--json", "-c", "MEMBERS").stdout)
    assert members[0]["name"] == kvd.name and members[0]["status"] == "alive"


def test_json_output_types(kvd: Kvd) -> None:
    sh(kvd, "-c", "SET j 1")
    lines = sh(kvd, "--json", input=b"GET j\nGET nope\nEXISTS j\nMGET j nope\nNOPE\n").stdout
    docs = [json.loads(ln) for ln in lines.splitlines()]
    assert docs[:4] == ["1", None, 1, ["1", None]]
    assert docs[4]["error"]["code"] == "UNKNOWN_COMMAND"


def test_raw_prints_values_only(kvd: Kvd) -> None:
    sh(kvd, "-c", "SET r 'two words'")
    assert sh(kvd, "--raw", "-c", "MGET r nope").stdout == b"two words\n\n"


def test_binary_values_round_trip_through_raw(kvd: Kvd) -> None:
    value = bytes(range(1, 256)).replace(b"\n", b"")
    with kvd.client() as c:
        c.set("bin", value)
    assert sh(kvd, "--raw", "-c", "GET bin").stdout == value + b"\n"


def test_pipe_mode_runs_every_line_and_exits_with_the_highest_code(kvd: Kvd) -> None:
    script = b"SET p 1\nGET p\n\n# a comment\nGET nope\nBUMP p\nGET p\n"
    result = sh(kvd, input=script)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[:3] == [b"OK", b"1", b"(nil)"]
    assert lines[3].startswith(b"(error) UNKNOWN_COMMAND")
    assert lines[4] == b"1"


def test_pipe_mode_converses_line_by_line(kvd: Kvd) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "kvsh", "--port", str(kvd.port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env_for(kvd.home))
    assert proc.stdin and proc.stdout
    try:
        for i in range(3):
            proc.stdin.write(b"SET c %d\nGET c\n" % i)
            proc.stdin.flush()
            assert proc.stdout.readline() == b"OK\n"  # arrives before stdin is closed
            assert proc.stdout.readline() == b"%d\n" % i
        proc.stdin.close()
        assert proc.wait(20) == 0
    finally:
        proc.kill()


def test_unreachable_server_exits_3_with_one_line(tmp_path) -> None:
    result = run_kvsh(tmp_path, free_port(), "-c", "GET k", timeout=30)
    assert result.returncode == 3
    assert b"cannot connect" in result.stdout + result.stderr
    piped = run_kvsh(tmp_path, free_port(), input=b"GET a\nGET b\n", timeout=30)
    assert piped.returncode == 3 and len(piped.stdout.splitlines()) == 2


def test_a_hung_server_times_out_with_exit_3(kvd: Kvd) -> None:
    import signal

    kvd.signal(signal.SIGSTOP)
    try:
        result = sh(kvd, "--timeout", "0.5", "-c", "GET k")
    finally:
        kvd.signal(signal.SIGCONT)
    assert result.returncode == 3
    assert b"within 0.5s" in result.stdout + result.stderr


def test_watch_one_shot_streams_until_interrupted(kvd: Kvd) -> None:
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "kvsh", "--port", str(kvd.port), "--json",
                             "-c", "WATCH user:"], stdout=subprocess.PIPE,
                            env=env_for(kvd.home),
                            # A suite run as a background job (`pytest &`) has SIGINT ignored,
                            # and children inherit that: give kvsh a terminal's default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout
    try:
        ack = json.loads(proc.stdout.readline())
        assert ack["watching"] == "user:"
        with kvd.client() as c:
            c.set("user:7", "zoe")
            c.set("elsewhere", "x")
            c.delete("user:7")
        first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
        assert (first["key"], first["value"]) == ("user:7", "zoe")
        assert (second["key"], second["deleted"]) == ("user:7", True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
