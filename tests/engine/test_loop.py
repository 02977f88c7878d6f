"""Watch mode's tick wrapper: one bad tick never ends the loop, and says why in one line."""

from __future__ import annotations

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
