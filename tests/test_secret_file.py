"""The cluster secret file (kvd.config, `kvd secret`): written 0600 and never over a file, read
only while its owner alone may, and its secret never printed. In-process, no daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvd import cli
from kvd.config import ConfigError, load, new_secret_file, read_keyring
from shared.keyring import derive


def test_secret_new_writes_one_line_for_its_owner_only_and_never_overwrites(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "secret"
    assert cli.main(["secret", "new", str(path)]) == 0
    line = path.read_text()
    assert len(line) == 65 and line.endswith("\n") and int(line, 16) >= 0
    assert path.stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    public = derive(bytes.fromhex(line)).public.decode()
    assert public in printed and line.strip() not in printed
    assert cli.main(["secret", "new", str(path)]) == 1
    err = capsys.readouterr().err
    assert "never overwrites" in err and len(err.splitlines()) == 1
    assert path.read_text() == line  # untouched
    assert cli.main(["secret", "key", str(path)]) == 0
    assert capsys.readouterr().out.strip() == public


def test_the_first_line_is_the_current_secret(tmp_path: Path) -> None:
    old, new = new_secret_file(tmp_path / "old"), new_secret_file(tmp_path / "new")
    both = tmp_path / "both"
    both.write_text((tmp_path / "new").read_text() + "# the previous one, still accepted\n"
                    + (tmp_path / "old").read_text())
    both.chmod(0o600)
    ring = read_keyring(both)
    assert ring.current == new.current and ring.pairs[1] == old.current


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o666])
def test_a_file_others_may_read_or_write_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret"
    new_secret_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError) as err:
        read_keyring(path)
    assert f"mode {mode:04o}" in err.value.message and f"chmod 600 {path}" in err.value.message


def test_a_missing_or_malformed_file_is_one_line_without_the_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist — make one with: kvd secret new"):
        read_keyring(tmp_path / "nope")
    path = tmp_path / "secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    leaked = "ab" * 31 + "zz"
    os.write(fd, leaked.encode() + b"\n")
    os.close(fd)
    with pytest.raises(ConfigError) as err:
        read_keyring(path)
    assert "line 1 is not a secret" in err.value.message and leaked not in err.value.message
    os.truncate(path, 0)
    os.write(fd := os.open(path, os.O_WRONLY), b"\xff\xfe" * 40)
    os.close(fd)
    with pytest.raises(ConfigError, match="not text"):
        read_keyring(path)


def test_the_config_file_can_name_the_secret_file(tmp_path: Path) -> None:
    file = tmp_path / "kvd.toml"
    file.write_text('cluster_secret_file = "secret"\n')
    cfg = load(file, {"data_dir": tmp_path})
    assert cfg.cluster_secret_file == Path.cwd() / "secret"
    assert load(file, {"data_dir": tmp_path, "cluster_secret_file": tmp_path / "s"}
                ).cluster_secret_file == tmp_path / "s"  # the flag wins
