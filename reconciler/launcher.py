"""`fleet-env-exec`: start an agent with its `env_from:` values, read as the agent's user.

The reconciler puts only references on the command line (`--file NAME=PATH`,
`--env NAME=VAR`); this launcher reads the values in the pane, just before it replaces
itself with the agent. So a secret never passes through the reconciler's memory, its
output, the systemd unit it writes, the status files or Git. A value that cannot be read
stops the start with a message and exit code 78 (EX_CONFIG): an agent must not come up
half-configured without its credentials.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.drivers.files import read_capped
from reconciler.drivers.host import program_path

EX_CONFIG = 78
#: A secret file is a token or a key, never a document; a larger file is a wrong path.
MAX_SECRET_BYTES = 64 * 1024


class LaunchError(Exception):
    """A value of `env_from:` could not be read; the message says which and how to fix it."""


def read_secret_file(name: str, path_text: str) -> str:
    """The file's text with one trailing newline dropped (how `echo x > file` writes it)."""
    path = Path(path_text).expanduser()
    try:
        text = read_capped(path, MAX_SECRET_BYTES)  # never blocks on a FIFO, never reads /dev/zero to the end
    except IsADirectoryError as exc:
        raise LaunchError(f"{name}: {path} is not a regular file; point `file:` at the secret's file") from exc
    except UnicodeDecodeError as exc:
        raise LaunchError(f"{name}: {path} is not UTF-8 text") from exc
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise LaunchError(f"{name}: {path} is larger than {MAX_SECRET_BYTES} bytes; is `file:` the right path?") from exc
        raise LaunchError(f"{name}: cannot read {path} ({exc.strerror}); create it, readable by this user") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise LaunchError(f"{name}: {path} is empty; put the secret in it")
    if "\x00" in text:
        raise LaunchError(f"{name}: {path} contains a NUL byte, which no environment variable can hold")
    return text


def resolve(pairs: Sequence[tuple[str, str, str]], environ: Mapping[str, str]) -> dict[str, str]:
    """Every value of `pairs` (name, "file" | "env", source); the first failure raises."""
    values: dict[str, str] = {}
    for name, kind, source in pairs:
        if kind == "file":
            values[name] = read_secret_file(name, source)
        elif source in environ:
            values[name] = environ[source]
        else:
            raise LaunchError(f"{name}: variable {source} is not set where the agent starts; "
                              "set it in the tenant user's environment (systemd --user or the tmux server)")
    return values


def parse_args(args: Sequence[str]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`--file NAME=PATH` / `--env NAME=VAR` pairs, then `--` and the agent's argv."""
    pairs: list[tuple[str, str, str]] = []
    rest = list(args)
    while rest and rest[0] != "--":
        flag = rest.pop(0)
        if flag not in ("--file", "--env") or not rest or "=" not in rest[0]:
            raise LaunchError(f"usage: fleet-env-exec [--file NAME=PATH | --env NAME=VAR]... -- PROGRAM [ARG]... (got {flag!r})")
        name, _, source = rest.pop(0).partition("=")
        pairs.append((name, flag[2:], source))
    if len(rest) < 2:
        raise LaunchError("fleet-env-exec: no program after `--`")
    return pairs, rest[1:]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        pairs, command = parse_args(sys.argv[1:] if argv is None else argv)
        env = {**os.environ, **resolve(pairs, os.environ)}
    except LaunchError as exc:
        print(f"fleet-env-exec: {exc}; the agent is not started", file=sys.stderr)
        return EX_CONFIG
    program = program_path(command[0])
    try:
        os.execvpe(program, [program, *command[1:]], env)
    except OSError as exc:
        print(f"fleet-env-exec: cannot start {program}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    raise SystemExit(main())
