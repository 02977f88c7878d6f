"""`env:` and `env_from:`: validated in the spec, only references in the launch, values
read by the launcher in the pane (real tmux)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import launcher
from reconciler.core.desired import build_desired
from reconciler.drivers import tmux
from reconciler.engine.apply import apply_plan
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from tests.e2e.repos import example_repo, write
from tests.plugins.tmux_server import retry_until

ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: demo
host: demo
socket_name: {socket}
agents:
  - name: orchestrator
    role: orchestrator
{extra}
  - name: enhancer
    role: enhancer
"""


def roster_repo(tmp_path: Path, socket: str, extra: str) -> Path:
    repo = example_repo(tmp_path, "minimal", socket)
    write(repo, "tenants/demo/roster.yaml", ROSTER.format(socket=socket, extra=extra))
    return repo


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("    env: {FLEET_MODEL: x}", 9, "'FLEET_MODEL' is set by the reconciler"),
        ("    env: {A: x}\n    env_from: [{name: A, env: B}]", 7, "'A' is given twice"),
        ("    env_from: [{name: A}]", 9, "needs exactly one of `file:` or `env:`"),
        ("    env_from: [{name: A, file: /k, env: B}]", 9, "needs exactly one of `file:` or `env:`"),
        ("    env: {'A B': x}", 9, "A B"),
        ("    env: {A: \"x\\ny\"}", 9, "env"),
    ],
)
def test_bad_env_is_located(tmp_path: Path, extra: str, line: int, message: str) -> None:
    repo = roster_repo(tmp_path, "s", extra)
    loaded = load_repo(repo)
    assert "demo" in loaded.invalid_tenants
    text = "\n".join(str(e) for e in loaded.errors)
    assert f"roster.yaml:{line}:" in text, text
    assert message in text, text


def test_only_references_reach_the_launch_and_the_hash(tmp_path: Path) -> None:
    extra = "    env: {PLAIN: one}\n    env_from: [{name: KEY, file: ~/k}, {name: GH, env: GH_SRC}]"
    repo = roster_repo(tmp_path, "s", extra)
    desired = build_desired(load_repo(repo), host="demo", state_dir="/st")
    agent = next(a for a in desired.tenants["demo"].agents if a.name == "orchestrator")
    argv = agent.launch.argv
    assert argv[:6] == ("fleet-env-exec", "--file", "KEY=~/k", "--env", "GH=GH_SRC", "--")
    assert ("PLAIN", "one") in agent.launch.env
    other = build_desired(load_repo(roster_repo(tmp_path / "b", "s", "    env: {PLAIN: two}\n"
                                                "    env_from: [{name: KEY, file: ~/k}, {name: GH, env: GH_SRC}]")),
                          host="demo", state_dir="/st")
    changed = next(a for a in other.tenants["demo"].agents if a.name == "orchestrator")
    assert changed.launch.spec_hash != agent.launch.spec_hash  # a plain value change restarts the agent


def test_launcher_reads_files_and_variables(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    windows = tmp_path / "windows"
    windows.write_bytes(b"s3cret\r\n")
    values = launcher.resolve([("KEY", "file", str(key)), ("GH", "env", "SRC"), ("W", "file", str(windows))],
                              {"SRC": "tok"})
    assert values == {"KEY": "s3cret", "GH": "tok", "W": "s3cret"}
    cases: list[tuple[list[tuple[str, str, str]], dict[str, str], str]] = [
        ([("K", "file", str(tmp_path / "missing"))], {}, "cannot read"),
        ([("K", "file", str(tmp_path))], {}, "not a regular file"),
        ([("K", "env", "NOPE")], {}, "NOPE is not set"),
    ]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases.append(([("K", "file", str(fifo))], {}, "not a regular file"))
    cases.append(([("K", "file", "/dev/null")], {}, "not a regular file"))  # a device is never opened
    for name, text in (("empty", ""), ("newline", "\n"), ("crlf", "\r\n")):
        (tmp_path / name).write_text(text, newline="")
        cases.append(([("K", "file", str(tmp_path / name))], {}, "is empty"))
    for pairs, env, why in cases:
        with pytest.raises(launcher.LaunchError, match=why):
            launcher.resolve(pairs, env)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (launcher.MAX_SECRET_BYTES + 1))
    with pytest.raises(launcher.LaunchError, match="larger than"):
        launcher.resolve([("K", "file", str(big))], {})


def test_launcher_refuses_to_start_without_its_secret(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler.launcher", "--file", f"K={tmp_path}/none", "--", "true"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == launcher.EX_CONFIG
    assert "the agent is not started" in done.stderr


@pytest.mark.tmux
def test_agent_sees_env_and_env_from_values(tmp_path: Path, tmux_socket: SocketKey,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert tmux_socket.name
    key = tmp_path / "key"
    key.write_text("file-secret-42\n")
    out = tmp_path / "seen"
    extra = f"    env: {{PLAIN: visible}}\n    env_from: [{{name: KEY, file: {key}}}, {{name: GH, env: GH_SRC}}]"
    repo = roster_repo(tmp_path, tmux_socket.name, extra)
    monkeypatch.setenv("GH_SRC", "var-secret-7")  # the tmux server the apply starts inherits it
    command = f"sh -c 'echo \"$KEY|$GH|$PLAIN\" > {out}.$FLEET_AGENT; exec sleep 600'"
    report = apply_plan(plan_tick(TickInputs(repo=repo, host="demo", state_dir=tmp_path / "st",
                                             command_override=command)))
    assert not report.failed, report.failed
    seen = Path(f"{out}.orchestrator")
    assert retry_until(seen.exists, 10)
    assert retry_until(lambda: seen.read_text() == "file-secret-42|var-secret-7|visible\n", 5), seen.read_text()
    assert Path(f"{out}.enhancer").exists() or retry_until(Path(f"{out}.enhancer").exists, 5)
    assert Path(f"{out}.enhancer").read_text() == "||\n"  # env is per agent
    listing = tmux.run_tmux(tmux_socket, ["list-panes", "-a", "-F", "#{pane_start_command}"]).stdout
    assert "file-secret-42" not in listing and "var-secret-7" not in listing


def test_an_env_too_large_for_tmux_is_a_located_error(tmp_path: Path) -> None:
    values = ", ".join(f"V{i}: {'x' * 3000}" for i in range(3))
    loaded = load_repo(roster_repo(tmp_path, "s", f"    env: {{{values}}}"))
    text = "\n".join(str(e) for e in loaded.errors)
    assert "roster.yaml:7:" in text and "more than 8192" in text and "env_from" in text, text
