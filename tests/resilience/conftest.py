"""Fixtures of the resilience tests, and those shared with tests/e2e (the CLI-run fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.engine.tick import TickInputs
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo
from tests.e2e.test_ps_and_agent_verbs import fleet, running

__all__ = ["Minimal", "fleet", "minimal", "running"]


class Minimal(NamedTuple):
    """examples/fleets/minimal on the test's private tmux socket, with an empty state dir."""

    repo: Path
    state: Path
    socket: SocketKey

    def inputs(self, command: str = "sleep 600") -> TickInputs:
        return TickInputs(repo=self.repo, host="demo", state_dir=self.state, command_override=command)


@pytest.fixture
def minimal(tmp_path: Path, tmux_socket: SocketKey) -> Minimal:
    assert tmux_socket.name
    return Minimal(example_repo(tmp_path, "minimal", tmux_socket.name), tmp_path / "state", tmux_socket)
