"""The `fleet` command line: one module per command group, mounted by cli/app.py.

Each command parses its options, asks the engine (engine/run.py for a reconcile run)
and renders what came back with views/; nothing here decides or acts.
"""
