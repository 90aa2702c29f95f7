"""Config keys that only the file sets (kvd.config): read, checked, refused with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvd.config import Config, ConfigError, load


def test_max_clock_offset_defaults_to_half_a_second_and_is_read_from_the_file(
        tmp_path: Path) -> None:
    assert Config().max_clock_offset_ms == 500
    file = tmp_path / "kvd.toml"
    file.write_text("max_clock_offset_ms = 50\n")
    assert load(file, {"data_dir": tmp_path}).max_clock_offset_ms == 50


def test_a_non_positive_clock_bound_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "kvd.toml"
    file.write_text("max_clock_offset_ms = 0\n")
    with pytest.raises(ConfigError, match="max_clock_offset_ms"):
        load(file, {"data_dir": tmp_path})
