"""Fixtures the security tests share with tests/e2e: the CLI-run minimal fleet."""

from __future__ import annotations

from tests.e2e.test_ps_and_agent_verbs import fleet

__all__ = ["fleet"]
