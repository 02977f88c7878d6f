"""Watch mode's tick wrapper: one bad tick never ends the loop, and says why in one line."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconciler.engine.loop import _safe_tick
from reconciler.errors import UserError


def test_a_users_mistake_or_a_busy_lock_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    def busy(_reason: str) -> int:
        raise UserError("/state/reconcile.lock is held by pid 7 on h since t; waited 300s")

    assert _safe_tick(busy, "interval") == 1
    said = capsys.readouterr().err
    assert said == "error: /state/reconcile.lock is held by pid 7 on h since t; waited 300s\n"


def test_a_bug_is_printed_with_its_traceback_and_the_loop_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(_reason: str) -> int:
        raise RuntimeError("a bug")

    assert _safe_tick(broken, "interval") == 1
    said = capsys.readouterr().err
    assert "Traceback (most recent call last)" in said and "RuntimeError: a bug" in said


def test_a_good_tick_returns_its_code() -> None:
    assert _safe_tick(lambda _reason: 2, "interval") == 2


def test_a_tick_that_waits_on_a_starting_worker_brings_the_next_one_forward(tmp_path: Path) -> None:
    """Interval an hour: the second tick comes `soon` after the first because it asked,
    and the third does not come at all (the second did not ask)."""
    from reconciler.engine.loop import LoopSettings, run_loop  # noqa: PLC0415

    stop = threading.Event()
    reasons: list[str] = []

    def tick(reason: str) -> int:
        reasons.append(reason)
        if len(reasons) == 2:
            threading.Timer(1.0, stop.set).start()  # long enough for a third tick, were it due
        return 0

    asked = iter([True, False, False])
    settings = LoopSettings(interval=3600, fetch_every=3600, watch_remote=False, soon=0.2)
    done = threading.Thread(target=run_loop, args=(tmp_path, tick, settings, stop), kwargs={"again_soon": lambda: next(asked)})
    done.start()
    done.join(30)
    stop.set()  # a loop that missed the early tick must not outlive the test
    assert not done.is_alive()
    assert reasons == ["interval", "interval"]
