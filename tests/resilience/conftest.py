"""Fixtures shared with tests/e2e: the minimal example on a private socket, run by the CLI."""

from tests.e2e.test_ps_and_agent_verbs import fleet, running

__all__ = ["fleet", "running"]
