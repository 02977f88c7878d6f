"""The files driver: heartbeat scans and atomic writes on real folders.

The heartbeat record itself is parsed by model/heartbeat.py (tests/model/test_heartbeat.py).
"""

from __future__ import annotations

import doctest
import os
import stat
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from reconciler.drivers import files
from reconciler.drivers.files import (
    default_state_dir,
    scan_heartbeats,
    write_atomic,
)
from tests.model.test_heartbeat import beat


def test_doctests_pass() -> None:
    assert doctest.testmod(files, raise_on_error=False).failed == 0


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_scan_keeps_valid_skips_temp_and_reports_corrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "coder0-0.json", beat())
    write(tmp_path, "enhancer.json", beat(agent="enhancer", state="idle"))
    truncated = write(tmp_path, "coder1.json", beat(agent="coder1")[:30])
    misnamed = write(tmp_path, "coder2.json", beat(agent="coder3"))
    write(tmp_path, ".coder4.json.tmp", beat(agent="coder4")[:10])  # a writer mid-rename
    write(tmp_path, ".coder5.json", beat(agent="coder5"))
    write(tmp_path, "notes.txt", "not a heartbeat")
    scans: list[Path] = []
    real_scandir = os.scandir

    def counting_scandir(path: Path) -> Any:
        scans.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)

    beats, problems = scan_heartbeats(tmp_path)

    assert len(scans) == 1
    assert sorted(beats) == ["coder0-0", "enhancer"]
    assert beats["enhancer"].state == "idle"
    assert len(problems) == 2
    assert problems[0].startswith(f"{truncated}: invalid JSON (")
    assert "; the agent must write a temporary file and rename it" in problems[0]
    assert problems[1].startswith(f"{misnamed}: agent 'coder3' does not match the file name")
    assert "; an agent writes only <agent>.json" in problems[1]


def test_scan_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert scan_heartbeats(tmp_path / "nope") == ({}, [])


def test_scan_of_a_file_or_unreadable_entry_is_a_problem(tmp_path: Path) -> None:
    not_a_folder = write(tmp_path, "heartbeats", "")
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "a-dir.json").mkdir()
    (folder / "binary.json").write_bytes(b"\xff\xfe{")

    beats, problems = scan_heartbeats(not_a_folder)
    dir_beats, dir_problems = scan_heartbeats(folder)

    assert beats == {} and len(problems) == 1 and problems[0].startswith(f"{not_a_folder}: ")
    assert dir_beats == {}
    assert len(dir_problems) == 2
    assert dir_problems[0] == (
        f"{folder / 'a-dir.json'}: cannot read it (Is a directory); "
        "fix its permissions or remove it"
    )
    assert dir_problems[1].startswith(f"{folder / 'binary.json'}: not UTF-8 text; the agent")


def test_write_atomic_creates_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "status.yaml"

    write_atomic(target, "first\n")
    write_atomic(target, b"second\n", mode=0o600)

    assert target.read_bytes() == b"second\n"
    assert [p.name for p in target.parent.iterdir()] == ["status.yaml"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_write_atomic_failure_keeps_old_content_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "beat.json"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]

    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["beat.json"]


class StateDirCase(NamedTuple):
    test_id: str
    fleet_state_dir: str | None
    xdg_state_home: str | None
    expected: str


STATE_DIR_CASES = [
    StateDirCase("fleet-state-dir-wins", "/srv/fleet", "/x", "/srv/fleet"),
    StateDirCase("xdg-state-home", None, "/x", "/x/mosaic-fleet"),
    StateDirCase("empty-counts-as-unset", "", "", "{home}/.local/state/mosaic-fleet"),
    StateDirCase("home-default", None, None, "{home}/.local/state/mosaic-fleet"),
]


@pytest.mark.parametrize("case", STATE_DIR_CASES, ids=[c.test_id for c in STATE_DIR_CASES])
def test_default_state_dir(
    case: StateDirCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for key, value in (("FLEET_STATE_DIR", case.fleet_state_dir),
                       ("XDG_STATE_HOME", case.xdg_state_home)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)

    assert default_state_dir() == Path(case.expected.format(home=tmp_path))


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """A fresh heartbeat cache, and the heartbeat files read (not served from it) from here on."""
    monkeypatch.setattr(files, "_HEARTBEATS", files.StatCache())
    reads: list[Path] = []
    real = files._read_heartbeat

    def counting(path: Path) -> Any:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(files, "_read_heartbeat", counting)
    return reads


def test_an_unchanged_settled_heartbeat_is_not_read_again(
    tmp_path: Path, counted_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "SETTLED_NS", 0)  # every file counts as settled at once
    write(tmp_path, "coder0-0.json", beat())
    first, _ = scan_heartbeats(tmp_path)
    second, _ = scan_heartbeats(tmp_path)
    assert second == first and counted_reads == [tmp_path / "coder0-0.json"]


def test_a_heartbeat_renamed_over_with_the_same_size_is_read_again(
    tmp_path: Path, counted_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "SETTLED_NS", 0)
    path = write(tmp_path, "coder0-0.json", beat(state="working"))
    before = path.stat()
    assert scan_heartbeats(tmp_path)[0]["coder0-0"].state == "working"
    write_atomic(path, beat(state="waiting"))  # how agents write: a new file renamed over
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old modification time
    assert path.stat().st_size == before.st_size
    assert scan_heartbeats(tmp_path)[0]["coder0-0"].state == "waiting"
    assert len(counted_reads) == 2


def test_a_heartbeat_changed_within_the_settling_time_is_read_every_scan(tmp_path: Path, counted_reads: list[Path]) -> None:
    write(tmp_path, "coder0-0.json", beat())  # just written: a second write could keep its size and times
    scan_heartbeats(tmp_path)
    scan_heartbeats(tmp_path)
    assert len(counted_reads) == 2


def test_a_broken_heartbeat_is_read_again_and_its_fix_seen(
    tmp_path: Path, counted_reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "SETTLED_NS", 0)
    path = write(tmp_path, "coder0-0.json", beat()[:30])
    assert scan_heartbeats(tmp_path)[1] and scan_heartbeats(tmp_path)[1]
    write_atomic(path, beat())
    beats, problems = scan_heartbeats(tmp_path)
    assert "coder0-0" in beats and problems == [] and len(counted_reads) == 3
