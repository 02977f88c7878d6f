"""Small programs the runtimes run, which hand usage to the fleet (see docs/budget.md)."""
