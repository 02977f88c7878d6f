"""What tenant users' runs said, relayed: their text framed and marked as theirs, their
JSON folded into this run's document, their errors as one line each.

A user's output is untrusted (engine/untrusted.py): no control character reaches the
terminal, and no row about another tenant reaches the document.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from reconciler.model.user_run import UserRun


def relay_users(out: Console, err: Console, runs: Sequence[UserRun], json_output: bool, doc: Any) -> None:
    """Print what each user's run said (text), or fold it into `doc` (json)."""
    if not runs:  # the usual case: nothing to import for it
        return
    from reconciler.engine.untrusted import merge_documents, printable, recount  # noqa: PLC0415

    for run in runs:
        if not json_output and run.stdout:
            out.print(f"[bold]── tenant {', '.join(run.tenants)}, as user {run.user} ──[/]", highlight=False)
            for line in printable(run.stdout).splitlines():  # marked as relayed: no fake header passes
                sys.stdout.write(f"│ {line}\n")
        elif isinstance(doc, list) and isinstance(run.document, list):
            doc.extend(run.document)
        elif isinstance(doc, dict) and isinstance(run.document, dict):
            merge_documents(doc, run.document)
            recount(doc)
        for line in printable(run.stderr).splitlines():
            err.print(f"[{run.user}] {line}", highlight=False, markup=False)
        for problem in run.problems:
            err.print(f"error: {printable(problem)}", highlight=False, markup=False)
