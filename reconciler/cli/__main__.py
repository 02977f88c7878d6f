"""`python -m reconciler.cli`: the `fleet` command."""

from reconciler.cli.app import main

main()
