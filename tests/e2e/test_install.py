"""`fleet install`, `fleet uninstall` and `fleet init` as users run them.

The timer tests use a real `systemd --user` (tests/plugins/systemd_user.py) and real
tmux on a private socket: the timer must really fire, and the reconcile it runs must
really create the agents' sessions. Where no manager can start they skip with the
reason. `fleet init` runs real git with the developer's configuration switched off.
"""

from __future__ import annotations

import doctest
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
from git.exc import GitCommandNotFound

from reconciler.drivers import tmux, units
from reconciler.engine import fleet_init, install
from reconciler.errors import UserError
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from tests.e2e.repos import EXAMPLES, example_repo
from tests.plugins.git_remote import git, isolate_git
from tests.plugins.systemd_user import SystemdUser
from tests.plugins.tmux_server import retry_until
from tests.spec.test_examples import STARTER_ROLES

SLEEP = "MOSAIC_AGENT_COMMAND=sleep 600"
ENTRY = "reconciler.cli"


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", ENTRY, *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}, check=False,
    )


def validate(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler.cli", "validate", str(repo)],
                          capture_output=True, text=True, timeout=60, check=False)


def show(manager: SystemdUser, unit: str, *props: str) -> dict[str, str]:
    done = manager.systemctl("show", *(f"--property={p}" for p in props), unit)
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


def units_loaded_at(manager: SystemdUser) -> str:
    """When the manager last (re)loaded its units: changes with every daemon-reload."""
    return manager.systemctl("show", "--property=UnitsLoadTimestampMonotonic", "--value").stdout.strip()


@pytest.fixture
def loop(systemd_user: SystemdUser, tmux_socket: SocketKey) -> Iterator[SystemdUser]:
    """The manager, with the reconcile timer taken off again after the test, before the
    socket's server is killed (a timer left running would start it again)."""
    try:
        yield systemd_user
    finally:
        install.uninstall_loop(systemd_user.unit_dir)
        assert not any(units.is_ours(units.read_unit(systemd_user.unit_dir, name)) for name in install.UNITS)


def test_doctests_pass() -> None:
    assert doctest.testmod(install, raise_on_error=False).failed == 0
    assert doctest.testmod(fleet_init, raise_on_error=False).failed == 0


# --- pure: the unit texts ------------------------------------------------------------------

SPEC = install.LoopSpec(
    repo=Path("/srv/fleet"),
    host="w-jarvis",
    interval=timedelta(seconds=60),
    program=("/opt/fleet/bin/fleet",),
    environment=(("FLEET_STATE_DIR", "/var/lib/fleet"), ("PATH", "/opt/fleet/bin:/usr/bin")),
)

SERVICE_TEXT = """\
# Written by fleet reconcile (fleet install): the reconcile loop of /srv/fleet for host w-jarvis. Edits are overwritten.
# One run of `fleet reconcile`; fleet-reconcile.timer starts it every 1min. Remove both
# with `fleet uninstall`. See docs/operations.md.
[Unit]
Description=fleet reconcile /srv/fleet (host w-jarvis)

[Service]
Type=oneshot
WorkingDirectory=/srv/fleet
Environment="FLEET_STATE_DIR=/var/lib/fleet"
Environment="PATH=/opt/fleet/bin:/usr/bin"
ExecStart="/opt/fleet/bin/fleet" "reconcile" "/srv/fleet" "--host=w-jarvis"
TimeoutStartSec=10min
"""

TIMER_TEXT = """\
# Written by fleet reconcile (fleet install): the timer of the reconcile loop of /srv/fleet. Edits are overwritten.
# Starts fleet-reconcile.service 1min after boot (at once when installed later), then
# 1min after each start, a random 0-6s later so hosts do not run in step.
[Unit]
Description=fleet reconcile /srv/fleet every 1min

[Timer]
Unit=fleet-reconcile.service
OnBootSec=1min
OnUnitActiveSec=1min
RandomizedDelaySec=6s
AccuracySec=1s
Persistent=true

[Install]
WantedBy=timers.target
"""


