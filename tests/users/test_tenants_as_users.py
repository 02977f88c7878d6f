"""Two tenants as two real Linux users on one host: root reconciles each under its uid,
on a private socket, with its state under its home; neither reaches the other."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from reconciler.core.render import parse_status
from reconciler.drivers import users
from tests.e2e.repos import example_repo, write
from tests.plugins.linux_users import as_user
from tests.plugins.systemd_user import SystemdUserUnavailable, running_systemd_user
from tests.plugins.tmux_server import retry_until

SOCKET = "fleet"
ROSTER = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Roster
tenant: {tenant}
host: demo
user: {user}
socket_name: {socket}
agents:
  - name: orchestrator
    role: orchestrator
  - name: enhancer
    role: enhancer
"""


Fleet = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def fleet(fleet_python: str) -> Fleet:
    """`fleet ...` as root, the way a host's timer runs it (from an install users can run)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MOSAIC_AGENT_COMMAND"}
        return subprocess.run([fleet_python, "-m", "reconciler", *args], capture_output=True, text=True,
                              env=env, timeout=300, check=False)

    return run


def two_tenant_repo(tmp_path: Path, alpha: str, beta: str) -> Path:
    repo = example_repo(tmp_path, "minimal", SOCKET)
    shutil.rmtree(repo / "tenants" / "demo")
    for tenant, user in (("alpha", alpha), ("beta", beta)):
        write(repo, f"tenants/{tenant}/roster.yaml", ROSTER.format(tenant=tenant, user=user, socket=SOCKET))
    return repo


def socket_of(user: str) -> Path:
    account = users.lookup(user)
    assert account is not None
    return Path(f"/tmp/tmux-{account.uid}") / SOCKET


def sessions_as(user: str) -> dict[str, int]:
    """session -> pane pid, listed by the user itself on its own socket."""
    done = as_user(user, ["tmux", "-L", SOCKET, "list-panes", "-a", "-F", "#{session_name} #{pane_pid}"])
    assert done.returncode == 0, done.stderr
    return {name: int(pid) for name, pid in (line.split() for line in done.stdout.splitlines())}


def has_heartbeats(folder: Path, names: set[str]) -> bool:
    return {p.name for p in folder.glob("*.json")} == names


def pane_text(server: str) -> str:
    return subprocess.run(["tmux", "-L", server, "capture-pane", "-p"], capture_output=True, text=True,
                          check=False).stdout


def argv_seen(text: str, run: Callable[[], subprocess.CompletedProcess[str]]) -> tuple[subprocess.CompletedProcess[str], bool]:
    """`run()`, while a thread reads every process's argv as any user could: was `text` there?"""
    seen, finished = threading.Event(), threading.Event()

    def watch() -> None:
        while not finished.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    if text.encode() in cmdline.read_bytes():
                        seen.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return run(), seen.is_set()
    finally:
        finished.set()
        watcher.join()


def holders(user: str, tty: str) -> list[int]:
    """The user's processes with `tty` open."""
    pids = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True, check=False).stdout.split()
    return [int(p) for p in pids if any(str(fd.resolve()) == tty for fd in _fds(int(p)))]


def _fds(pid: int) -> list[Path]:
    try:
        return list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return []


def uid_of_pid(pid: int) -> int:
    return Path(f"/proc/{pid}").stat().st_uid


@pytest.fixture
def pair(make_user: Callable[[], str], tmp_path: Path) -> tuple[Path, str, str]:
    alpha, beta = make_user(), make_user()
    return two_tenant_repo(tmp_path, alpha, beta), alpha, beta


