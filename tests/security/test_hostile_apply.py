"""Accepted hostile values through a real `fleet reconcile`: real tmux, and real systemd --user.

The process half of issue 6's "validated and quoted" test. One agent per hostile value
carries it everywhere the spec lets a value reach a process, wherever the validator
accepts it: a literal argument of its runtime's command template, an `env:` value, its
workdir, the path and the contents of an `env_from:` file, plus its alias and a task
title (text only). Each agent's program is Python writing down the argv, environment and
folder it got. A second agent per value runs the value itself as its command template.
Then every value must have arrived verbatim, as one argument, one environment value,
one folder and one tmux mark, and no payload (`$(touch …)`, `; touch …`, `#(…)`) may
have run. The `systemd` variant starts the same agents as core agents under their units.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from reconciler.core.render import markdown_cell, parse_status
from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from reconciler.spec.models import Agent, EnvFrom, Runtime, Task
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import retry_until
from tests.security.hostile import V1, Hostile, hostile_values, write_repo

pytestmark = pytest.mark.tmux

HOST = "edge.host-1"
#: Valid, and still made of what a name can hold: `.`, `:`, `/`, `@`, `-`.
MODEL = "m-1.5:x/y@z"
#: One line, for reading: a unit file carries a newline inside an argument too (as \x0a).
DUMP = (
    "import json, os, sys; "
    "env = {k: os.environ.get(k) for k in ('V', 'S', 'FLEET_AGENT', 'FLEET_MODEL', 'FLEET_HOST')}; "
    "out = os.path.join(sys.argv[1], env['FLEET_AGENT']); "
    "open(out + '.tmp', 'w').write(json.dumps({'argv': sys.argv[2:], 'cwd': os.getcwd(), 'env': env})); "
    "os.rename(out + '.tmp', out + '.json')"
)


def accepts(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def agent_accepts(key: str, value: object) -> bool:
    return accepts(Agent, {"name": "a", "role": "worker", key: value})


def template(*words: str) -> str:
    """A command template whose every word is exactly `words`: shell-quoted, braces doubled."""
    return " ".join(shlex.quote(w).replace("{", "{{").replace("}", "}}") for w in words)


def nested(base: Path, value: str) -> Path | None:
    """`base/value` as a path the filesystem can hold (value may add folders, even `..`)."""
    if "\x00" in value or not value.strip("/.") or any(len(p.encode()) > 255 for p in value.split("/")):
        return None
    return Path(f"{base}/{value}")


class Plan:
    """What each hostile value gets, only where the validator accepts it."""

    def __init__(self, tmp: Path, cases: list[Hostile], lifecycle: str) -> None:
        self.out, self.tmp = tmp / "out", tmp
        self.out.mkdir()
        self.agents: list[dict[str, Any]] = [{"name": "orchestrator", "role": "orchestrator", "runtime": "base"},
                                             {"name": "enhancer", "role": "enhancer", "runtime": "base"}]
        self.runtimes: dict[str, dict[str, Any]] = {"base": {"command": "sleep 600", "ladder": [MODEL]}}
        self.tasks: list[dict[str, str]] = []
        self.expect: dict[str, dict[str, Any]] = {}
        self.raw: list[str] = []
        self.aliases: dict[str, str] = {}
        for n, case in enumerate(cases):
            self._add(n, case, lifecycle)

    def _add(self, n: int, case: Hostile, lifecycle: str) -> None:
        value, name = case.value, f"h{n}"
        agent: dict[str, Any] = {"name": name, "role": "worker", "runtime": f"r{n}", "lifecycle": lifecycle}
        want: dict[str, Any] = {"literal": "-"}
        dump = f"{template(sys.executable, '-c', DUMP, str(self.out))} {{model}}"
        if accepts(Runtime, {"command": f"{dump} {template(value)}", "ladder": [MODEL]}):
            want["literal"] = value
        self.runtimes[f"r{n}"] = {"command": f"{dump} {template(want['literal'])}", "ladder": [MODEL]}
        if agent_accepts("env", {"V": value}):
            agent["env"], want["V"] = {"V": value}, value
        workdir = nested(self.tmp / "w" / "x" / "y" / name, value)
        if workdir is not None and agent_accepts("workdir", str(workdir)):
            workdir.mkdir(parents=True, exist_ok=True)
            agent["workdir"], want["cwd"] = str(workdir), os.path.realpath(workdir)
        secret = nested(self.tmp / "s" / "x" / "y" / name, value)
        if secret is not None and accepts(EnvFrom, {"name": "S", "file": str(secret)}):
            secret.parent.mkdir(parents=True, exist_ok=True)
            secret.write_text(want.setdefault("S", value.replace("\x00", "")), encoding="utf-8")
            agent["env_from"] = [{"name": "S", "file": str(secret)}]
        if agent_accepts("alias", value):
            agent["alias"] = self.aliases[name] = value
        if accepts(Task, {"id": "T1", "title": value}):
            self.tasks.append({"id": f"T{n}", "title": value, "agent": name})
        self.agents.append(agent)
        self.expect[name] = want
        if case.test_id != "shell-rm" and accepts(Runtime, {"command": value, "ladder": [MODEL]}):
            # the value as the whole template: argv split like a shell line, never run by one
            self.runtimes[f"raw{n}"] = {"command": value, "ladder": [MODEL]}
            self.agents.append({"name": f"x{n}", "role": "worker", "runtime": f"raw{n}", "lifecycle": lifecycle})
            self.raw.append(f"x{n}")

    def documents(self, socket: str) -> dict[str, dict[str, Any]]:
        return {
            "fleet.yaml": {"apiVersion": V1, "kind": "Fleet", "name": "hostile", "runtimes": self.runtimes,
                           "defaults": {"socket_name": socket, "runtime": "base", "model": MODEL}},
            "tenants/demo/roster.yaml": {"apiVersion": V1, "kind": "Roster", "tenant": "demo", "host": HOST,
                                         "agents": self.agents},
            "tenants/demo/tasks.yaml": {"apiVersion": V1, "kind": "Tasks", "tenant": "demo",
                                        "missions": [{"id": "M1", "title": "Hostile titles", "tasks": self.tasks}]},
        }


def reconcile(repo: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--no-git", "--host", HOST,
         "--state-dir", str(state)],
        capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("manager", ["tmux-only", "systemd"])
def test_accepted_values_arrive_verbatim_and_nothing_runs(
    manager: str, tmux_socket: SocketKey, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert tmux_socket.name
    systemd: SystemdUser | None = request.getfixturevalue("systemd_user") if manager == "systemd" else None
    pwned = tmp_path / "pwned"
    plan = Plan(tmp_path, hostile_values(pwned), "core" if systemd else "ephemeral")
    repo = write_repo(tmp_path / "repo", plan.documents(tmux_socket.name))

    done = reconcile(repo, tmp_path / "state")

    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    if systemd is not None:
        # every agent has its unit, a newline inside an argument included (written as \x0a)
        written = {p.name for p in systemd.unit_dir.glob("fleet-demo.h*.service")}
        assert written == {f"fleet-demo.{name}.service" for name in plan.expect}
        assert "no unit (" not in done.stderr, done.stderr
    files = {name: plan.out / f"{name}.json" for name in plan.expect}
    assert retry_until(lambda: all(f.exists() for f in files.values()), 20), sorted(n for n, f in files.items() if not f.exists())
    sessions = tmux.observe_socket(tmux_socket).sessions
    assert retry_until(lambda: all(tmux.observe_socket(tmux_socket).sessions[x].pane_dead for x in plan.raw), 10)
    problems = []
    for name, want in plan.expect.items():
        got = json.loads(files[name].read_text(encoding="utf-8"))
        env, marks = got["env"], sessions[name].marks
        seen = {"literal": got["argv"][1], "V": env["V"], "S": env["S"], "cwd": got["cwd"]}
        problems += [f"{name} {key}: {seen[key]!r} != {value!r}" for key, value in want.items() if seen[key] != value]
        if got["argv"][0] != MODEL or (env["FLEET_MODEL"], env["FLEET_HOST"]) != (MODEL, HOST):
            problems.append(f"{name}: model/host arrived as {got['argv'][0]!r}, {env!r}")
        if (marks.tenant, marks.agent, marks.host, marks.model) != ("demo", name, HOST, MODEL):
            problems.append(f"{name}: marks {marks!r}")
    assert not problems, "\n".join(problems)
    assert not pwned.exists(), "a payload ran"
    # 1: tmux could not exec the first word; 126/127: sh looked a one-word command up as a
    # program. 2 would mean sh read the word as its own options (`sh -c -rf`).
    statuses = {x: tmux.observe_socket(tmux_socket).sessions[x].dead_status for x in plan.raw}
    assert set(statuses.values()) <= {1, 126, 127, None}, statuses

    status = parse_status((repo / "status" / HOST / "demo.yaml").read_text(encoding="utf-8"))
    assert {a.name: a.alias for a in status.agents if a.name in plan.aliases} == plan.aliases
    tasks_md = (repo / "TASKS.md").read_text(encoding="utf-8")
    assert all(markdown_cell(task["title"]) in tasks_md for task in plan.tasks)  # as a table cell
