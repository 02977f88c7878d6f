"""The floor a whole `fleet` process is measured against (issues 2 and 3).

A Python process that imports the same libraries as the measured `fleet` command
(every module it loads that is not the project's own: third-party and standard
library, found by asking such a process) and lists the socket once.
Whatever `fleet` costs beyond it is our own code: loading, planning, printing.
"""

from __future__ import annotations

import json
import subprocess
import sys

from reconciler.drivers.tmux import LIST_FORMAT

PROBE = """
import sys, json
sys.argv = ["fleet", *json.loads(sys.argv[1])]
from reconciler.cli.app import main
try:
    main()
except SystemExit:
    pass
print("\\n@@" + json.dumps(sorted(sys.modules)))
"""


def library_modules(fleet_args: list[str], env: dict[str, str]) -> list[str]:
    """Every module a `fleet` run imports that is not the project's own: third-party
    packages (namespace ones and C extensions too) and standard-library modules beyond
    what a bare interpreter already has."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(fleet_args)], capture_output=True, text=True, env=env, check=True
    )
    names = json.loads(probe.stdout.rsplit("@@", 1)[1])
    bare = subprocess.run([sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, env=env, check=True)
    already = set(json.loads(bare.stdout))
    return [n for n in names if n not in already and n.split(".")[0] != "reconciler" and n != "__main__"]


def floor_command(fleet_args: list[str], env: dict[str, str], socket: str) -> tuple[list[str], int]:
    """The floor as an argv, and how many modules it imports."""
    modules = library_modules(fleet_args, env)
    code = (
        "import importlib\n"
        + f"for name in {modules!r}:\n"
        + "    try:\n        importlib.import_module(name)\n    except Exception:\n        pass\n"
        + "import subprocess\n"
        + f"subprocess.run(['tmux', '-u', '-L', {socket!r}, 'list-panes', '-a', '-F', {LIST_FORMAT!r}],"
        + " capture_output=True, check=True)\n"
    )
    return [sys.executable, "-c", code], len(modules)
