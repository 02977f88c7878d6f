"""Runtime adapters: what the fleet writes and runs so a real agent runtime reports to it.

Pure: each adapter turns one agent's settings into files to write (with a merge rule)
and the argv/env to launch; drivers/runtime_config.py does the writing. See docs/runtimes.md.
"""

from reconciler.runtimes.base import RuntimeAdapter
from reconciler.runtimes.claude import ClaudeAdapter
from reconciler.runtimes.codex import CodexAdapter

#: fleet.yaml's `adapter:` names (SPEC.md, additions) -> adapter; `command` and `stub` have none.
ADAPTERS: dict[str, RuntimeAdapter] = {"claude": ClaudeAdapter(), "codex": CodexAdapter()}
