"""kvd start / stop / status as a user runs them (detached), and start-up failures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import Kvd, env_for, free_port, wait_for


def kvd(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvd", *args], capture_output=True, text=True,
                          env=env_for(home), timeout=timeout)


def test_start_detached_status_and_stop(tmp_path: Path) -> None:
    port = str(free_port())
    started = kvd(tmp_path, "start", "--port", port)
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout
        assert len(started.stdout.strip().splitlines()) == 1
        status = kvd(tmp_path, "status", "--port", port, "--json")
        assert status.returncode == 0
        info = json.loads(status.stdout)
        assert info["status"] == "up" and info["name"] == f"127.0.0.1:{port}"
        # the data dir is under the user data dir (XDG_DATA_HOME here), one folder per node
        assert info["data_dir"].startswith(str(tmp_path / "data" / "kv" / "nodes"))
        again = kvd(tmp_path, "start", "--port", port)
        assert again.returncode != 0
        assert "held by another kvd" in again.stderr and len(again.stderr.splitlines()) == 1
    finally:
        stopped = kvd(tmp_path, "stop", "--port", port)
    assert stopped.returncode == 0, stopped.stderr
    down = kvd(tmp_path, "status", "--port", port)
    assert down.returncode == 3
    assert "cannot connect" in down.stderr


def test_port_in_use_is_one_clear_line(tmp_path: Path, kvd_factory) -> None:
    first = kvd_factory("first")
    second = kvd(tmp_path, "start", "--foreground", "--port", str(first.port),
                 "--data-dir", str(tmp_path / "other"))
    assert second.returncode != 0
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("kvd:")]
    assert len(lines) == 1 and "in use" in lines[0], second.stderr


@pytest.mark.parametrize("flag", ["--resp-port", "--http-port"])
def test_a_door_port_in_use_is_one_line_naming_its_flag(tmp_path: Path, kvd_factory,
                                                        flag: str) -> None:
    first = kvd_factory("first")
    taken = first.resp_port if flag == "--resp-port" else first.http_port
    second = kvd(tmp_path, "start", "--foreground", "--port", str(free_port()), flag,
                 str(taken), "--data-dir", str(tmp_path / "other"))
    assert second.returncode != 0
    lines = [ln for ln in second.stderr.splitlines() if ln.startswith("kvd:")]
    assert len(lines) == 1 and "in use" in lines[0] and flag in lines[0], second.stderr


def test_two_daemons_never_share_a_data_dir(tmp_path: Path, kvd_factory) -> None:
    first = kvd_factory("first")
    second = kvd(tmp_path, "start", "--foreground", "--port", str(free_port()),
                 "--data-dir", str(first.data_dir))
    assert second.returncode != 0
    assert "held by another kvd" in second.stderr


def test_sigterm_and_sigint_stop_gracefully_with_exit_0(kvd_factory) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        node: Kvd = kvd_factory(f"n{sig}")
        node.signal(sig)
        assert node.proc is not None
        assert node.proc.wait(20) == 0, node.stderr()
        assert "stopped" in node.stderr()


def test_config_file_is_read_and_flags_win(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    config = tmp_path / "config" / "kv" / "kvd.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'port = {port}\nname = "from-toml"\nfsync = "no"\n')
    proc = subprocess.Popen([sys.executable, "-m", "kvd", "start", "--foreground",
                             "--port", str(other), "--data-dir", str(tmp_path / "d")],
                            env=env_for(tmp_path), stderr=subprocess.PIPE)
    try:
        def info() -> dict | None:
            status = kvd(tmp_path, "status", "--port", str(other), "--json")
            return json.loads(status.stdout) if status.returncode == 0 else None

        got = wait_for(info, what="kvd with a config file to answer")
        assert got["name"] == "from-toml"  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    result = kvd(tmp_path, "start", "--foreground", "--config", str(bad))
    assert result.returncode != 0
    assert result.stderr.startswith("kvd: unknown key 'colour'")