def test_units_render_as_documented() -> None:
    assert install.service_text(SPEC) == SERVICE_TEXT
    assert install.timer_text(SPEC) == TIMER_TEXT
    assert units.is_ours(SERVICE_TEXT) and units.is_ours(TIMER_TEXT)


class BadInstall(NamedTuple):
    test_id: str
    interval: str
    env: list[str]
    state_dir: bool
    error: str


BAD_INSTALLS = [
    BadInstall("interval-without-unit", "60", [], False, "--interval: '60' is not a duration"),
    BadInstall("interval-zero", "0s", [], False, "--interval: '0s' is zero"),
    BadInstall("env-without-equals", "60s", ["NOPE"], False, "--env 'NOPE': write KEY=VALUE"),
    BadInstall("env-bad-name", "60s", ["1X=a"], False, "environment variable name '1X' is invalid"),
    BadInstall("env-newline", "60s", ["A=x\ny"], False, "cannot carry a newline"),
    BadInstall("state-dir-twice", "60s", ["FLEET_STATE_DIR=/x"], True, "--state-dir or --env FLEET_STATE_DIR"),
]


@pytest.mark.parametrize("case", BAD_INSTALLS, ids=[c.test_id for c in BAD_INSTALLS])
def test_install_rejects_bad_options_before_touching_systemd(case: BadInstall, tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "minimal", None)
    with pytest.raises(UserError) as caught:
        install.loop_spec(repo, "demo", case.interval, tmp_path if case.state_dir else None, False, case.env)
    assert case.error in str(caught.value)


