"""The `fleet` command as users run it: a real subprocess (and typer's runner for speed),
against a real tmux server on a private socket."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli.app import app
from reconciler.core.desired import build_desired
from reconciler.drivers import tmux
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from tests.e2e.repos import example_repo, write

pytestmark = pytest.mark.tmux

REPO_ROOT = Path(__file__).resolve().parents[2]


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


def test_validate_every_example() -> None:
    for example in sorted(p.name for p in (REPO_ROOT / "examples" / "fleets").iterdir()):
        result = fleet("validate", str(REPO_ROOT / "examples" / "fleets" / example))
        assert result.returncode == 0, result.stderr
        assert "valid" in result.stdout


def test_validate_reports_located_errors_without_traceback(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "minimal", None)
    write(repo, "tenants/demo/roster.yaml",
          "apiVersion: fleet.mosaicstack.dev/v1\nkind: Roster\ntenant: demo\nhost: demo\nagents:\n"
          "  - name: orchestrator\n    role: orchestrator\n    runtme: stub\n")
    result = fleet("validate", str(repo))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert f"{repo}/tenants/demo/roster.yaml:8:5: unknown key `runtme`; did you mean `runtime`?" in lines
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_validate_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    result = fleet("validate", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_dry_run_plans_spawns_then_nothing_once_running(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    args = ("reconcile", str(repo), "--dry-run", "--host", "demo", "--state-dir", str(state_dir))
    env = {"MOSAIC_AGENT_COMMAND": "sleep 600"}
    first = fleet(*args, "--detailed-exitcode", env=env)
    assert first.returncode == 2, first.stderr
    assert "+ spawn    demo/orchestrator (stub-large)" in first.stdout
    assert "2 to spawn, 0 to restart, 0 to stop" in first.stdout
    assert tmux.observe_socket(tmux_socket).sessions == {}, "dry-run must not create anything"

    desired = build_desired(load_repo(repo), host="demo", state_dir=str(state_dir), command_override="sleep 600")
    tmux.spawn_sessions([a.launch for a in desired.tenants["demo"].agents])
    # the sessions are young (inside the start-up grace), marked and alive: nothing to do
    second = fleet(*args, "--detailed-exitcode", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes" in second.stdout


def test_dry_run_json_contract(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "coding", tmux_socket.name)
    result = fleet("reconcile", str(repo), "--dry-run", "--host", "build-1", "--state-dir", str(state_dir), "--output", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["format_version"] == "1"
    assert len(doc["actions"]) == 6
    for action in doc["actions"]:
        assert {"action", "tenant", "host", "agent", "model", "reason"} <= set(action)
        assert action["action"] == "spawn" and action["host"] == "build-1"
    assert doc["summary"]["spawn"] == 6 and doc["errors"] == []


def test_foreign_session_is_reported_and_left_alone(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    subprocess.run(["tmux", "-L", tmux_socket.name, "new-session", "-d", "-s", "orchestrator", "sleep", "600"], check=True)
    result = fleet("reconcile", str(repo), "--dry-run", "--host", "demo", "--state-dir", str(state_dir),
                   "--detailed-exitcode", "--output", "json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert [a["agent"] for a in doc["actions"]] == ["enhancer"]
    assert [c["agent"] for c in doc["conflicts"]] == ["orchestrator"]
    session = tmux.observe_socket(tmux_socket).sessions["orchestrator"]
    assert not session.marks.owned and not session.pane_dead


def test_invalid_tenant_does_not_stop_the_valid_one(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "multi-tenant", tmux_socket.name)
    # give friday its own socket back so the two tenants do not share one
    roster = repo / "tenants/friday/roster.yaml"
    roster.write_text(roster.read_text().replace(f"socket_name: {tmux_socket.name}", f"socket_name: {tmux_socket.name}-f"))
    write(repo, "tenants/friday/tasks.yaml",
          "apiVersion: fleet.mosaicstack.dev/v1\nkind: Tasks\ntenant: friday\nmissions:\n"
          "  - id: M1\n    title: x\n    tasks:\n      - id: T1\n        title: y\n        agent: ghost\n")
    result = fleet("reconcile", str(repo), "--dry-run", "--host", "w-jarvis", "--state-dir", str(state_dir), "--output", "json")
    assert result.returncode == 1
    assert f"{repo}/tenants/friday/tasks.yaml:10:16: task T1 names agent 'ghost'" in result.stderr
    doc = json.loads(result.stdout)
    assert {a["tenant"] for a in doc["actions"]} == {"jarvis"}
    assert doc["errors"][0]["tenant"] == "friday"


def test_unknown_tenant_flag_is_a_user_error(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "minimal", "fleet-test-unused")
    result = CliRunner().invoke(app, ["reconcile", str(repo), "--dry-run", "--tenant", "nobody", "--host", "demo"])
    assert result.exit_code == 1, result.output
    assert "error: --tenant nobody: no such tenant" in result.stderr and result.stdout == ""


def test_newcomer_mistakes_are_refused_with_what_to_do(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "minimal", "fleet-test-unused")
    runner = CliRunner()
    apply_exitcode = runner.invoke(app, ["reconcile", str(repo), "--detailed-exitcode", "--host", "demo"])
    assert apply_exitcode.exit_code == 1 and "use it with --dry-run" in apply_exitcode.stderr
    for verb in (["down"], ["ps"], ["budget", "show"]):
        typo = runner.invoke(app, [*verb, str(repo), "--tenant", "nosuch", "--host", "demo"])
        assert typo.exit_code == 1 and "--tenant nosuch: no such tenant" in typo.stderr, (verb, typo.output)
    on_file = runner.invoke(app, ["validate", str(repo / "fleet.yaml")])
    assert on_file.exit_code == 1 and "is a file, not a folder" in on_file.stderr
    no_message = runner.invoke(app, ["agent", "send", str(repo), "orchestrator", "--host", "demo"])
    assert no_message.exit_code == 1 and "no message" in no_message.stderr and "not both" not in no_message.stderr


def test_version_and_help_read_as_a_unix_tool() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("fleet ")
    helped = runner.invoke(app, ["reconcile", "--help"], terminal_width=200)
    assert "Usage: fleet reconcile [OPTIONS] REPO" in helped.stdout
    assert "<bool>" not in helped.stdout and "list[str]" not in helped.stdout and "{repo}" not in helped.stdout
    assert "--tenant" in helped.stdout and "NAME" in helped.stdout


def test_runner_validate_and_bad_output_flag() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(REPO_ROOT / "examples/fleets/minimal")])
    assert ok.exit_code == 0 and "valid (1 tenant(s), 2 agent(s))" in ok.stdout
    bad = runner.invoke(app, ["validate", str(REPO_ROOT / "examples/fleets/minimal"), "--output", "yaml"])
    assert bad.exit_code == 2 and "'yaml' is not one of" in " ".join(bad.stderr.split())  # a usage error


def test_app_called_again_in_one_process_parses_each_call_anew(capsys: pytest.CaptureFixture[str]) -> None:
    """The root command is built once (cli/app.py, FleetApp); every call still parses its own argv."""
    minimal = str(REPO_ROOT / "examples/fleets/minimal")
    for argv, code, said in ((["validate", minimal], 0, "valid (1 tenant(s), 2 agent(s))"),
                             (["validate", str(REPO_ROOT / "no-such-fleet")], 1, "no such folder"),
                             (["validate", minimal, "--output", "json"], 0, '"valid": true')):
        with pytest.raises(SystemExit) as exited:
            app(argv)
        out, err = capsys.readouterr()
        assert exited.value.code == code and said in out + err, (argv, out, err)


def test_a_command_built_alone_and_the_whole_tree_say_the_same(capsys: pytest.CaptureFixture[str]) -> None:
    """`fleet reconcile ...` builds only its group (cli/app.py); help of the root still lists every command."""
    said = {}
    for argv in (["reconcile", "--help"], ["budget", "simulate", "--help"], ["--help"], ["reconcile", "--help"]):
        with pytest.raises(SystemExit) as exited:
            app(argv, prog_name="fleet", terminal_width=200)
        assert exited.value.code == 0
        said[" ".join(argv)] = " ".join(capsys.readouterr().out.split())
    assert "Usage: fleet reconcile [OPTIONS] REPO" in said["reconcile --help"]
    assert "Usage: fleet budget simulate [OPTIONS] REPO" in said["budget simulate --help"]
    for name in ("validate", "reconcile", "down", "ps", "install", "agent", "budget"):
        assert f" {name} " in said["--help"], name


def test_schema_check(tmp_path: Path) -> None:
    assert fleet("schema", "--out", str(REPO_ROOT / "specs"), "--check").returncode == 0
    stale = fleet("schema", "--out", str(tmp_path), "--check")
    assert stale.returncode == 1 and "stale" in stale.stderr
    written = fleet("schema", "--out", str(tmp_path))
    assert written.returncode == 0 and (tmp_path / "roster.schema.json").is_file()


def test_down_stops_the_fleets_sessions_and_leaves_foreign_ones(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    env = {"MOSAIC_AGENT_COMMAND": "sleep 600"}
    up = fleet("reconcile", str(repo), "--host", "demo", "--state-dir", str(state_dir), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    subprocess.run(["tmux", "-L", tmux_socket.name, "new-session", "-d", "-s", "mine", "sleep", "600"], check=True)
    down = fleet("down", str(repo), "--host", "demo", "--state-dir", str(state_dir), env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "`fleet down` stops every agent" in down.stdout and "2 done" in down.stdout
    assert sorted(tmux.observe_socket(tmux_socket).sessions) == ["mine"]


def test_dry_run_json_is_what_apply_hands_tmux(tmp_path: Path, tmux_socket: SocketKey, state_dir: Path) -> None:
    """The plan is final: program paths and workdirs are resolved while observing, so the
    dry-run's command and workdir are exactly what apply starts (tmux's own record of
    each pane's start command and start folder), and the spec hash is that of the specs."""
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    here = tmp_path / "work"
    here.mkdir()
    roster = repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text()
                      .replace("    alias: Mos\n", f"    alias: Mos\n    workdir: {here}\n")
                      .replace("    role: enhancer\n", "    role: enhancer\n    workdir: ~/no-such-folder-fleet-test\n"))
    args = ("reconcile", str(repo), "--host", "demo", "--state-dir", str(state_dir))
    bin_dir = str(Path(sys.executable).parent)  # fleet-stub-agent is found beside Python, not on PATH
    env = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)}
    plan = json.loads(fleet(*args, "--dry-run", "--output", "json", env=env).stdout)
    planned = {a["agent"]: (a["command"], a["workdir"]) for a in plan["actions"]}
    on_path = shutil.which("fleet-stub-agent", path=env["PATH"])
    assert planned["orchestrator"][0][0] == ("fleet-stub-agent" if on_path else str(Path(bin_dir) / "fleet-stub-agent"))
    assert planned["orchestrator"][1] == str(here)
    assert planned["enhancer"][1] == "~", "a workdir missing on this host starts in the home folder"

    applied = fleet(*args, env=env)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for agent, (command, workdir) in planned.items():
        shown = tmux.run_tmux(tmux_socket, ["display-message", "-p", "-t", f"={agent}:",
                                            "#{pane_start_command}\t#{pane_start_path}"]).stdout.strip()
        started, folder = shown.split("\t")
        assert started == " ".join(command), agent
        assert folder == tmux.expand_workdir(workdir, str(Path.home())), agent
    desired = build_desired(load_repo(repo), host="demo", state_dir=str(state_dir))
    running = tmux.observe_socket(tmux_socket).sessions
    assert {a.name: a.launch.spec_hash for a in desired.tenants["demo"].agents} == \
        {name: s.marks.spec_hash for name, s in running.items()}, "resolution does not change the spec hash"
