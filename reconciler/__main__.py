"""`python -m reconciler`: the `fleet` command, for a user who has no `fleet` on PATH
(root runs a tenant's reconcile this way, with the same interpreter)."""

from reconciler.cli.app import main

main()
