"""A fleet without lanes does not load the lanes (core/lane_plan.py): a one-shot
`fleet reconcile` of it pays for none of their modules; a fleet with lanes loads them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo

#: What only fleets with lanes (or tasks) need: scaling, dispatch, lane memory, task reports.
LANE_MODULES = ("reconciler.core.lanes", "reconciler.core.dispatch", "reconciler.core.lane_memory",
                "reconciler.drivers.reports", "reconciler.model.task_report")

#: Two applying runs in a fresh interpreter (the first starts the agents, the second has
#: nothing to change), then which of LANE_MODULES were loaded.
PROBE = """
import json, sys
from pathlib import Path
from reconciler.engine.run import request_for, run
repo, host, state = sys.argv[1:4]
codes = [run(request_for(Path(repo), host, None, Path(state), use_git=False)).exit_code for _ in range(2)]
print(json.dumps([codes, [m for m in json.loads(sys.argv[4]) if m in sys.modules]]))
"""


def loaded(repo: Path, host: str, state: Path) -> tuple[list[int], list[str]]:
    import json  # noqa: PLC0415

    done = subprocess.run([sys.executable, "-c", PROBE, str(repo), host, str(state), json.dumps(LANE_MODULES)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    codes, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return codes, modules


def test_a_fleet_without_lanes_never_imports_the_lanes(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    assert loaded(repo, "demo", tmp_path / "state") == ([0, 0], [])


def test_a_fleet_with_lanes_imports_them(tmp_path: Path, tmux_socket: SocketKey) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "lanes", tmux_socket.name)
    codes, modules = loaded(repo, "shop-1", tmp_path / "state")
    assert codes == [0, 0]
    assert {"reconciler.core.lanes", "reconciler.core.lane_memory", "reconciler.drivers.reports"} <= set(modules)
