"""The CLI contract of docs/reference.md names every command `fleet --help` shows, and
no command that does not exist, so the reference keeps up with the CLI.

The commands are read from the help a user sees (`python -m reconciler ... --help`, the
same program as `fleet`), not from the code that builds it, so the test holds wherever
the command definitions live.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.spec.support import REPO_ROOT

REFERENCE = REPO_ROOT / "docs" / "reference.md"
#: A row of the help's "Commands" panel: `│ name   what it does │`.
COMMAND_ROW = re.compile(r"^│ (?P<name>[a-z][a-z0-9-]*)\s{2,}")


def subcommands(path: tuple[str, ...]) -> list[str]:
    """The commands `fleet PATH --help` lists in its Commands panel (none for a leaf)."""
    result = subprocess.run(
        [sys.executable, "-m", "reconciler", *path, "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}, check=False,
    )
    assert result.returncode == 0, f"fleet {' '.join(path)} --help failed: {result.stderr}"
    names, in_panel = [], False
    for line in result.stdout.splitlines():
        if line.startswith("╭"):
            in_panel = " Commands " in line
        elif in_panel and (row := COMMAND_ROW.match(line)):
            names.append(row["name"])
    return names


def help_commands() -> list[str]:
    """Every leaf command, e.g. `validate`, `agent send`, walking groups one level deep at a time."""
    top = subcommands(())
    assert top, "fleet --help lists no commands; has its layout changed?"
    with ThreadPoolExecutor(max_workers=4) as pool:
        children = dict(zip(top, pool.map(lambda name: subcommands((name,)), top), strict=True))
    return sorted(f"{name} {child}" if child else name for name in top for child in (children[name] or [""]))


def cli_section() -> str:
    assert REFERENCE.is_file(), f"{REFERENCE} is missing"
    text = REFERENCE.read_text(encoding="utf-8")
    found = re.search(r"^## CLI contract\n(?P<body>.*?)(?=^## )", text, flags=re.DOTALL | re.MULTILINE)
    assert found, "docs/reference.md has no `## CLI contract` section"
    return found["body"]


def documented_commands(section: str) -> set[str]:
    """The command of each table row: `fleet` and the lower-case words before REPO or an option."""
    commands = set()
    for row in re.finditer(r"^\| `fleet (?P<words>[^`]*)`", section, flags=re.MULTILINE):
        words = []
        for word in row["words"].split():
            if not re.fullmatch(r"[a-z][a-z0-9-]*", word):
                break
            words.append(word)
        commands.add(" ".join(words))
    return commands


@pytest.fixture(scope="module")
def commands() -> list[str]:
    return help_commands()


def test_every_command_of_fleet_help_is_in_the_cli_contract(commands: list[str]) -> None:
    assert {"validate", "reconcile", "agent send", "budget set-usage"} <= set(commands), commands
    missing = sorted(set(commands) - documented_commands(cli_section()))
    assert not missing, f"docs/reference.md's CLI contract has no row for: {', '.join('fleet ' + c for c in missing)}"


def test_the_cli_contract_names_no_command_that_does_not_exist(commands: list[str]) -> None:
    unknown = sorted(documented_commands(cli_section()) - set(commands))
    assert not unknown, f"docs/reference.md's CLI contract shows commands fleet does not have: {unknown}"
