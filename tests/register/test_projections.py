"""TASKS.md and MISSION-MANIFEST.md from the register (docs/register.md, "Projections"):
the projection lease's holder renders them from every host's status documents, another
host leaves them alone, and the lease passes on when its holder stops renewing it.

Two hosts, each with its own copy of the fleet folder (no Git) and state directory: host
`demo` runs the minimal example's agents, host `b2` runs none, so what `b2` renders can
only have come from the register.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reconciler.core.render import parse_status, render_manifest, render_tasks
from reconciler.engine.gitops import UNVERSIONED
from reconciler.engine.run import RunResult, request_for, run
from reconciler.model.observed import SocketKey
from reconciler.spec.load import load_repo
from tests.e2e.repos import example_repo
from tests.register.support import REGISTER_BLOCK, URL_ENV, fleet, query

pytestmark = pytest.mark.tmux

PROJECTIONS = ("TASKS.md", "MISSION-MANIFEST.md")


@pytest.fixture
def folders(tmp_path: Path, tmux_socket: SocketKey, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The minimal example with a migrated register, copied once per host."""
    assert tmux_socket.name
    root = example_repo(tmp_path / "src", "minimal", tmux_socket.name)
    (root / "fleet.yaml").write_text((root / "fleet.yaml").read_text() + REGISTER_BLOCK)
    monkeypatch.setenv(URL_ENV, pg_url)
    done = fleet("register", "migrate", str(root), url=pg_url)
    assert done.returncode == 0, done.stderr
    copies = {}
    for host in ("demo", "b2"):
        copies[host] = tmp_path / host
        shutil.copytree(root, copies[host])
    return copies


def reconcile(folder: Path, host: str, state: Path) -> RunResult:
    result = run(request_for(folder, host, None, state / host, use_git=False))
    assert result.exit_code == 0, (result.warnings, result.errors)
    assert not [w for w in result.warnings if "register" in w], result.warnings
    return result


def holder(url: str) -> str:
    ((who,),) = query(url, "SELECT holder FROM fleet.leases WHERE scope = 'minimal' AND name = 'projections'")
    return str(who)


def expected(folder: Path, status_file: Path) -> dict[str, str]:
    """Both projections as rendering `status_file` (host demo's, the only one) gives them."""
    repo, statuses = load_repo(folder), [parse_status(status_file.read_text())]
    return {"TASKS.md": render_tasks(repo, statuses, UNVERSIONED),
            "MISSION-MANIFEST.md": render_manifest(repo, statuses, UNVERSIONED)}


def test_the_holder_renders_from_the_register_and_the_lease_passes_on(folders: dict[str, Path], tmp_path: Path,
                                                                      pg_url: str) -> None:
    demo, b2 = folders["demo"], folders["b2"]
    state = tmp_path / "state"
    reconcile(demo, "demo", state)  # the first to run takes the lease
    assert holder(pg_url) == "demo"
    status = demo / "status" / "demo" / "demo.yaml"
    assert {n: (demo / n).read_text() for n in PROJECTIONS} == expected(demo, status)

    reconcile(b2, "b2", state)  # not the holder: renders nothing
    assert holder(pg_url) == "demo"
    assert not any((b2 / n).exists() for n in PROJECTIONS)
    reconcile(demo, "demo", state)  # the holder renews
    assert holder(pg_url) == "demo"

    # the holder stops: its lease lapses unrenewed (set here rather than waited for)
    query(pg_url, "UPDATE fleet.leases SET expires_at = now() - interval '1 second'")
    reconcile(b2, "b2", state)
    assert holder(pg_url) == "b2"
    assert not (b2 / "status" / "demo").exists(), "b2 has no status file of demo's: the register is its source"
    assert {n: (b2 / n).read_text() for n in PROJECTIONS} == expected(b2, status)
    assert "| orchestrator | " in (b2 / "TASKS.md").read_text()

    for name in PROJECTIONS:
        (demo / name).unlink()
    reconcile(demo, "demo", state)  # back, but no longer the holder: leaves them alone
    assert holder(pg_url) == "b2"
    assert not any((demo / n).exists() for n in PROJECTIONS)


def test_without_the_register_every_host_renders_from_its_status_files(folders: dict[str, Path], tmp_path: Path,
                                                                      pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The register unreachable: the run renders both files as without a register, and its
    one register warning says so."""
    demo = folders["demo"]
    monkeypatch.setenv(URL_ENV, f"postgresql:///nowhere?host={tmp_path}/no-socket")
    result = run(request_for(demo, "demo", None, tmp_path / "state", use_git=False))
    assert result.exit_code == 0, result.errors
    said = [w for w in result.warnings if "register" in w]
    assert len(said) == 1 and "the register is unreachable" in said[0], result.warnings
    assert "TASKS.md and MISSION-MANIFEST.md were rendered from the status files" in said[0]
    status = demo / "status" / "demo" / "demo.yaml"
    assert {n: (demo / n).read_text() for n in PROJECTIONS} == expected(demo, status)
    assert query(pg_url, "SELECT count(*) FROM fleet.leases") == [(0,)]


def test_documents_from_the_register_are_checked() -> None:
    """A document that is damaged, or names another tenant or host than its row, is left
    out with a problem line; a good one comes back as the status it was written from."""
    from reconciler.core.render import status_document  # noqa: PLC0415
    from reconciler.engine.register_sync import documents  # noqa: PLC0415
    from reconciler.model.status import TenantStatus  # noqa: PLC0415

    good = TenantStatus("demo", "h1", "abc", "")
    read, problems = documents([("demo", "h1", status_document(good)), ("demo", "h2", status_document(good)),
                                ("demo", "h3", {"kind": "Status"})])
    assert read == [good]
    assert [p.split(" is ")[0].split(" names ")[0] for p in problems] == [
        "the register's status of demo on h2", "the register's status of demo on h3"]
