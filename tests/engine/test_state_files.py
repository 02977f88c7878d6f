"""The reconciler's own records in the state directory (engine/state.py): restart
history is rendered again only when its records change, and the file on disk is still
compared on every write, so an edit made between two ticks is put back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from reconciler.engine.state import read_history, render_history, write_history
from reconciler.model.history import RestartRecord
from reconciler.model.layout import StateLayout

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_history_is_written_when_it_changes_and_put_back_when_edited(tmp_path: Path) -> None:
    path = StateLayout(tmp_path).restarts("demo")
    first = {"coder": RestartRecord(1, AT, "dead")}
    write_history(tmp_path, "demo", first)
    assert path.read_text() == render_history(first)

    path.write_text("{}\n")  # edited between two ticks
    write_history(tmp_path, "demo", dict(first))
    assert path.read_text() == render_history(first)

    second = {"coder": RestartRecord(2, AT, "stale heartbeat")}
    write_history(tmp_path, "demo", second)
    assert read_history(tmp_path, ["demo"]) == ({("demo", "coder"): second["coder"]}, [])

    write_history(tmp_path, "demo", {})
    assert read_history(tmp_path, ["demo"]) == ({}, [])
