"""What a person sees of hostile values: `fleet validate`'s lines, and the text TASKS.md shows.

One real `fleet validate` process reads a repository with one tenant per hostile value,
each value both as an agent's lane (always refused, and echoed in the message) and as an
unknown key: exit 1, no traceback, and exactly the loader's located errors, one line
each; emoji codes print as written, and a `|` in a title stays in its TASKS.md cell.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from reconciler.core.render import render_tasks
from reconciler.spec.load import load_repo
from tests.security.hostile import FULL, hostile_values, write_repo


def hostile_tenants(pwned: Path) -> dict[str, dict[str, Any]]:
    """FULL's fleet.yaml, and tenant `tN` whose roster holds hostile value N twice."""
    documents: dict[str, dict[str, Any]] = {"fleet.yaml": FULL["fleet.yaml"]}
    for n, case in enumerate(hostile_values(pwned)):
        roster = copy.deepcopy(FULL["tenants/demo/roster.yaml"])
        roster.update({"tenant": f"t{n}", "socket_name": f"sock-{n}", case.value: "unknown key"})
        roster["agents"][0]["lane"] = case.value
        documents[f"tenants/t{n}/roster.yaml"] = roster
    return documents


def validate(repo: Path) -> subprocess.CompletedProcess[str]:
    """`fleet validate REPO` in a C locale on a narrow terminal: nothing may wrap or mangle."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "COLUMNS": "40"}
    return subprocess.run([sys.executable, "-m", "reconciler.cli", "validate", str(repo)],
                          capture_output=True, text=True, encoding="utf-8", timeout=60, env=env, check=False)


def test_validate_prints_each_hostile_error_on_its_own_located_line(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", hostile_tenants(tmp_path / "pwned"))

    done = validate(repo)

    assert done.returncode == 1 and done.stdout == "" and "Traceback" not in done.stderr, done.stderr
    expected = [str(e) for e in load_repo(repo).errors]
    assert len(expected) == 2 * len(hostile_values(tmp_path / "pwned"))
    *lines, summary = done.stderr.split("\n")[:-1]
    assert lines == expected
    assert all(re.match(rf"{re.escape(str(repo))}/tenants/t\d+/roster\.yaml:\d+:\d+: \S", line) for line in lines)
    assert summary == f"{len(expected)} errors in {repo}."
    assert not (tmp_path / "pwned").exists()


def test_validate_prints_emoji_codes_as_written(tmp_path: Path) -> None:
    documents = copy.deepcopy(FULL)
    documents["tenants/demo/roster.yaml"]["agents"][0]["lane"] = ":smile:"
    repo = write_repo(tmp_path, documents)
    done = validate(repo)
    assert done.returncode == 1
    assert done.stderr.split("\n")[0] == str(load_repo(repo).errors[0])


def test_a_pipe_in_a_title_stays_in_its_table_cell(tmp_path: Path) -> None:
    documents = copy.deepcopy(FULL)
    documents["tenants/demo/tasks.yaml"]["missions"][0]["tasks"][0]["title"] = "x | touch y"
    repo = load_repo(write_repo(tmp_path, documents))
    assert repo.ok, [str(e) for e in repo.errors]
    (row,) = [line for line in render_tasks(repo, [], revision="r1").splitlines() if line.startswith("| T1 |")]
    assert len(re.findall(r"(?<!\\)\|", row)) == 11, row  # 10 cells