def test_install_needs_a_fleet_repository(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no fleet\.yaml there"):
        install.loop_spec(tmp_path, "demo", "60s", None, False, [])


def test_install_refuses_another_user(tmp_path: Path) -> None:
    result = fleet("install", str(example_repo(tmp_path, "minimal", None)), "--user", "nobody-else")
    assert result.returncode == 1
    assert "--user nobody-else: the timer goes into the current user's systemd --user" in result.stderr
    assert "Traceback" not in result.stderr


def test_install_without_systemd_points_at_watch(tmp_path: Path) -> None:
    """No manager (the autouse fixture hides every one): exit 1, nothing written."""
    repo = example_repo(tmp_path, "minimal", None)
    config = tmp_path / "config"
    result = fleet("install", str(repo), "--host", "demo", env={"XDG_CONFIG_HOME": str(config)})
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: systemd --user manager unreachable")
    assert f"without systemd, run the loop as `fleet reconcile {repo} --watch`" in result.stderr
    assert not config.exists()


# --- real systemd --user ------------------------------------------------------------------


@pytest.mark.systemd
@pytest.mark.tmux
def test_the_timer_really_fires_the_reconcile(loop: SystemdUser, tmux_socket: SocketKey, tmp_path: Path) -> None:
    assert tmux_socket.name
    # a space and a `%` in the path: WorkingDirectory= and ExecStart= must carry both
    repo = example_repo(tmp_path / "my fleet 100%", "minimal", tmux_socket.name)
    state = tmp_path / "state"
    result = fleet("install", str(repo), "--host", "demo", "--interval", "2s",
                   "--state-dir", str(state), "--no-git", "--env", SLEEP)
    assert result.returncode == 0, result.stderr
    assert "ran systemctl --user enable --now fleet-reconcile.timer" in result.stdout

    for name in install.UNITS:
        assert (loop.unit_dir / name).read_text().startswith(units.HEADER)
    timers = loop.systemctl("list-timers", "--all", "--no-pager").stdout
    assert "fleet-reconcile.timer" in timers and "fleet-reconcile.service" in timers
    assert loop.systemctl("is-enabled", install.TIMER).stdout.strip() == "enabled"
    assert loop.systemctl("is-active", install.TIMER).stdout.strip() == "active"
    service = show(loop, install.SERVICE, "WorkingDirectory", "ExecStart")
    assert service["WorkingDirectory"] == str(repo)
    assert f"argv[]={install.fleet_program()[0]} reconcile {repo} --host=demo --no-git ;" in service["ExecStart"]

    # only the service can create these sessions and write this status: the timer ran it
    assert retry_until(lambda: {"enhancer", "orchestrator"} <= set(tmux.observe_socket(tmux_socket).sessions), 30)
    assert retry_until((repo / "status" / "demo" / "demo.yaml").is_file, 30)
    first = show(loop, install.SERVICE, "InvocationID")["InvocationID"]
    assert show(loop, install.TIMER, "LastTriggerUSecMonotonic")["LastTriggerUSecMonotonic"] != "0"
    # and again, interval after interval: a new invocation, each one a success
    assert retry_until(lambda: show(loop, install.SERVICE, "InvocationID")["InvocationID"] not in {first, ""}, 30)
    assert retry_until(
        lambda: show(loop, install.SERVICE, "ActiveState", "Result", "ExecMainStatus")
        == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, 30)


@pytest.mark.systemd
def test_reinstall_changes_nothing_and_other_options_rewrite(loop: SystemdUser, tmp_path: Path) -> None:
    # host `elsewhere` has no agents: each run is quick and reloads nothing itself
    repo = example_repo(tmp_path, "minimal", None)
    args = ["install", str(repo), "--host", "elsewhere", "--interval", "1h", "--no-git"]
    assert fleet(*args).returncode == 0
    paths = [loop.unit_dir / name for name in install.UNITS]
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in paths]
    loaded, timer_run = units_loaded_at(loop), show(loop, install.TIMER, "InvocationID")

    again = fleet(*args)
    assert again.returncode == 0, again.stderr
    assert "unchanged: fleet-reconcile.service and fleet-reconcile.timer are current" in again.stdout
    assert "ran systemctl" not in again.stdout and "wrote" not in again.stdout
    assert [(p.read_bytes(), p.stat().st_mtime_ns) for p in paths] == before
    assert units_loaded_at(loop) == loaded, "a no-op install must not daemon-reload"
    assert show(loop, install.TIMER, "InvocationID") == timer_run, "nor restart the timer"

    other = fleet(*args[:-3], "--interval", "5m", "--no-git")
    assert other.returncode == 0, other.stderr
    assert "ran systemctl --user daemon-reload" in other.stdout
    assert "ran systemctl --user restart fleet-reconcile.timer" in other.stdout
    assert units_loaded_at(loop) != loaded
    assert "OnUnitActiveSec=5min" in paths[1].read_text()
    timers = loop.systemctl("show", "--property=TimersMonotonic", install.TIMER).stdout
    assert "{ OnUnitActiveUSec=5min ;" in timers and "{ OnBootUSec=1min ;" in timers
    assert loop.systemctl("is-active", install.TIMER).stdout.strip() == "active"


@pytest.mark.systemd
def test_uninstall_removes_everything_and_is_idempotent(loop: SystemdUser, tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "minimal", None)
    assert fleet("install", str(repo), "--host", "elsewhere", "--interval", "1h", "--no-git").returncode == 0
    link = loop.unit_dir / "timers.target.wants" / install.TIMER
    assert link.is_symlink()

    result = fleet("uninstall")
    assert result.returncode == 0, result.stderr
    assert "stopped and disabled fleet-reconcile.service, fleet-reconcile.timer" in result.stdout
    assert not any((loop.unit_dir / name).exists() for name in install.UNITS)
    assert not link.exists() and not link.is_symlink()
    assert "fleet-reconcile" not in loop.systemctl("list-timers", "--all", "--no-pager").stdout
    assert loop.systemctl("is-enabled", install.TIMER, check=False).returncode != 0

    again = fleet("uninstall")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing to remove")


