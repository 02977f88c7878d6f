"""pytest plugin: a throwaway Postgres cluster per test session, from Debian's package.

`initdb` in a temporary folder, the server listening only on a Unix socket there (no
TCP), trust authentication on that socket; each test gets a fresh database. initdb and
pg_ctl refuse to run as root, so as root the cluster belongs to the `postgres` user
that Debian's package creates (`runuser -u postgres`). Where the server binaries are
missing the tests skip, except in CI (`CI` set), where they fail: `./dev setup`
installs them.

`make_peer_cluster` starts another cluster (per test) whose socket is open to every
user and whose pg_hba.conf lets the given Linux users in by peer authentication (each
as the role of its own name), while the superuser and every other role keep trust:
the tenant-role tests need real peer authentication, the other tests must not.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class Cluster:
    """One running cluster: its folder, socket folder and the superuser to connect as."""

    bindir: Path
    root: Path
    owner: str | None  # the unprivileged user running it (None: this process's own user)
    superuser: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql:///{dbname}?host={quote(str(self.socket_dir), safe='')}&user={user or self.superuser}"

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        full = [str(self.bindir / argv[0]), *argv[1:]]
        if self.owner is not None:
            full = ["runuser", "-u", self.owner, "--", *full]
        return subprocess.run(full, capture_output=True, text=True, check=False, timeout=120,
                              stdin=subprocess.DEVNULL, cwd="/")

    def start(self) -> None:
        done = self._run(["pg_ctl", "-D", str(self.data), "-w", "-l", str(self.root / "server.log"), "-o",
                          f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c log_connections=on", "start"])
        assert done.returncode == 0, done.stdout + done.stderr + self.log()

    def stop(self) -> None:
        done = self._run(["pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop"])
        assert done.returncode == 0, done.stdout + done.stderr

    def log(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(statement.encode())

    def new_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.sql(f"CREATE DATABASE {name}")
        return name


def _make_cluster(peer: Sequence[str] = ()) -> Cluster:
    bindir = _bindir()
    if bindir is None:
        message = "Postgres server binaries missing (initdb): ./dev setup installs Debian's postgresql"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("psycopg")
    owner: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the cluster as")
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
    (root / "sock").mkdir()
    if owner is not None:
        account = pwd.getpwnam(owner)
        for path in (root, root / "sock"):
            os.chown(path, account.pw_uid, account.pw_gid)
    cluster = Cluster(bindir, root, owner, superuser=owner or pwd.getpwuid(os.geteuid()).pw_name)
    done = cluster._run(["initdb", "-D", str(cluster.data), "-U", cluster.superuser, "--auth=trust",
                         "--no-sync", "-E", "UTF8", "--locale=C"])
    assert done.returncode == 0, done.stdout + done.stderr
    if peer:
        _open_to_peers(cluster, peer)
    cluster.start()
    return cluster


def _open_to_peers(cluster: Cluster, peer: Sequence[str]) -> None:
    """pg_hba.conf: the superuser by trust, `peer` users by peer authentication (first
    match wins), every other role by trust; the socket folder reachable by every user."""
    lines = [f'local all "{cluster.superuser}" trust', *(f'local all "{user}" peer' for user in peer), "local all all trust"]
    hba = cluster.data / "pg_hba.conf"
    hba.write_text("\n".join(lines) + "\n")
    if cluster.owner is not None:
        account = pwd.getpwnam(cluster.owner)
        os.chown(hba, account.pw_uid, account.pw_gid)
    for path in (cluster.root, cluster.socket_dir):
        path.chmod(0o755)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = _make_cluster()
    try:
        yield cluster
    finally:
        with contextlib.suppress(AssertionError):  # already stopped by a test: never hide its own failure
            cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A fresh, empty database's connection string (the cluster's superuser)."""
    return pg_cluster.url(pg_cluster.new_database())


@pytest.fixture
def make_peer_cluster() -> Iterator[Callable[[Sequence[str]], Cluster]]:
    """A factory of clusters letting the given Linux users in by peer authentication
    (see the module's docstring); each stopped and removed after the test."""
    made: list[Cluster] = []

    def make(peer: Sequence[str]) -> Cluster:
        cluster = _make_cluster(peer)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            with contextlib.suppress(AssertionError):
                cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
