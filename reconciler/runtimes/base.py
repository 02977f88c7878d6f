"""The adapter interface every event-driven runtime (Claude Code, Codex) implements.

Where it sits: between the resolved spec of one agent and the apply step. Before a
spawn, apply asks the agent's adapter for `prepare` (config files, each with a pure
merge rule over the file's current text) and `launch` (argv and extra environment for
the tmux pane); the runtime then calls `fleet-hook` on its own events, which writes the
heartbeat (reconciler/hooks/fleet_hook.py). Nothing here does I/O.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler.model.layout import STATE_DIR_ENV


class AdapterError(ValueError):
    """A config file the adapter must merge into cannot be read as what it should be."""


@dataclass(frozen=True, slots=True)
class AgentRun:
    """One agent as an adapter sees it: who it is, where it works, how it starts."""

    tenant: str
    host: str
    agent: str
    model: str
    workdir: Path
    session_id: str  # a UUID fixed at first spawn, kept for resume
    persona: str | None = None  # the role's persona text, appended to the system prompt
    resume: bool = False  # restart: continue the session instead of starting over
    trust_workdir: bool = True  # pre-accept the runtime's folder-trust dialog for workdir
    env: Mapping[str, str] = field(default_factory=dict)  # the agent's own resolved environment


@dataclass(frozen=True, slots=True)
class RuntimePaths:
    """Where things live for this agent's Linux user."""

    home: Path  # the user's home: ~/.claude.json, ~/.codex
    state_dir: Path  # FLEET_STATE_DIR
    hook: str  # the `fleet-hook` command, an absolute path in production
    binary: str  # the runtime's executable (`claude`, `codex`, or an absolute path)

    def agent_dir(self, run: AgentRun) -> Path:
        """The fleet's own per-agent folder for runtime files (settings, persona)."""
        return self.state_dir / run.tenant / "runtimes" / run.agent

    def hook_command(self, *args: str) -> str:
        """The hook as one shell command line (runtimes run hooks through `sh -c`)."""
        return shlex.join([self.hook, *args])


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """One file to write: `merge(current text or None) -> new text`.

    A file the fleet owns outright ignores the current text; a user's file
    (`~/.claude.json`, `config.toml`) is merged, keeping every key it does not set.
    `merge` raises AdapterError when the current text is damaged: never overwrite it.
    """

    path: Path
    merge: Callable[[str | None], str]
    mode: int = 0o600
    owned: bool = False  # True: the fleet's own file; False: the user's, merged


def replace_with(text: str) -> Callable[[str | None], str]:
    """The merge rule of a file the fleet owns: always exactly `text`."""
    return lambda _current: text


@dataclass(frozen=True, slots=True)
class Launch:
    """What runs in the agent's pane: argv and the environment added to the pane's."""

    argv: tuple[str, ...]
    env: Mapping[str, str]

    def command(self) -> str:
        """One shell line for tmux's `new-session` (env is set with `-e`, not here)."""
        return shlex.join(self.argv)


class Deliver(enum.Enum):
    """How a message reaches the runtime and how its acceptance shows.

    Either way `fleet agent send` types only between turns (core/messages.py): Claude
    Code's record says `working` from the submit to `Stop`; Codex says nothing until a
    turn ends, so there the id `send` typed and not yet acked stands for the turn.
    """

    PASTE_ACK_ON_SUBMIT = "paste+enter, acked when the prompt is submitted"  # Claude Code
    PASTE_ACK_ON_TURN_END = "paste+enter, acked when the turn completes"  # Codex


class RuntimeAdapter(Protocol):
    """What apply needs from a runtime: files, a launch, and how messages arrive."""

    name: str
    deliver: Deliver
    fixes_session: bool  # the fleet names the session id (`AgentRun.session_id`) and resumes it

    def prepare(self, run: AgentRun, paths: RuntimePaths) -> list[ConfigFile]: ...

    def launch(self, run: AgentRun, paths: RuntimePaths) -> Launch: ...


def identity_env(run: AgentRun, paths: RuntimePaths) -> dict[str, str]:
    """The runtime contract's pane variables, which `fleet-hook` reads back."""
    return {"FLEET_TENANT": run.tenant, "FLEET_AGENT": run.agent, "FLEET_HOST": run.host,
            "FLEET_MODEL": run.model, STATE_DIR_ENV: str(paths.state_dir)}
