"""Typing the briefs the tick's dispatch planned (core/dispatch.py), after apply.

By the time this runs, apply has written the lane memory with each assignment and its
message id (engine/apply.py), so the assignment is recorded before its brief is typed.
Each brief is written to `<tenant>/briefs/<task>.md` and the worker is told in one line
(typed through `fleet agent send`'s path, audited) to read it and how to report back.
Once typed, the lane memory records when (`sent_at`). Nothing here waits for the ack:
the next tick reads it from the worker's heartbeat, and a brief not acked is typed again
with back-off (core/dispatch.py). A failed send is a problem line, never a failed run;
its brief is typed again on the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from reconciler.core.dispatch import Dispatch, typed
from reconciler.core.render import render_brief
from reconciler.drivers.files import write_atomic
from reconciler.drivers.git.plumbing import GIT_FAILURES
from reconciler.engine import agent_verbs, worktrees
from reconciler.engine.state import write_lane_memory
from reconciler.engine.tick import Tick
from reconciler.errors import UserError
from reconciler.model.layout import StateLayout

#: A brief that cannot be typed: refused by the send path, or its worktree's branch by git (or the OS).
_FAILURES: tuple[type[Exception], ...] = (UserError, *GIT_FAILURES)


def brief_line(task: str, title: str, path: str, branch: str | None = None) -> str:
    """The one line typed to the worker (a newline would submit half of it).

    >>> brief_line("T7", "Paginate", "/s/shop/briefs/T7.md")
    'Task T7 (Paginate) is yours: read your brief in /s/shop/briefs/T7.md; when you stop, run `fleet task done T7 --note TEXT` or `fleet task blocked T7 --note WHY`.'
    >>> brief_line("T7", "Paginate", "/b/T7.md", "fleet/coder0-0/T7")[:90]
    'Task T7 (Paginate) is yours, on branch fleet/coder0-0/T7: read your brief in /b/T7.md; whe'
    """
    on = f", on branch {branch}" if branch else ""
    return (f"Task {task} ({title}) is yours{on}: read your brief in {path}; when you stop, run "
            f"`fleet task done {task} --note TEXT` or `fleet task blocked {task} --note WHY`.")


def deliver(tick: Tick, dispatches: Iterable[Dispatch]) -> list[str]:
    """Write each brief, type its line, and record in the lane memory that it was typed
    (after each, so a crash loses the least); returns problem lines (the next tick retries)."""
    problems: list[str] = []
    state = StateLayout(tick.inputs.state_dir)
    memory = {tenant: lanes.memory for tenant, lanes in tick.lanes.tenants.items()}
    for d in dispatches:
        spec = tick.repo.tenants.get(d.tenant)
        tenant = tick.desired.tenants.get(d.tenant)
        agent = tenant.on_host(tick.desired.host).get(d.agent) if tenant else None
        found = [(m, t) for m in (spec.tasks.missions if spec and spec.tasks else []) for t in m.tasks if t.id == d.task]
        if agent is None or not found:
            problems.append(f"{d.tenant}/{d.agent}: brief of task {d.task} not typed: the worker or the task is gone")
            continue
        mission, task = found[0]
        path = state.brief(d.tenant, d.task)
        try:
            branch = worktrees.task_branch(agent, d.lane, d.task)  # before the brief that names it
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            text = render_brief(d.tenant, d.agent, d.lane, mission, task, branch=branch,
                                worktree=agent.worktree.path if agent.worktree else None)
            write_atomic(path, text, mode=0o600)
            sent = agent_verbs.send(agent, brief_line(task.id, task.title, str(path), branch),
                                    agent_verbs.SendOptions(state_dir=tick.inputs.state_dir), msg_id=d.message)
        except _FAILURES as exc:
            problems.append(f"{d.tenant}/{d.agent}: brief {d.message} of task {d.task} not typed ({exc}); "
                            "the next run types it again")
            continue
        if sent.status == agent_verbs.SendStatus.BUSY:  # mid-turn, or an earlier line not yet taken: not typed
            problems.append(f"{d.tenant}/{d.agent}: brief {d.message} of task {d.task} not typed ({sent.detail}); "
                            "the next run types it again")
            continue
        memory[d.tenant] = typed(memory[d.tenant], {d.task: d.message}, datetime.now(UTC))
        try:
            write_lane_memory(tick.inputs.state_dir, d.tenant, memory[d.tenant])
        except OSError as exc:
            problems.append(f"could not record that brief {d.message} was typed ({exc}); the next run types it again")
    return problems
