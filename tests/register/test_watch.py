"""`fleet reconcile --watch` wakes on the register's NOTIFY: two hosts' watch loops, one
register, intervals of 300 s and no remote polling, so a tick after the first can only
come from another host's write (or the listener coming back after Postgres restarted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.postgres import Cluster
from tests.plugins.tmux_server import retry_until
from tests.register.support import query
from tests.register.test_multi_host import world  # noqa: F401  (the fixture: clones, a bare remote, a register)

pytestmark = pytest.mark.tmux


def start_watch(clone: Path, host: str, root: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A host's watch loop, its stderr in a file the test reads as it goes."""
    log = root / f"watch-{host}.err"
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600", "TMUX_TMPDIR": str(root / "tmux" / host)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "reconcile", str(clone), "--watch", "--host", host,
             "--state-dir", str(root / "state" / host), "--interval", "300s", "--fetch-every", "1h"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    return proc, log


def listeners(url: str) -> int:
    return len(query(url, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'fleet-watch' "
                          "AND datname = current_database()"))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_write_by_one_host_wakes_the_other_hosts_watch_loop(world: tuple[Path, Path, dict[str, Path], str],  # noqa: F811
                                                               tmp_path: Path, pg_url: str,
                                                               pg_cluster: Cluster) -> None:
    _bare, _person, clones, _socket = world
    procs: list[subprocess.Popen[bytes]] = []
    try:
        b, b_log = start_watch(clones["h1"], "h1", tmp_path)
        procs.append(b)
        # h1's first tick ran (the enhancer spawned, registered) and its LISTEN connection is up
        assert retry_until(lambda: "tick: interval" in b_log.read_text() and listeners(pg_url) == 1, 60), b_log.read_text()
        a, a_log = start_watch(clones["h0"], "h0", tmp_path)
        procs.append(a)
        # h0's first tick spawns the orchestrator and writes it: its NOTIFY wakes h1 long before its interval
        assert retry_until(lambda: "tick: register change (h0)" in b_log.read_text(), 60), b_log.read_text()
        assert retry_until(lambda: listeners(pg_url) == 2, 60)

        # Postgres restarts: both listeners come back by themselves, and wake once for what they may have missed
        pg_cluster.stop()
        pg_cluster.start()
        assert retry_until(lambda: listeners(pg_url) == 2, 60), b_log.read_text()
        assert retry_until(lambda: "tick: register reconnected" in b_log.read_text(), 30), b_log.read_text()
        seen = b_log.read_text().count("tick: register change (h0)")
        query(pg_url, "SELECT pg_notify('fleet_register', '{\"host\": \"h0\", \"run\": \"r\"}')")
        assert retry_until(lambda: b_log.read_text().count("tick: register change (h0)") > seen, 30), b_log.read_text()
    finally:
        stop(procs)
    for proc, log in zip(procs, (b_log, a_log), strict=True):
        err = log.read_text()
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
    b_err = b_log.read_text()
    assert "register change (h1)" not in b_err  # its own writes never wake it
    assert b_err.count("tick: interval") == 1, b_err  # no interval came due: every other tick was the register's


def test_a_notification_names_another_host_or_is_dropped() -> None:
    from reconciler.drivers.register_listen import other_host  # noqa: PLC0415

    assert other_host('{"host": "h0", "run": "r"}', "h1") == "h0"
    assert other_host('{"host": "h1", "run": "r"}', "h1") is None  # our own write: no self-wake
    assert other_host("not json", "h1") == "?"  # someone else's hint all the same


def test_without_a_register_nothing_listens() -> None:
    from reconciler.engine.register_wake import RegisterWake  # noqa: PLC0415

    wake = RegisterWake()
    wake.follow(None, "h0")
    assert wake.reason() == ""
    wake.close()
