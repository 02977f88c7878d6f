"""The `fleet` program's entry point (pyproject's [project.scripts], `python -m reconciler.cli`).

The collector is off while the command line loads: what the ~550 modules it loads
allocate lives as long as the process, and walking it again and again as it is made
cost a one-shot `fleet reconcile` ~10 ms of CPU. It is frozen (gc.freeze, never walked
again) before the collector is back on for the command itself; code that imports
reconciler.cli.app (a test, a resident caller) keeps its own collector as it is.
"""

from __future__ import annotations

import gc


def main() -> None:
    on = gc.isenabled()
    gc.disable()
    try:
        from reconciler.cli.app import main as run  # noqa: PLC0415  (loaded with the collector off)

        gc.freeze()
    finally:
        if on:
            gc.enable()
    run()
