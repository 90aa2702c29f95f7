"""What a node keeps in its data dir for the cluster: its members and its last epoch."""

from __future__ import annotations

from pathlib import Path

from kvd.cluster.peers import load_members, next_epoch, save_members


def test_the_epoch_grows_across_runs_even_if_the_clock_steps_back(tmp_path: Path) -> None:
    assert next_epoch(tmp_path, 5000) == 5000
    assert next_epoch(tmp_path, 4000) == 5001  # the clock went back: still a newer epoch
    assert next_epoch(tmp_path, 9000) == 9000


def test_members_round_trip_and_a_damaged_file_means_none(tmp_path: Path) -> None:
    members = [["a", "h:1", "h:2", 7, "alive"], ["b", "h:3", "h:4", 8, "left"]]
    save_members(tmp_path, members)
    assert load_members(tmp_path) == members
    (tmp_path / "members.json").write_text("{not json")
    assert load_members(tmp_path) == []
    (tmp_path / "members.json").write_text('[["ok", "h:1", "h:2"], [1, 2, 3], "x"]')
    assert load_members(tmp_path) == [["ok", "h:1", "h:2"]]
