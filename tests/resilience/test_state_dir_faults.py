"""A read-only or full state directory: one clear message before any action, nothing changed.

Real file systems, not permissions that root ignores: a 64 KiB tmpfs mounted for the
test, remounted read-only, or filled until the kernel says ENOSPC; and a folder that
another user (`nobody`) may not write, checked by running as that user. `fleet
reconcile` on such a state dir stops before any action (the CLI runs the same probe).
Tests skip with the reason where this machine does not allow `mount`.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.files import check_state_writable, write_atomic
from reconciler.engine.apply import apply_plan
from reconciler.engine.reconcile import apply_and_write_back
from reconciler.engine.tick import plan_tick
from reconciler.model.observed import SocketKey
from tests.e2e.repos import example_repo, write
from tests.plugins.tmux_server import kill_server
from tests.resilience.conftest import Minimal

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ["demo", "other"]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A private 64 KiB tmpfs; unmounted afterwards (lazily, if something still holds it)."""
    where = tmp_path / "state"
    where.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(where))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def read_only(where: Path) -> None:
    done = _mount("-o", "remount,ro", str(where))
    assert done.returncode == 0, done.stderr


def fill(where: Path) -> None:
    """Write until the file system refuses a single byte more (creating the ballast file
    itself may already be refused: a tmpfs counts its folders against its size too)."""
    try:
        with (where / "ballast").open("wb", buffering=0) as ballast:
            while True:
                ballast.write(b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    with pytest.raises(OSError, match="No space left"), (where / "demo" / "one-byte").open("wb", buffering=0) as probe:
        probe.write(b"x")


def listing(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*"))


def test_a_writable_state_dir_passes_and_keeps_nothing(tmpfs: Path) -> None:
    assert check_state_writable(tmpfs, TENANTS) is None
    assert listing(tmpfs) == TENANTS  # the tenant folders, created; no probe left


def test_a_read_only_state_dir_is_named_with_the_fix(tmpfs: Path) -> None:
    write_atomic(tmpfs / "demo" / "restarts.json", "{}\n")
    before = listing(tmpfs)
    read_only(tmpfs)

    message = check_state_writable(tmpfs, TENANTS)

    assert message == (f"state directory {tmpfs} is read-only (at {tmpfs / 'demo'}) (Read-only file system): "
                       "fix its permissions or pass --state-dir; nothing was changed")
    assert listing(tmpfs) == before


def test_a_full_state_dir_is_named_with_the_fix(tmpfs: Path) -> None:
    for tenant in TENANTS:
        (tmpfs / tenant).mkdir()
    fill(tmpfs)
    before = listing(tmpfs)

    message = check_state_writable(tmpfs, TENANTS)

    assert message == (f"state directory {tmpfs} is full (at {tmpfs / 'demo'}) (No space left on device): "
                       "free some space or pass --state-dir; nothing was changed")
    assert listing(tmpfs) == before


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_fault_after_a_passed_probe_is_named_on_the_next_one(tmpfs: Path, fault: str) -> None:
    """A resident loop probes every tick, fsyncing only the first time: a state dir that
    turns read-only or fills up between two ticks is still named on the next."""
    assert check_state_writable(tmpfs, TENANTS) is None
    assert check_state_writable(tmpfs, TENANTS) is None
    if fault == "read-only":
        read_only(tmpfs)
    else:
        fill(tmpfs)
    before = listing(tmpfs)

    message = check_state_writable(tmpfs, TENANTS)

    assert message is not None and message.startswith(f"state directory {tmpfs} is {fault} (at {tmpfs / 'demo'})")
    assert listing(tmpfs) == before


def test_a_state_dir_this_user_may_not_write(tmp_path: Path) -> None:
    """As `nobody`, in a folder root owns (0755): permissions, not the file system."""
    (tmp_path / "demo").mkdir(parents=True)
    tmp_path.chmod(0o755)
    code = ("import sys; from pathlib import Path; from reconciler.drivers.files import check_state_writable; "
            "print(check_state_writable(Path(sys.argv[1]), ['demo']))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], user="nobody", cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"state directory {tmp_path} is not writable by this user (at {tmp_path / 'demo'}) "
                                   "(Permission denied): fix its permissions or pass --state-dir; nothing was changed")


@pytest.mark.tmux
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_reconcile_on_a_broken_state_dir_exits_1_and_changes_nothing(
    tmp_path: Path, tmpfs: Path, tmux_socket: SocketKey, fault: str
) -> None:
    assert tmux_socket.name
    repo = example_repo(tmp_path, "minimal", tmux_socket.name)
    (tmpfs / "demo").mkdir()
    read_only(tmpfs) if fault == "read-only" else fill(tmpfs)
    before = listing(tmpfs)
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600", "XDG_RUNTIME_DIR": str(tmp_path)}

    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "reconcile", str(repo), "--host", "demo",
                           "--state-dir", str(tmpfs), "--no-git"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)

    assert done.returncode == 1
    assert f"state directory {tmpfs} is {'read-only' if fault == 'read-only' else 'full'}" in done.stderr
    assert "nothing was changed" in done.stderr and "Traceback" not in done.stderr
    assert tmux.observe_socket(tmux_socket).sessions == {}
    assert listing(tmpfs) == before
    assert not (repo / "status").exists() and not (repo / "TASKS.md").exists()


class TenantFault(NamedTuple):
    test_id: str
    plant: Callable[[Path], None]  # the tenant's state folder (not created yet) -> None
    detail: str  # in each of the tenant's failed outcomes; "" when its actions still run


def _lock_link(folder: Path) -> None:
    folder.mkdir()
    (folder / "lock").symlink_to("/dev/zero")


def _heartbeats_file(folder: Path) -> None:
    folder.mkdir()
    (folder / "heartbeats").write_text("x")


TENANT_FAULTS = [
    TenantFault("folder-is-a-file", lambda folder: folder.touch(), "File exists"),
    TenantFault("lock-is-a-folder", lambda folder: (folder / "lock").mkdir(parents=True), "Is a directory"),
    TenantFault("lock-links-to-dev-zero", _lock_link, "/lock: "),  # EINVAL now; ELOOP with O_NOFOLLOW
    TenantFault("heartbeats-is-a-file", _heartbeats_file, ""),
]


@pytest.mark.tmux
@pytest.mark.parametrize("case", TENANT_FAULTS, ids=lambda c: c.test_id)
def test_one_tenants_broken_state_folder_fails_only_that_tenant(minimal: Minimal, case: TenantFault) -> None:
    repo, state = minimal.repo, minimal.state
    other = SocketKey(None, f"{minimal.socket.name}-b")
    roster = (repo / "tenants/demo/roster.yaml").read_text().replace("tenant: demo", "tenant: other")
    write(repo, "tenants/other/roster.yaml", f"{roster}socket_name: {other.name}\n")
    state.mkdir()
    case.plant(state / "demo")
    try:
        tick = plan_tick(minimal.inputs())
        report, problems = apply_and_write_back(tick, None)

        mine = {o.action.agent: o for o in report.outcomes if o.action.tenant == "demo"}
        assert sorted(tmux.observe_socket(other).sessions) == ["enhancer", "orchestrator"]
        assert all(o.result == "done" for o in report.outcomes if o.action.tenant == "other")
        if case.detail:  # each action says which path and what is wrong with it
            assert all(o.result == "failed" and o.detail.startswith(f"state directory: {state / 'demo'}")
                       and case.detail in o.detail for o in mine.values()), mine
            assert tmux.observe_socket(minimal.socket).sessions == {}
        else:  # heartbeats unreadable: reported, and the agents still started
            assert all(o.result == "done" for o in mine.values())
            assert any(str(state / "demo" / "heartbeats") in p for p in tick.problems)
        assert "Traceback" not in "".join([*tick.problems, *problems])
    finally:
        kill_server(other.name or "")


@pytest.mark.tmux
def test_a_lock_linked_to_another_file_never_touches_that_file(minimal: Minimal) -> None:
    """A link planted where the tenant's lock belongs: taking the lock truncates and writes
    the file it opens, so following the link would destroy its target."""
    victim = minimal.state.parent / "precious.txt"
    victim.write_text("keep me\n")
    (minimal.state / "demo").mkdir(parents=True)
    (minimal.state / "demo" / "lock").symlink_to(victim)

    apply_plan(plan_tick(minimal.inputs()))

    assert victim.read_text() == "keep me\n"