def test_root_reconciles_each_tenant_as_its_user_with_no_reach_across(pair: tuple[Path, str, str],
                                                                      fleet: Fleet, fleet_python: str) -> None:
    repo, alpha, beta = pair
    done = fleet("reconcile", str(repo), "--host", "demo", "--no-git")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"as user {alpha}" in done.stdout and f"as user {beta}" in done.stdout

    for tenant, user in (("alpha", alpha), ("beta", beta)):
        account = users.lookup(user)
        assert account is not None
        # The agents run under the tenant's uid, on its socket, in its own 0700 folder.
        running = sessions_as(user)
        assert set(running) == {"orchestrator", "enhancer"}
        assert {uid_of_pid(pid) for pid in running.values()} == {account.uid}
        folder = socket_of(user).parent
        info = folder.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.uid, 0o700)
        assert socket_of(user).stat().st_uid == account.uid
        # Its state (heartbeats) is under its home, private, and everything there is its own.
        beats = Path(account.home) / ".local/state/mosaic-fleet" / tenant / "heartbeats"
        assert retry_until(functools.partial(has_heartbeats, beats, {"orchestrator.json", "enhancer.json"}), 15)
        state = Path(account.home) / ".local/state/mosaic-fleet"
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        owners = {p.stat().st_uid for p in [state, *state.rglob("*")]}
        assert owners == {account.uid}, f"root-owned files in {user}'s state"
        # The tenant's audit log says the user acted, started by root's run.
        records = [json.loads(line) for line in (state / tenant / "audit.jsonl").read_text().splitlines()]
        assert sorted(r["what"]["agent"] for r in records if r["what"]["kind"] == "spawn") == ["enhancer", "orchestrator"]
        assert {(r["who"]["user"], r["who"]["uid"], r["who"]["run_by"].split()[0]) for r in records} == {
            (user, account.uid, "root")}
        # Root wrote the status back into the repository for the tenant.
        status = parse_status((repo / "status" / "demo" / f"{tenant}.yaml").read_text())
        assert status.tenant == tenant and {a.name for a in status.agents} == {"orchestrator", "enhancer"}

    # No reach across: alpha's uid can neither list, attach to, nor type into beta's agents.
    target = str(socket_of(beta))
    for verb in (["list-sessions"], ["attach-session", "-t", "orchestrator"],
                 ["send-keys", "-t", "orchestrator", "echo pwned", "Enter"]):
        tried = as_user(alpha, ["tmux", "-S", target, *verb])
        assert tried.returncode != 0, verb
        assert "ermission denied" in tried.stderr or "error connecting" in tried.stderr, tried.stderr
    beta_home = users.lookup(beta)
    assert beta_home is not None
    peek = as_user(alpha, ["ls", f"{beta_home.home}/.local/state/mosaic-fleet/beta"])
    assert peek.returncode != 0 and "ermission denied" in peek.stderr

    # A second run changes nothing, for either user.
    again = fleet("reconcile", str(repo), "--host", "demo", "--no-git", "--output", "json")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["actions"] == [] and doc["summary"]["spawn"] == 0

    # Root's explicit verbs reach a user's agent, run as that user (its state holds the ack).
    sent = fleet("agent", "send", str(repo), "beta/orchestrator", "hello", "--verify", "--timeout", "20", "--host", "demo")
    assert sent.returncode == 0 and sent.stdout.strip() == "verified", sent.stdout + sent.stderr
    dashed = fleet("agent", "send", "--verify", "--timeout", "20", "--host", "demo", "--", str(repo),
                   "beta/orchestrator", "--force")  # a message that looks like an option
    assert dashed.returncode == 0 and dashed.stdout.strip() == "verified", dashed.stdout + dashed.stderr
    # --message-file -: the text reaches the user's run over stdin, in no process's argv
    # (which every user can read in /proc); the argument form, the control, is seen there.
    hidden = f"private-{uuid.uuid4().hex}"
    piped, seen = argv_seen(hidden, lambda: subprocess.run(
        [fleet_python, "-m", "reconciler", "agent", "send", str(repo), "beta/orchestrator", "--message-file", "-",
         "--verify", "--timeout", "20", "--host", "demo"], input=hidden, capture_output=True, text=True, timeout=120,
        check=False))
    assert (piped.returncode, piped.stdout.strip(), seen) == (0, "verified", False), piped.stderr
    visible = f"shown-{uuid.uuid4().hex}"
    argued, seen = argv_seen(visible, lambda: fleet("agent", "send", str(repo), "beta/orchestrator", visible,
                                                  "--verify", "--timeout", "20", "--host", "demo"))
    assert (argued.returncode, seen) == (0, True), argued.stderr

        # Root's `fleet agent watch` shows a user's agent on a terminal of its own: no process
    # of the user ever holds root's terminal (here: the viewer's pane).
    viewer = f"fleet-viewer-{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["tmux", "-L", viewer, "new-session", "-d", "-x", "120", "-y", "30", fleet_python, "-m",
                        "reconciler", "agent", "watch", str(repo), "beta/orchestrator", "--host", "demo"], check=True)
        shown = functools.partial(pane_text, viewer)
        assert retry_until(lambda: "beta/orchestrator on demo" in shown(), 15), shown()
        tty = subprocess.run(["tmux", "-L", viewer, "display", "-p", "#{pane_tty}"], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert holders(beta, tty) == []
    finally:
        subprocess.run(["tmux", "-L", viewer, "kill-server"], capture_output=True, check=False)

    # `fleet ps` as root shows both users' agents; `fleet down` stops them all.
    rows = json.loads(fleet("ps", str(repo), "--host", "demo", "--output", "json").stdout)
    assert sorted((r["tenant"], r["agent"]) for r in rows) == [
        ("alpha", "enhancer"), ("alpha", "orchestrator"), ("beta", "enhancer"), ("beta", "orchestrator")]
    down = fleet("down", str(repo), "--host", "demo")
    assert down.returncode == 0, down.stdout + down.stderr
    for user in (alpha, beta):
        listed = as_user(user, ["tmux", "-L", SOCKET, "list-sessions"])
        assert listed.returncode != 0 or listed.stdout.strip() == ""


def test_an_ordinary_user_reconciles_only_its_own_tenants(pair: tuple[Path, str, str], fleet_python: str) -> None:
    repo, alpha, beta = pair
    account = users.lookup(alpha)
    assert account is not None
    mine = Path(account.home) / "fleet"
    shutil.copytree(repo, mine)
    for path in [mine, *mine.rglob("*")]:
        os.chown(path, account.uid, account.gid)
    done = as_user(alpha, [fleet_python, "-m", "reconciler", "reconcile", str(mine), "--host", "demo", "--no-git"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"tenant beta runs as user {beta}; skipped" in done.stderr
    assert set(sessions_as(alpha)) == {"orchestrator", "enhancer"}
    assert not socket_of(beta).exists()  # nothing was started for beta
    assert not (mine / "status" / "demo" / "beta.yaml").exists()


def test_a_tenant_whose_user_does_not_exist_fails_alone(make_user: Callable[[], str], tmp_path: Path,
                                                        fleet: Fleet) -> None:
    alpha = make_user()
    repo = two_tenant_repo(tmp_path, alpha, "fleet-t-nosuchuser")
    done = fleet("reconcile", str(repo), "--host", "demo", "--no-git")
    assert done.returncode == 1
    assert "user 'fleet-t-nosuchuser' does not exist on this host" in done.stderr
    assert "Traceback" not in done.stderr
    assert set(sessions_as(alpha)) == {"orchestrator", "enhancer"}  # the other tenant is reconciled


def test_a_tenant_users_core_agents_get_units_in_its_own_systemd_user(make_user: Callable[[], str],
                                                                      tmp_path: Path, fleet: Fleet) -> None:
    alpha = make_user()
    account = users.lookup(alpha)
    assert account is not None
    repo = example_repo(tmp_path, "minimal", SOCKET)
    shutil.rmtree(repo / "tenants" / "demo")
    write(repo, "tenants/alpha/roster.yaml", ROSTER.format(tenant="alpha", user=alpha, socket=SOCKET))
    (tmp_path / "sd").mkdir()
    with ExitStack() as stack:
        try:
            stack.enter_context(running_systemd_user(tmp_path / "sd", account=account))
        except SystemdUserUnavailable as exc:
            pytest.skip(f"systemd --user cannot run for a tenant user here: {exc}")
        done = fleet("reconcile", str(repo), "--host", "demo", "--no-git")
        assert done.returncode == 0, done.stdout + done.stderr
        unit_dir = Path(account.home) / ".config/systemd/user"
        written = {p.name for p in unit_dir.glob("fleet-*.service")}
        assert written == {"fleet-tmux@fleet.service", "fleet-alpha.orchestrator.service", "fleet-alpha.enhancer.service"}
        assert {p.stat().st_uid for p in unit_dir.glob("fleet-*")} == {account.uid}
        active = as_user(alpha, ["systemctl", "--user", "is-active", *sorted(written)])
        assert active.stdout.split() == ["active"] * 3, active.stdout + active.stderr
        # The server (and so every agent) lives in the user's manager, under the user's uid.
        server = as_user(alpha, ["systemctl", "--user", "show", "-p", "MainPID", "--value", "fleet-tmux@fleet.service"])
        pid = int(server.stdout.strip())
        assert uid_of_pid(pid) == account.uid
        assert "fleet-tmux@fleet.service" in Path(f"/proc/{pid}/cgroup").read_text()
        assert {uid_of_pid(p) for p in sessions_as(alpha).values()} == {account.uid}
        assert not any(Path("/root/.config/systemd/user").glob("fleet-alpha*"))  # nothing in root's manager
        rows = json.loads(fleet("ps", str(repo), "--host", "demo", "--output", "json").stdout)
        assert {r["agent"]: r["systemd"] for r in rows} == {"orchestrator": "active", "enhancer": "active"}


@pytest.mark.parametrize(("flags", "why"), [
    (("--system", "--create-home"), "is a system account"),
    (("--no-create-home",), "has no home folder of its own"),
    (("--create-home", "--groups", "disk"), "is in group disk, which can act as root"),
])
def test_root_refuses_a_system_account_or_a_user_without_a_home(make_user: Callable[..., str], tmp_path: Path,
                                                                fleet: Fleet, flags: tuple[str, ...], why: str) -> None:
    alpha, odd = make_user(), make_user(*flags)
    repo = two_tenant_repo(tmp_path, alpha, odd)
    done = fleet("reconcile", str(repo), "--host", "demo", "--no-git")
    assert done.returncode == 1 and why in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert set(sessions_as(alpha)) == {"orchestrator", "enhancer"}  # the other tenant is reconciled


BUDGET = """\
apiVersion: fleet.mosaicstack.dev/v1
kind: Budget
tenant: alpha
accounts:
  - name: stub-sub
    provider: mosaic
    runtime: stub
    regime: subscription
    window: 7d
"""


def test_roots_budget_commands_for_a_users_tenant_run_as_that_user(pair: tuple[Path, str, str], fleet: Fleet) -> None:
    repo, alpha, _ = pair
    write(repo, "tenants/alpha/budget.yaml", BUDGET)
    done = fleet("budget", "set-usage", str(repo), "alpha", "stub-sub", "--used", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    account = users.lookup(alpha)
    assert account is not None
    record = Path(account.home) / ".local/state/mosaic-fleet/alpha/usage/stub-sub.json"
    assert record.stat().st_uid == account.uid and json.loads(record.read_text())["used_fraction"] == 0.5
    shown = fleet("budget", "show", str(repo), "--host", "demo", "--output", "json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["tenant"], r["account"], r["used"]) for r in json.loads(shown.stdout)] == [("alpha", "stub-sub", 0.5)]


def test_a_users_run_that_leaves_a_pipe_open_is_cut_at_its_deadline(make_user: Callable[[], str]) -> None:
    account = users.lookup(make_user())
    assert account is not None
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # a process outside the run's group keeps stdout open
        users.run_as(account, ["/bin/sh", "-c", "setsid sleep 100 & sleep 60"], cwd=account.home, passed={}, timeout=2)
    assert time.monotonic() - started < 10
