"""The floor a whole `fleet` process is measured against (issues 2 and 3).

A Python process that imports the same third-party modules as the measured `fleet`
command (found by asking such a process which it loaded) and lists the socket once.
Whatever `fleet` costs beyond it is our own code: loading, planning, printing.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from reconciler.drivers.tmux import LIST_FORMAT

PROBE = """
import sys, json
sys.argv = ["fleet", *json.loads(sys.argv[1])]
from reconciler.cli import main
try:
    main()
except SystemExit:
    pass
print("\\n@@" + json.dumps(sorted(sys.modules)))
"""


def third_party_modules(fleet_args: list[str], env: dict[str, str]) -> list[str]:
    """Every third-party module (dotted names, namespace packages too) a `fleet` run imports."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(fleet_args)], capture_output=True, text=True, env=env, check=True
    )
    names = json.loads(out.stdout.rsplit("@@", 1)[1])
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    found = []
    for name in names:
        top = name.split(".")[0]
        if top.startswith("_") or top == "reconciler" or name == "__main__":
            continue
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        places = [getattr(mod, "__file__", None), *list(getattr(mod, "__path__", []))]
        if any(p and purelib in Path(p).resolve().parents for p in places):
            found.append(name)
    return found


def floor_command(fleet_args: list[str], env: dict[str, str], socket: str) -> tuple[list[str], int]:
    """The floor as an argv, and how many modules it imports."""
    modules = third_party_modules(fleet_args, env)
    code = (
        "".join(f"import {m}\n" for m in modules)
        + "import subprocess\n"
        + f"subprocess.run(['tmux', '-u', '-L', {socket!r}, 'list-panes', '-a', '-F', {LIST_FORMAT!r}],"
        + " capture_output=True, check=True)\n"
    )
    return [sys.executable, "-c", code], len(modules)
