"""Lane workers' git worktrees through the tick: made before a start, moved to the task's
branch before a brief, removed when the worker stops for good (drivers/git/lane_worktree.py).

Apply calls `make` for the starts of its group before any pane starts (a worktree that
cannot be made: that worker is not started, and says why) and `remove` after its stops
(the branches stay; a stop that is not a restart is the worker's end: lane retirement,
the budget queueing it, `fleet down`, its lane gone). Dispatch calls `task_branch` before
it types a brief, so the brief names a branch that is checked out in the worker's
worktree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.core.desired import DesiredAgent, DesiredFleet, Worktree
from reconciler.core.plan import Action, ActionKind
from reconciler.drivers.git import lane_worktree
from reconciler.drivers.git.plumbing import GIT_FAILURES
from reconciler.model.layout import StateLayout

#: The actions after which a worker's worktree goes (a restart keeps it).
ENDS = {ActionKind.STOP, ActionKind.QUEUE}


def of_tenant(desired: DesiredFleet, tenant: str) -> dict[str, Worktree]:
    """Each lane worker of `tenant` that has a worktree, by name."""
    found = desired.tenants.get(tenant)
    if found is None:
        return {}
    return {w.name: w.worktree for lane in found.lanes for w in lane.workers if w.worktree is not None}


def make(starts: Iterable[Action], trees: Mapping[str, Worktree]) -> dict[Action, str]:
    """Make the worktree of each start that needs one; returns the starts that cannot run, and why."""
    failed: dict[Action, str] = {}
    for action in starts:
        tree = trees.get(action.agent)
        if tree is None:
            continue
        try:
            lane_worktree.ensure_worktree(Path(tree.repo).expanduser(), Path(tree.path))
        except GIT_FAILURES as exc:
            failed[action] = f"not started: its worktree {tree.path} of {tree.repo} could not be made ({exc})"
    return failed


def remove(state_dir: Path, ended: Iterable[tuple[str, str]]) -> list[str]:
    """Remove the worktree of each (tenant, agent) that stopped for good; returns the notes
    (changes stashed, or a worktree that could not be removed)."""
    notes: list[str] = []
    layout = StateLayout(state_dir)
    for tenant, agent in ended:
        path = layout.worktree(tenant, agent)
        try:
            said = lane_worktree.remove_worktree(path, agent)
        except GIT_FAILURES as exc:
            notes.append(f"{tenant}/{agent}: its worktree {path} was not removed ({exc}); the next stop tries again")
            continue
        if said:
            notes.append(f"{tenant}/{agent}: {said}")
    return notes


def task_branch(agent: DesiredAgent, lane: str, task: str) -> str | None:
    """Check out the task's branch in the worker's worktree and return it (None: the worker
    has no worktree). Raises GitError (or OSError) when git refuses."""
    tree = agent.worktree
    if tree is None:
        return None
    branch = tree.task_branch(agent.name, task, lane)
    lane_worktree.start_task_branch(Path(tree.repo).expanduser(), Path(tree.path), branch, agent.name)
    return branch