@pytest.mark.systemd
def test_a_unit_file_fleet_did_not_write_is_never_touched(loop: SystemdUser, tmp_path: Path) -> None:
    mine = "[Unit]\nDescription=someone's own\n[Service]\nType=oneshot\nExecStart=/bin/true\n"
    (loop.unit_dir / install.SERVICE).write_text(mine)
    repo = example_repo(tmp_path, "minimal", None)

    refused = fleet("install", str(repo), "--host", "elsewhere")
    assert refused.returncode == 1
    assert "fleet-reconcile.service exists and was not written by fleet" in refused.stderr
    assert not (loop.unit_dir / install.TIMER).exists()

    kept = fleet("uninstall")
    assert kept.returncode == 0
    assert "fleet-reconcile.service was not written by fleet; left alone" in kept.stderr
    assert (loop.unit_dir / install.SERVICE).read_text() == mine


# --- fleet init ------------------------------------------------------------------------------


@pytest.fixture
def git_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Git without the developer's configuration or identity (tests/plugins/git_remote.py)."""
    home = tmp_path_factory.mktemp("git-home")
    isolate_git(monkeypatch, home)
    return home


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_init_creates_a_valid_committed_repository(example: str, tmp_path: Path, git_home: Path) -> None:
    with (git_home / "gitconfig").open("a") as config:
        config.write("[user]\n\tname = Ada\n\temail = ada@example.com\n")
    dest = tmp_path / "new" / "fleet"
    result = fleet("init", str(dest), "--example", example)
    assert result.returncode == 0, result.stderr

    loaded = load_repo(dest)
    assert loaded.ok
    assert set(loaded.roles) >= STARTER_ROLES, "every new repository starts with the starter role library"
    assert validate(dest).returncode == 0
    assert git(dest, "status", "--porcelain") == ""
    assert git(dest, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert git(dest, "log", "--format=%an <%ae>|%cn|%s") == f"Ada <ada@example.com>|Ada|fleet init: the {example} example"
    tracked = set(git(dest, "ls-files").splitlines())
    assert {f".fleet/schemas/{kind}.schema.json" for kind in ("fleet", "roster", "tasks", "budget", "role")} <= tracked
    for path in dest.rglob("*.yaml"):
        line = path.read_text().splitlines()[0]
        schema = line.removeprefix("# yaml-language-server: $schema=")
        assert schema != line, f"{path}: no modeline"
        assert (path.parent / schema).resolve().parent == (dest / ".fleet" / "schemas").resolve(), path
        assert (path.parent / schema).is_file(), path


def test_init_without_a_git_identity_commits_as_fleet_init(tmp_path: Path, git_home: Path) -> None:
    dest = tmp_path / "fleet"
    dest.mkdir()  # an empty folder is fine too
    result = fleet("init", str(dest))
    assert result.returncode == 0, result.stderr
    host = socket.gethostname()
    assert git(dest, "log", "--format=%an <%ae>") == f"fleet init <fleet@{host}>"
    assert sorted(p.name for p in (dest / "tenants").iterdir()) == ["demo"]  # minimal by default


def test_init_no_roles_leaves_the_library_out(tmp_path: Path, git_home: Path) -> None:
    dest = tmp_path / "fleet"
    result = fleet("init", str(dest), "--no-roles")
    assert result.returncode == 0, result.stderr
    assert not (dest / "roles").exists() and "starter role library" not in result.stdout
    seeded = fleet("init", str(tmp_path / "seeded"))
    assert f"added the starter role library to {tmp_path / 'seeded' / 'roles'}: board, code-review" in seeded.stdout


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path, git_home: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    result = fleet("init", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path} is not empty; give a new or empty folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_unknown_example_lists_the_choices(tmp_path: Path, git_home: Path) -> None:
    result = fleet("init", str(tmp_path / "f"), "--example", "nope")
    assert result.returncode == 1
    choices = ", ".join(sorted(p.name for p in EXAMPLES.iterdir()))
    assert result.stderr == f"error: --example nope: no such example; choose one of: {choices}\n"
    assert not (tmp_path / "f").exists()


def test_init_removes_what_it_wrote_when_it_fails(tmp_path: Path, git_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for a failing git (a PATH without it): the half-made folder must go."""
    dest = tmp_path / "fleet"
    dest.mkdir()
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")
    with pytest.raises(GitCommandNotFound):
        fleet_init.init_repo(dest, "minimal", "h")
    assert list(dest.iterdir()) == []
