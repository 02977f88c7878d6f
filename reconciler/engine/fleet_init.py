"""`fleet init`: a new fleet repository from one of the bundled examples, with its first commit.

Beside the loop, not in it: run once by a person, before any `fleet reconcile`. It copies
an example (package data, or the project checkout's examples/fleets), adds the starter
role library (the `starter` example's roles/) when the example has none, writes the JSON
Schemas the YAML modelines point at, checks the result with the loader and commits it
through drivers/git. On any failure what it wrote is removed again. Rewriting modelines
is pure and doctested.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from reconciler.drivers import git
from reconciler.drivers.files import write_atomic
from reconciler.engine.install import Report
from reconciler.errors import UserError
from reconciler.spec.load import load_repo
from reconciler.spec.schemas import render_schemas

#: Where `fleet init` finds examples: inside the package when installed from a wheel
#: (package data), else in the project checkout next to the package.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_EXAMPLE_DIRS = (_PACKAGE_DIR / "examples", _PACKAGE_DIR.parent / "examples" / "fleets")
#: Where `fleet init` writes the JSON Schemas that the YAML modelines point at.
SCHEMA_DIR = Path(".fleet") / "schemas"
#: The example whose roles/ is the starter role library `fleet init` seeds.
STARTER_ROLES = "starter"
_MODELINE = re.compile(r"(?m)^(# yaml-language-server: \$schema=)(\S+)$")


def rewrite_modelines(text: str, schema_for: Mapping[str, str]) -> str:
    """Point each `# yaml-language-server: $schema=` line at `schema_for[file name]`.

    A modeline naming a schema we do not ship is left as it is.

    >>> rewrite_modelines("# yaml-language-server: $schema=../../specs/fleet.schema.json\\nkind: Fleet\\n",
    ...                   {"fleet.schema.json": ".fleet/schemas/fleet.schema.json"})
    '# yaml-language-server: $schema=.fleet/schemas/fleet.schema.json\\nkind: Fleet\\n'
    """

    def repoint(match: re.Match[str]) -> str:
        target = schema_for.get(Path(match.group(2)).name)
        return match.group(1) + target if target else match.group(0)

    return _MODELINE.sub(repoint, text)


# --- effectful: the new repository ----------------------------------------------------------


def available_examples() -> dict[str, Path]:
    """Example name -> folder, from the package data or else the project checkout."""
    for root in _EXAMPLE_DIRS:
        if root.is_dir():
            return {p.name: p for p in sorted(root.iterdir()) if (p / "fleet.yaml").is_file()}
    return {}


def init_repo(dest: Path, example: str, host: str, roles: bool = True) -> Report:
    """Create a fleet repository in `dest` (absent or empty) from `example`, with the
    starter role library when `roles` and the example has no roles/ of its own, and the
    schemas its modelines point at; check it with the loader and commit it. On any
    failure, what this wrote is removed again."""
    examples = available_examples()
    if example not in examples:
        choices = ", ".join(examples) or "none (the examples folder is missing from this installation)"
        raise UserError(f"--example {example}: no such example; choose one of: {choices}")
    created = _check_empty(dest)
    try:
        starter = examples[STARTER_ROLES] / "roles" if roles and STARTER_ROLES in examples else None
        return _fill(dest, examples[example], example, host, starter)
    except BaseException:
        _undo(dest, created)
        raise


def _check_empty(dest: Path) -> bool:
    """Refuse anything but an absent or empty folder; True when it is absent (we create it)."""
    if dest.is_dir():
        if any(dest.iterdir()):
            raise UserError(f"{dest} is not empty; give a new or empty folder")
        return False
    if dest.exists():
        raise UserError(f"{dest} exists and is not a folder")
    return True


def _fill(dest: Path, source: Path, example: str, host: str, starter: Path | None) -> Report:
    report = Report()
    shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("status", "TASKS.md", "MISSION-MANIFEST.md", "__pycache__"))
    report.done.append(f"copied the {example} example into {dest}")
    if starter is not None and starter.is_dir() and not (dest / "roles").exists():
        shutil.copytree(starter, dest / "roles")
        names = sorted(p.stem for p in (dest / "roles").glob("*.yaml"))
        report.done.append(f"added the starter role library to {dest / 'roles'}: {', '.join(names)}")
    schemas = _write_schemas(dest)
    report.done.append(f"wrote {len(schemas)} JSON Schemas into {dest / SCHEMA_DIR}")
    _point_modelines(dest, schemas)
    loaded = load_repo(dest)
    if loaded.errors:
        raise UserError(f"the {example} example does not validate (a bug in fleet):\n" + "\n".join(map(str, loaded.errors)))
    agents = sum(len(t.roster.agents) for t in loaded.tenants.values())
    report.done.append(f"validated: {len(loaded.tenants)} tenant(s), {agents} agent(s)")
    report.done.append(_first_commit(dest, example, host))
    return report


def _write_schemas(dest: Path) -> dict[str, Path]:
    written = {}
    for name, text in render_schemas().items():
        path = dest / SCHEMA_DIR / name
        write_atomic(path, text)
        written[name] = path
    return written


def _point_modelines(dest: Path, schemas: Mapping[str, Path]) -> None:
    """Each YAML file's modeline, relative to that file, at the schemas written in `dest`."""
    for path in sorted(dest.rglob("*.yaml")):
        relative = {name: os.path.relpath(target, path.parent) for name, target in schemas.items()}
        text = path.read_text(encoding="utf-8")
        new = rewrite_modelines(text, relative)
        if new != text:
            write_atomic(path, new)


def _first_commit(dest: Path, example: str, host: str) -> str:
    """`git init -b main` and one commit of everything, by the local git identity where one
    is set, else `fleet init <fleet@HOST>`."""
    checkout = git.init_repository(dest, "main")
    name, email = _identity(checkout, host)
    sha = git.commit_if_changed(checkout, ["."], f"fleet init: the {example} example", name, email)
    return f"git: initialized {dest} on branch main, first commit {sha[: git.SHORT_SHA] if sha else '(none)'} by {name} <{email}>"


def _identity(checkout: git.Checkout, host: str) -> tuple[str, str]:
    """The identity `git commit` would use here (git's own lookup, so GIT_CONFIG_GLOBAL and
    includes count), field by field, else `fleet init <fleet@HOST>`."""

    return (git.config_value(checkout, "user.name") or "fleet init",
            git.config_value(checkout, "user.email") or f"fleet@{host}")


def _undo(dest: Path, created: bool) -> None:
    """Remove what init wrote: the folder if it made it, else everything in it (it was empty)."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
