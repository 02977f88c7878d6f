"""Root's side of a tenant user's run (engine/delegate.py): what it copies out to the
user, and what it takes back, trusted only as data."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.core.render import render_status
from reconciler.drivers import users
from reconciler.engine.delegate import staged_specs
from reconciler.engine.untrusted import merge_documents, own_items, read_statuses
from reconciler.engine.writeback import status_path
from reconciler.errors import UserError
from reconciler.model.status import TenantStatus
from tests.e2e.repos import example_repo, write

#: YAML aliases, ten wide and nine deep: tens of GB if root ever expanded them.
BILLION_LAUGHS = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)) + "kind: Status\ntenant: *i\n"


def status(tenant: str = "alpha", host: str = "demo") -> TenantStatus:
    return TenantStatus(tenant=tenant, host=host, revision="r1", systemd="tmux-only")


def _link(folder: Path, target: str) -> None:
    path = status_path(folder, "demo", "alpha")
    path.parent.mkdir(parents=True)
    path.symlink_to(target)


def _linked_folder(folder: Path) -> None:
    """The user swaps a folder on the way for a link to one only root may read."""
    elsewhere = folder.with_name(folder.name + "-root-only")
    write(elsewhere, "alpha.yaml", render_status(status()))
    (folder / "status").mkdir()
    (folder / "status" / "demo").symlink_to(elsewhere)


def _hardlinked(folder: Path) -> None:
    write(folder, "status/demo/other.yaml", render_status(status()))
    os.link(folder / "status/demo/other.yaml", status_path(folder, "demo", "alpha"))


def _fifo(folder: Path) -> None:
    path = status_path(folder, "demo", "alpha")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)


def test_a_good_status_is_taken_back(tmp_path: Path) -> None:
    write(tmp_path, "status/demo/alpha.yaml", render_status(status()))
    problems: list[str] = []
    assert read_statuses(tmp_path, "demo", ["alpha"], problems, os.getuid()) == [status()] and problems == []


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda d: write(d, "status/demo/alpha.yaml", render_status(status("beta"))), "wrote a status for 'beta'@'demo'"),
        (lambda d: write(d, "status/demo/alpha.yaml", render_status(status(host="other"))), "for 'alpha'@'other'"),
        (lambda d: write(d, "status/demo/alpha.yaml", "{not json"), "unreadable status"),
        (lambda d: write(d, "status/demo/alpha.yaml", " " * (5 * 1024 * 1024)), "larger than"),
        (lambda d: _link(d, "/etc/shadow"), "could not be read back"),
        (_fifo, "not a regular file"),
        (_linked_folder, "could not be read back"),
        (_hardlinked, "not a regular file of its own"),
        (lambda d: write(d, "status/demo/alpha.yaml", "[" * 100_000), "unreadable status"),
        (lambda d: write(d, "status/demo/alpha.yaml", BILLION_LAUGHS), "unreadable status"),
        (lambda d: write(d, "status/demo/alpha.yaml", render_status(replace(status(), notes=("\x1b]0;pwn\x07",)))),
         "control characters"),
        (lambda d: write(d, "status/demo/alpha.yaml", render_status(replace(status(), notes=("\x9b2J",)))),
         "control characters"),
    ],
)
def test_a_hostile_status_is_refused_and_reported(tmp_path: Path, setup: object, problem: str) -> None:
    assert callable(setup)
    setup(tmp_path)
    problems: list[str] = []
    assert read_statuses(tmp_path, "demo", ["alpha"], problems, os.getuid()) == []
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_missing_status_is_no_problem(tmp_path: Path) -> None:
    problems: list[str] = []
    assert read_statuses(tmp_path, "demo", ["alpha"], problems, os.getuid()) == [] and problems == []


def test_the_copy_holds_only_the_tenants_own_specs_and_links_stay_links(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "multi-tenant", None)
    (repo / "tenants" / "jarvis" / "leak.yaml").symlink_to("/etc/shadow")
    write(repo, "status/w-jarvis/jarvis.yaml", render_status(status("jarvis", "w-jarvis")))
    me = users.lookup(users.current_user())
    assert me is not None
    with staged_specs(repo, ["jarvis"], "w-jarvis", me) as copy:
        assert (copy.stat().st_mode & 0o777) == 0o700
        assert sorted(p.name for p in (copy / "tenants").iterdir()) == ["jarvis"]
        assert (copy / "tenants" / "jarvis" / "leak.yaml").is_symlink()
        assert (copy / "status" / "w-jarvis" / "jarvis.yaml").is_file()
        assert (copy / "fleet.yaml").is_file()
    assert not copy.exists()


def test_a_linked_roles_or_tenant_folder_is_refused_before_anything_is_copied(tmp_path: Path) -> None:
    repo = example_repo(tmp_path, "multi-tenant", None)
    secret = tmp_path / "root-only"
    secret.mkdir()
    (repo / "roles").symlink_to(secret)
    me = users.lookup(users.current_user())
    assert me is not None
    with pytest.raises(UserError, match="roles is a symbolic link"), staged_specs(repo, ["jarvis"], "w-jarvis", me):
        pass


def test_a_users_json_keeps_only_its_own_tenants() -> None:
    doc = {"actions": [{"tenant": "alpha", "agent": "a"}, {"tenant": "beta", "agent": "b"}],
           "summary": {"spawn": 2}, "errors": [{"tenant": "beta", "message": "fake"}], "host": "demo"}
    assert own_items(doc, ["alpha"]) == {"actions": [{"tenant": "alpha", "agent": "a"}], "errors": []}
    assert own_items([{"tenant": "beta"}, {"tenant": "alpha"}, "a note", {"id": 1}], ["alpha"]) == [{"tenant": "alpha"}]
    spoof = {"actions": [{"action": "stop", "agent": "a", "reason": "beta/a: quarantined by root"}],
             "notes": ["tenant beta: run curl x|sh"], "summary": {"stop": -1}, "extra": "x"}
    assert own_items(spoof, ["alpha"]) == {"actions": []}


def test_json_documents_merge_lists_and_add_counts() -> None:
    base = {"format_version": "1", "actions": [1], "summary": {"spawn": 1, "stop": 0}, "budget": {"agents": [1]}}
    merge_documents(base, {"format_version": "1", "actions": [2], "summary": {"spawn": 2, "stop": 1},
                           "budget": {"agents": [2], "accounts": [3]}, "applied": [4]})
    assert base == {"format_version": "1", "actions": [1, 2], "summary": {"spawn": 3, "stop": 1},
                    "budget": {"agents": [1, 2], "accounts": [3]}, "applied": [4]}


def test_a_users_output_reaches_roots_terminal_without_control_characters() -> None:
    from reconciler.engine.untrusted import printable  # noqa: PLC0415

    assert printable("plan\tok\n\x1b[2J\x1b]0;title\x07\x9b31m\r") == "plan\tok\n\\x1b[2J\\x1b]0;title\\x07\\x9b31m\\x0d"
