"""pytest plugin: a real bare repository as the fleet's remote, and clones of it as hosts.

There is no mock Git. `bare_remote` is a seeded fleet repository (`fleet.yaml`, one
roster, TASKS.md) on branch `main`; `clone("host-a")` clones it into its own folder,
as each host would. Git never reads the developer's configuration here: global and
system config are off, and `user.useConfigOnly` makes any commit that forgot to name
its author fail, so a driver that leans on an ambient identity is caught. People's
commits in tests go through `person_commit`, which names its author explicitly.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

SEED = {
    "fleet.yaml": "apiVersion: fleet.mosaicstack.dev/v1\nkind: Fleet\nname: mosaic\n",
    "tenants/jarvis/roster.yaml": "kind: Roster\ntenant: jarvis\nagents:\n  - name: orchestrator\n",
    "TASKS.md": "# TASKS (generated)\n",
}
PERSON = ("-c", "user.name=Person", "-c", "user.email=person@example.com")
_AMBIENT = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_CEILING_DIRECTORIES",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "EMAIL",
)


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """`git ARGS` in `cwd`; its standard output, stripped. Fails the test on error if `check`."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{done.stderr}")
    return done.stdout.strip()


def person_commit(repo: Path, files: dict[str, str], message: str, push: bool = False) -> str:
    """Write `files`, commit exactly them as a person (and push); returns the new sha."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "--", *files)
    git(repo, *PERSON, "commit", "--quiet", "-m", message, "--", *files)
    if push:
        git(repo, "push", "--quiet", "origin", "HEAD:refs/heads/main")
    return git(repo, "rev-parse", "HEAD")


def remote_tree(bare: Path, ref: str = "main") -> dict[str, str]:
    """Every file of `ref` in the bare repository, path -> text, byte for byte."""
    names = git(bare, "ls-tree", "-r", "--name-only", ref).splitlines()
    return {
        name: subprocess.run(
            ["git", "cat-file", "blob", f"{ref}:{name}"], cwd=bare, capture_output=True, text=True, check=True
        ).stdout
        for name in names
    }


def isolate_git(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point git at an empty configuration in `home` and drop every identity variable."""
    config = home / "gitconfig"
    config.write_text("[user]\n\tuseConfigOnly = true\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in _AMBIENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def git_isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git with no global or system configuration and no identity from the environment."""
    isolate_git(monkeypatch, tmp_path_factory.mktemp("git-home"))


@pytest.fixture(scope="session")
def seeded_bare_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeded bare repository, built once per session; `bare_remote` copies it."""
    root = tmp_path_factory.mktemp("git-template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_git(monkeypatch, root)
        bare = root / "remote.git"
        git(root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        seed = root / "seed"
        git(root, "init", "--quiet", "--initial-branch=main", str(seed))
        person_commit(seed, SEED, "Seed the fleet")
        git(seed, "push", "--quiet", str(bare), "main")
    return bare


@pytest.fixture
def bare_remote(tmp_path: Path, git_isolated: None, seeded_bare_template: Path) -> Path:
    """A bare repository on `main`, seeded with a small fleet (SEED) by a person; the remote."""
    return Path(shutil.copytree(seeded_bare_template, tmp_path / "remote.git", symlinks=True))


@pytest.fixture
def clone(bare_remote: Path, tmp_path: Path) -> Callable[[str], Path]:
    """A factory: `clone("host-a")` is a fresh clone of the remote, as that host keeps it."""

    def make(name: str) -> Path:
        path = tmp_path / "hosts" / name
        git(tmp_path, "clone", "--quiet", str(bare_remote), str(path))
        return path

    return make
