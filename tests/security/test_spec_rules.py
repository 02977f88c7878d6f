"""The validation rules the hostile-value tests brought in, case by case.

Paths an agent uses (workdir, an env_from file) are absolute or under `~/`: tmux
resolves a relative `-c` against its client's folder, the reconciler's on one run and
the unit's on the next. A command template's arguments hold no NUL, which no program can
receive. A persona may have many lines, but no other control character. Messages stay
one short printable line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.spec.load import load_repo
from tests.security.hostile import FULL, field_text, spec_fields, write_repo

FIELDS = {str(f): f for f in spec_fields()}


class Case(NamedTuple):
    test_id: str
    field: str
    value: str
    says: str | None
    """A fragment of the one error it must give; None: the value is valid."""


RELATIVE = "a relative path depends on the folder the reconciler runs in"
CASES = [
    Case("workdir-relative", "Roster.agents[].workdir", "src/stack", RELATIVE),
    Case("workdir-dot-dot", "Roster.agents[].workdir", "../../etc", RELATIVE),
    Case("workdir-option-like", "Roster.agents[].workdir", "-rf", RELATIVE),
    Case("workdir-other-users-home", "Roster.agents[].workdir", "~jarvis/src", RELATIVE),
    Case("role-workdir-relative", "Role.defaults.workdir", "work", RELATIVE),
    Case("secret-file-relative", "Roster.agents[].env_from[].file", "key.txt", RELATIVE),
    Case("workdir-absolute", "Roster.agents[].workdir", "/srv/a b/../c", None),
    Case("workdir-home", "Roster.agents[].workdir", "~", None),
    Case("workdir-under-home", "Roster.agents[].workdir", "~/src/$(x)", None),
    Case("secret-file-under-home", "Roster.agents[].env_from[].file", "~/.config/k", None),
    Case("command-nul", "Fleet.runtimes.stub.command", "sleep\x00x 600", "NUL character in the argument 'sleep\\x00x'"),
    Case("command-script-in-quotes", "Fleet.runtimes.stub.command", "sh -c 'set -e\nexec agent'", None),
    Case("command-lines-between-words", "Fleet.runtimes.stub.command", "fleet-stub-agent\n  --model\t{model}", None),
    Case("persona-of-many-lines", "Role.persona", "You review.\n\tBe brief.\n", None),
    Case("persona-escape", "Role.persona", "You \x1b[8mhide\x1b[0m", "other than tab and newline"),
    Case("persona-nul", "Role.persona", "a\x00b", "other than tab and newline"),
    Case("persona-rtl-override", "Role.persona", "You review.\n\u202eeno siht daer", "bidirectional controls"),
    Case("alias-rtl-override", "Roster.agents[].alias", "admin\u202egnp.exe", "bidirectional controls"),
    Case("title-isolate", "Tasks.missions[].title", "a\u2067b", "bidirectional controls"),
    Case("alias-arabic-letter-mark", "Roster.agents[].alias", "x\u061cy", "bidirectional controls"),
    Case("title-line-separator", "Tasks.missions[].title", "one\u2028two", "U+2028"),
    Case("persona-paragraph-separator", "Role.persona", "one\u2029two", None),
    Case("title-combining-marks-and-rtl-script", "Tasks.missions[].title", "e\u0301 \u05e9\u05dc\u05d5\u05dd", None),
    Case("unknown-key-in-a-runtime", "Fleet.runtimes.stub.<unknown key>", "comand", "did you mean `command`?"),
    Case("unknown-key-lists-a-runtimes-keys", "Fleet.runtimes.stub.<unknown key>", "x", "allowed keys here: adapter, command, ladder"),
    Case("unknown-key-escaped", "Roster.<unknown key>", "a\nb\x1b]0;t\x07", "unknown key `a\\nb\\x1b]0;t\\x07`"),
    Case("long-value-cut-short", "Roster.agents[].lane", "x" * 10240, "x'... (10240 characters) is not allowed"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.test_id for c in CASES])
def test_rule(case: Case, tmp_path: Path) -> None:
    field = FIELDS[case.field]
    root = write_repo(tmp_path, FULL)
    text, line = field_text(field, case.value)
    (root / field.file).write_text(text, encoding="utf-8")
    repo = load_repo(root)
    if case.says is None:
        assert repo.ok, [str(e) for e in repo.errors]
        return
    assert [(e.path, e.line) for e in repo.errors] == [(str(root / field.file), line)], [str(e) for e in repo.errors]
    message = repo.errors[0].message
    assert case.says in message
    assert len(message) < 300 and message.isprintable()

