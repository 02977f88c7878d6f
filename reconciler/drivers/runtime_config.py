"""Writes what a runtime adapter prepared (reconciler/runtimes/): config files, atomically.

Where it sits: the apply step, just before spawning an agent whose runtime has an
adapter. Each `ConfigFile` is read (capped, like every file the fleet reads), passed
through its pure merge rule, and written back with `write_atomic` only when the text
changes, so a restart loop does not churn the user's `~/.claude.json`. A user's file
keeps its permission bits and, when it is a symlink (dotfiles), its target is written,
not the link replaced. A file the merge refuses (damaged JSON or TOML) is left alone and
reported as one line saying what and how to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from reconciler.drivers.files import read_capped, write_atomic
from reconciler.runtimes.base import AdapterError, ConfigFile

#: `~/.claude.json` grows with history; a real one stays well under this.
MAX_CONFIG_BYTES = 16 << 20


class RuntimeConfigError(Exception):
    """A config file could not be read, merged or written: `PATH: what; how to fix`."""


def write_configs(files: Iterable[ConfigFile]) -> list[Path]:
    """Merge and write each file; returns the paths whose text changed."""
    return [path for item in files if (path := write_config(item)) is not None]


def write_config(item: ConfigFile) -> Path | None:
    """One file: read, merge, write if different; the written path, or None when unchanged."""
    target = item.path.resolve() if item.path.is_symlink() else item.path
    try:
        current: str | None = read_capped(target, MAX_CONFIG_BYTES)
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        current, mode = None, item.mode
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeConfigError(f"{item.path}: cannot read ({_why(exc)}); fix or remove the file") from exc
    try:
        text = item.merge(None if item.owned else current)
    except AdapterError as exc:
        raise RuntimeConfigError(
            f"{item.path}: {exc}; fix the file by hand (the fleet never overwrites a file it cannot read)"
        ) from exc
    if text == current:
        return None
    try:
        write_atomic(target, text, mode)
    except OSError as exc:
        raise RuntimeConfigError(f"{item.path}: cannot write ({_why(exc)}); check the folder's owner") from exc
    return item.path


def _why(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
