"""fleet.yaml `register:` (docs/register.md): where the connection string comes from is
configured, the string itself never; one written in any spec file is an error at its place."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.spec.load import load_repo
from tests.spec.corpus import BASE_FLEET, BASE_ROSTER, FLEET, ROSTER
from tests.spec.support import build_repo, error_lines

DSN_HINT = "this is a database connection string"


def with_register(block: str) -> str:
    return BASE_FLEET + block


def test_register_from_env_loads(tmp_path: Path) -> None:
    repo = load_repo(build_repo(tmp_path, {FLEET: with_register("register:\n  url_from:\n    env: FLEET_REGISTER_URL\n")}))
    assert repo.ok, error_lines(repo)
    assert repo.fleet is not None and repo.fleet.register is not None
    assert repo.fleet.register.url_from.env == "FLEET_REGISTER_URL"


def test_no_register_is_none(tmp_path: Path) -> None:
    repo = load_repo(build_repo(tmp_path))
    assert repo.fleet is not None and repo.fleet.register is None


class Case(NamedTuple):
    test_id: str
    rel: str
    text: str
    expected: str  # the start of the one error line


FLEET_LINES = len(BASE_FLEET.splitlines())
CASES = [
    Case("uri-as-value", FLEET, with_register("register:\n  url_from:\n    env: postgresql://ops:pw@db/fleet\n"),
         f"fleet.yaml:{FLEET_LINES + 3}:10: {DSN_HINT}"),
    Case("uri-in-a-comment", FLEET, with_register("# register: postgres://ops:pw@db.example:5432/fleet\n"),
         f"fleet.yaml:{FLEET_LINES + 1}:13: {DSN_HINT}"),
    Case("keywords-in-an-env-value", ROSTER,
         BASE_ROSTER.replace("role: orchestrator", "role: orchestrator\n    env: {DB: \"host=db dbname=fleet password=x\"}", 1),
         "tenants/demo/roster.yaml:"),
    Case("both-sources", FLEET, with_register("register:\n  url_from: {env: A, file: /etc/a}\n"),
         f"fleet.yaml:{FLEET_LINES + 2}:13: `url_from`: `url_from` needs exactly one of"),
    Case("neither-source", FLEET, with_register("register:\n  url_from: {}\n"),
         f"fleet.yaml:{FLEET_LINES + 2}:13: `url_from`: `url_from` needs exactly one of"),
    Case("relative-file", FLEET, with_register("register:\n  url_from: {file: register.url}\n"),
         f"fleet.yaml:{FLEET_LINES + 2}:20: `file`: write an absolute path"),
    Case("url-key", FLEET, with_register("register:\n  url: x\n  url_from: {env: A}\n"),
         f"fleet.yaml:{FLEET_LINES + 2}:3: unknown key `url`"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.test_id)
def test_register_mistakes_are_located(tmp_path: Path, case: Case) -> None:
    repo = load_repo(build_repo(tmp_path, {case.rel: case.text}))
    lines = error_lines(repo)
    assert len(lines) == 1, lines
    assert lines[0].startswith(case.expected), lines[0]
    assert "pw@" not in lines[0] and "password=x" not in lines[0], "the error must not repeat the string"


def test_validate_cli_refuses_a_dsn(tmp_path: Path) -> None:
    """Exit 1, `file:line:col:`, no traceback, and the string is not echoed."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    root = build_repo(tmp_path, {FLEET: with_register("# postgresql://ops:hunter2@db/fleet\n")})
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(root)], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 1
    assert f"fleet.yaml:{FLEET_LINES + 1}:3: {DSN_HINT}" in done.stdout + done.stderr
    assert "hunter2" not in done.stdout + done.stderr and "Traceback" not in done.stderr


ENV_FROM = "role: orchestrator\n    env_from:\n      - {name: OK, env: GH_TOKEN}\n      - {name: DB, SOURCE}"


@pytest.mark.parametrize(("register", "source", "expected"), [
    ("env: FLEET_REGISTER_URL", "env: FLEET_REGISTER_URL", "$FLEET_REGISTER_URL is the register's connection"),
    ("env: FLEET_REGISTER_URL", "env: FLEET_REGISTER_ADDRESS", "$FLEET_REGISTER_ADDRESS is the register's address"),
    ("file: /etc/fleet/register.url", "file: /etc/fleet/register.url", "/etc/fleet/register.url is the "
     "register's connection string; an agent never reads it"),
    ("env: X", "file: ~/.config/mosaic-fleet/register.url", "~/.config/mosaic-fleet/register.url is a "
     "tenant user's register credentials"),
], ids=["url-env", "address-env", "url-file", "user-file"])
def test_no_agent_reads_the_registers_connection_string(tmp_path: Path, register: str, source: str,
                                                         expected: str) -> None:
    """env_from naming where the register's URL is would hand it to a pane: an error at its line."""
    roster = BASE_ROSTER.replace("role: orchestrator", ENV_FROM.replace("SOURCE", source), 1)
    repo = load_repo(build_repo(tmp_path, {FLEET: with_register(f"register:\n  url_from:\n    {register}\n"),
                                           ROSTER: roster}))
    lines = error_lines(repo)
    assert len(lines) == 1, lines
    assert lines[0].startswith("tenants/demo/roster.yaml:10:"), lines[0]
    assert expected in lines[0], lines[0]
    without = load_repo(build_repo(tmp_path / "without", {ROSTER: roster}))
    assert without.ok, error_lines(without)  # without a register the names mean nothing special
