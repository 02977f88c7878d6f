"""What comes back from a tenant user's run, read by root as untrusted data.

The run's folder, files and output belong to the tenant's user, who could shape them to
mislead root: links where files should be, a huge or deeply nested document, escape
sequences for root's terminal, rows about other tenants. Everything here assumes so.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from reconciler.core.render import render_status, status_from_document, status_json
from reconciler.drivers.files import write_if_changed
from reconciler.engine.writeback import STATUS_DIR, status_path
from reconciler.model.status import TenantStatus
from reconciler.model.user_run import UserRun

#: A status document is a few KB per agent; a larger file is not one.
MAX_STATUS_BYTES = 4 * 1024 * 1024


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    r"""A tenant user's run's output as root relays it: no control character but newline
    and tab reaches root's terminal (an escape sequence could rewrite what root sees, a
    bidirectional override reorder it).

    >>> printable("ok\x1b]0;pwned\x07\n")
    'ok\\x1b]0;pwned\\x07\n'
    >>> printable("tenant a\u202eb")
    'tenant a\\u202eb'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def own_items(document: Any, tenants: Sequence[str]) -> Any:
    """A user's --output json document cut down to rows that name one of its own tenants:
    it cannot add rows, actions, errors, notes or counts for anyone else to root's report
    (root counts the summary again from the merged actions)."""
    mine = set(tenants)

    def rows(items: list[Any]) -> list[Any]:
        return [r for r in items if isinstance(r, dict) and isinstance(r.get("tenant"), str) and r["tenant"] in mine]

    if isinstance(document, list):
        return rows(document)
    if isinstance(document, dict):
        return {key: rows(value) if isinstance(value, list) else own_items(value, tenants)
                for key, value in document.items() if isinstance(value, list | dict) and key not in ("summary", "notes")}
    return None


def open_beneath(top: Path, parts: Sequence[str]) -> int:
    """Open top/parts... for reading without following a link at any step: the folder is
    the user's, who could swap any component for a link to a file only root may read."""
    fd = os.open(top, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def read_statuses(copy: Path, host: str, tenants: Sequence[str], problems: list[str], uid: int) -> list[TenantStatus]:
    """Each tenant's status as the user's run wrote it, trusted only as data: no links
    followed, the user's own file with one name, size capped, parsed, no control
    characters, and for this tenant and host, or dropped."""
    found = []
    for tenant in tenants:
        relative = status_path(Path(), host, tenant).parts
        try:
            fd = open_beneath(copy, relative)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"tenant {tenant}: its status could not be read back ({exc.strerror})")
            continue
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_nlink != 1:
                problems.append(f"tenant {tenant}: its status is not a regular file of its own; ignored")
                continue
            data = handle.read(MAX_STATUS_BYTES + 1)
        try:
            if len(data) > MAX_STATUS_BYTES:
                raise ValueError(f"larger than {MAX_STATUS_BYTES} bytes")
            # JSON only: root never runs the YAML parser (aliases!) on a tenant's file.
            document = status_json(data.decode("utf-8"))
            if any(_CONTROL.search(s) for s in _strings(document)):
                raise ValueError("it holds control characters")
            status = status_from_document(document)
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError,
                OverflowError) as exc:
            problems.append(f"tenant {tenant}: its run wrote an unreadable status ({printable(str(exc))[:200]}); "
                            "the last one is kept")
            continue
        if (status.tenant, status.host) != (tenant, host):
            problems.append(f"tenant {tenant}: its run wrote a status for {status.tenant!r}@{status.host!r}; ignored")
            continue
        found.append(status)
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string in plain data, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def adopt_statuses(repo: Path, runs: Sequence[UserRun]) -> list[str]:
    """Write the users' status documents into the repository, as root renders them."""
    written = []
    for status, revision in ((s, r.revision) for r in runs for s in r.statuses):
        path = status_path(repo, status.host, status.tenant)
        if write_if_changed(path, render_status(replace(status, revision=revision or status.revision))):
            written.append(f"{STATUS_DIR}/{status.host}/{status.tenant}.yaml")
    return written


def recount(document: dict[str, Any]) -> None:
    """The plan's summary, counted again from its (merged) actions."""
    summary, actions = document.get("summary"), document.get("actions")
    if isinstance(summary, dict) and isinstance(actions, list):
        for kind in summary:
            summary[kind] = sum(1 for a in actions if isinstance(a, dict) and a.get("action") == kind)


def merge_documents(base: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """One --output json document from root's and a user's: lists joined, counts added."""
    for key, value in other.items():
        mine = base.get(key)
        if isinstance(mine, list) and isinstance(value, list):
            mine.extend(value)
        elif isinstance(mine, dict) and isinstance(value, Mapping):
            merge_documents(mine, value)
        elif isinstance(mine, int) and isinstance(value, int) and not isinstance(mine, bool):
            base[key] = mine + value
        elif key not in base:
            base[key] = value
    return base
