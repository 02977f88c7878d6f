"""drivers/register.py and drivers/register_spool.py on their own: a real register, real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.drivers import register as pg
from reconciler.drivers import register_spool as spool
from reconciler.model.layout import StateLayout
from reconciler.register.rows import Batch, Row
from reconciler.spec.models import UrlFrom
from tests.register.support import query


def batch(seq: int, health: str) -> Batch:
    return Batch(seq, "h", f"r{seq}", "2026-12-01T00:00:00+00:00", ("t",), upserts=(Row("agents", "t", "a", {
        "role": "coder", "lifecycle": "core", "desired_model": "m", "health": health}),))


def test_a_replay_is_skipped_and_a_fresh_batch_behind_the_clock_is_not(pg_url: str) -> None:
    with pg.connect(pg_url) as conn:
        pg.migrate(conn, pg.migrations())
        assert pg.write_batch(conn, batch(100, "healthy"))
        assert not pg.write_batch(conn, batch(100, "replayed")), "a batch the register holds is skipped"
        assert pg.write_batch(conn, batch(50, "after a clock step back"), fresh=True)
    assert query(pg_url, "SELECT health FROM fleet.agents") == [("after a clock step back",)]
    assert query(pg_url, "SELECT last_batch FROM fleet.hosts") == [(101,)]


def test_a_damaged_spool_line_is_skipped_and_said(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    spool.write_spool(layout, [batch(1, "healthy"), batch(2, "healthy")])
    path = layout.register_spool()
    lines = path.read_text().splitlines()
    planted = lines[0].replace('"agents"', '"pg_authid"')
    path.write_text("\n".join([planted, "{not json", lines[1]]) + "\n")
    batches, problems = spool.read_spool(layout)
    assert [b.seq for b in batches] == [2]
    assert len(problems) == 2 and "unknown table 'pg_authid'" in problems[0]


def test_spool_and_digest_are_private(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    spool.write_spool(layout, [batch(1, "healthy")])
    assert layout.register_spool().stat().st_mode & 0o077 == 0
    assert layout.register_spool().parent.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_a_url_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "register.url"
    path.write_text("postgresql:///fleet\n")
    path.chmod(mode)
    with pytest.raises(pg.RegisterError, match="readable by others") as caught:
        pg.read_url(UrlFrom(file=str(path)))
    assert "postgresql" not in str(caught.value)
    path.chmod(0o600)
    assert pg.read_url(UrlFrom(file=str(path))) == "postgresql:///fleet"


def test_a_tenant_users_url_is_its_own_file_else_the_address(tmp_path: Path) -> None:
    """tenant_url: the user's 0600 file wins; a readable or foreign one is refused; else the
    address root handed over; else a message naming both."""
    import os  # noqa: PLC0415

    env = {"FLEET_REGISTER_ADDRESS": "host=/run/pg dbname=fleet"}
    assert pg.tenant_url(tmp_path, env) == "host=/run/pg dbname=fleet"
    with pytest.raises(pg.RegisterError, match=r"no register address.*register\.url"):
        pg.tenant_url(tmp_path, {})
    own = tmp_path / ".config" / "mosaic-fleet" / "register.url"
    own.parent.mkdir(parents=True)
    own.write_text("postgresql://me:pw@db.example/fleet\n")
    own.chmod(0o640)
    with pytest.raises(pg.RegisterError, match=r"readable by others \(mode 0640\); chmod 600"):
        pg.tenant_url(tmp_path, env)
    own.chmod(0o600)
    assert pg.tenant_url(tmp_path, env) == "postgresql://me:pw@db.example/fleet"
    if os.geteuid() == 0:
        os.chown(own, 65534, 65534)
        with pytest.raises(pg.RegisterError, match="owned by uid 65534, not by this user"):
            pg.tenant_url(tmp_path, env)


def test_the_address_keeps_where_and_drops_who() -> None:
    assert pg.address_of("postgresql://ops:pw@db1.example:6543/fleet?sslmode=verify-full&sslkey=/root/k"
                         "&target_session_attrs=read-write") == (
        "host=db1.example port=6543 dbname=fleet sslmode=verify-full target_session_attrs=read-write")
    assert pg.address_of("host=/var/run/postgresql dbname=fleet user=ops password=pw passfile=/root/.pgpass") == (
        "host=/var/run/postgresql dbname=fleet")
    with pytest.raises(pg.RegisterError, match="cannot be parsed") as caught:
        pg.address_of("postgresql://ops:pw@db/fleet?nonsense=1")
    assert "pw" not in str(caught.value)
