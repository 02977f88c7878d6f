"""The `fleet` program's entry point (cli/entry.py): the collector is off while the command
line loads, what loaded is frozen, and the command itself runs with the collector on."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, sys
early = []  # collections that ran while the command line was loading


def seen(phase, info):
    app = sys.modules.get("reconciler.cli.app")
    if phase == "start" and app is not None and not hasattr(app, "main"):  # app is in sys.modules from its first line
        early.append(info["generation"])


gc.callbacks.append(seen)
sys.argv = ["fleet", "--version"]
from reconciler.cli.entry import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, early, gc.isenabled(), gc.get_freeze_count()]))
"""


def test_the_command_line_loads_with_the_collector_off_and_runs_with_it_on() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    code, early, enabled, frozen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (code, early, enabled) == (0, [], True)
    assert frozen > 10_000  # every object the modules made, never walked again


def test_python_m_reconciler_cli_is_the_fleet_command() -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "--version"], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("fleet "), done.stderr
