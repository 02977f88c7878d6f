"""`python -m reconciler.cli`: the `fleet` command."""

from reconciler.cli.entry import main

main()
