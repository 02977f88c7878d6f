"""`fleet validate` and `fleet schema`: the specs checked, and their JSON Schemas written.

Neither observes nor changes a host; validate prints every problem as
`file:line:col: message` and exits 1 when there is one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.common import Output, OutputOpt, RepoArg, command, err, group, out
from reconciler.engine.run import check_repo
from reconciler.spec.load import load_repo
from reconciler.spec.schemas import render_schemas
from reconciler.views.plan import errors_json, print_errors, to_json

app = group()


@command(app)
def validate(repo: RepoArg, output: OutputOpt = Output.TEXT) -> None:
    """Check every spec in REPO; print each problem as file:line:col: message.

    Example: fleet validate examples/fleets/coding
    """
    loaded = load_repo(check_repo(repo))
    if output == Output.JSON:
        print(to_json({"valid": loaded.ok, "tenants": sorted(loaded.tenants),
                       "invalid_tenants": sorted(loaded.invalid_tenants), "errors": errors_json(loaded.errors)}))
    print_errors(err, loaded.errors)
    if loaded.errors:
        n = len(loaded.errors)
        err.print(f"{n} error{'s' if n != 1 else ''} in {repo}.", highlight=False)
        raise typer.Exit(1)
    if output == Output.TEXT:
        agents = sum(len(t.roster.agents) for t in loaded.tenants.values())
        lanes = sum(len(t.roster.lanes) for t in loaded.tenants.values())
        pools = f", {lanes} lane(s) of up to {sum(lane.max for t in loaded.tenants.values() for lane in t.roster.lanes)} " \
                "worker(s)" if lanes else ""
        out.print(f"{repo}: valid ({len(loaded.tenants)} tenant(s), {agents} agent(s){pools}).", highlight=False)


@command(app)
def schema(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the *.schema.json files.")] = Path("specs"),
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when the files on disk are stale; write nothing.")] = False,
) -> None:
    """Write the JSON Schemas of every kind (for editors and CI).

    Example: fleet schema --out specs --check
    """
    stale = []
    schemas = render_schemas()
    for name, text in schemas.items():
        path = out_dir / name
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            from reconciler.drivers.files import write_atomic  # noqa: PLC0415

            write_atomic(path, text)
    if check and stale:
        for path in stale:
            err.print(f"{path}: stale; run `fleet schema --out {out_dir}`", highlight=False)
        raise typer.Exit(1)
    verb = "are current" if not stale else ("written" if not check else "stale")
    out.print(f"{len(schemas)} schemas in {out_dir} {verb}.", highlight=False)
