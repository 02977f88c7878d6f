"""Held, not looped: dialogs named from an unhealthy agent's screen, and logins.

It sits between health (core/health.py) and the planner. The runtimes' own events come
first (a held heartbeat); the screen may only ADD a reason to a verdict that is already
unhealthy: `wants_screen` says which agents' panes the engine reads (none in a healthy
fleet, so observation's tmux calls stay constant), and `dialog_verdict` turns a known
dialog on that screen into `waiting`, which is never restarted. A login (`login_of`) is
the account a runtime uses; the planner restarts at most one agent per login at a time.
Pure: screens and launches are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import PurePath

from reconciler.core.health import Health, Verdict
from reconciler.model.launch import LaunchSpec
from reconciler.model.observed import Heartbeat

#: Restarts of agents sharing one login are at least this far apart (besides one per tick).
LOGIN_PACE_S = 30
#: A heartbeat's `held` when the provider's usage limit stopped the turn (core/resume.py resumes it).
USAGE_LIMIT = "usage-limit"


@dataclass(frozen=True, slots=True)
class Dialog:
    """A dialog a runtime stops on and cannot pass by itself, as its screen shows it
    (texts measured with Claude Code 2.1.328 and Codex 0.169.0)."""

    adapter: str
    reason: str  # the verdict's reason code
    needles: tuple[str, ...]  # any one of them on the screen names the dialog
    words: str  # what it is and what a person does


DIALOGS: tuple[Dialog, ...] = (
    Dialog("claude", "dialog-trust", ("Is this a project you created or one you trust", "Yes, I trust this folder"),
           "Claude Code's folder-trust dialog for the workdir (trust_workdir: false): answer it in "
           "`fleet agent attach`, or set trust_workdir: true"),
    Dialog("claude", "dialog-api-key", ("Detected a custom API key in your environment",),
           "Claude Code asks whether to use the API key in its environment: answer it in `fleet agent attach`"),
    Dialog("claude", "dialog-login", ("Select login method", "Please run /login"),
           "Claude Code is not logged in: log in with `fleet agent attach` (/login) as the agent's user"),
    Dialog("claude", "dialog-onboarding", ("Choose the text style", "Unable to connect to Anthropic"),
           "Claude Code's first-run onboarding: finish it once in `fleet agent attach`"),
    Dialog("codex", "dialog-trust", ("Trust this folder? Codex can", "1. Trust and continue"),
           "Codex's folder-trust dialog for the workdir (trust_workdir: false): answer it in "
           "`fleet agent attach`, or set trust_workdir: true"),
    Dialog("codex", "dialog-announcement", ("Meet GPT-",),
           "Codex shows a model announcement the fleet does not know: answer it in `fleet agent attach`"),
    Dialog("codex", "dialog-login", ("Sign in with ChatGPT", "Provide your own API key"),
           "Codex is not logged in: log in with `fleet agent attach` as the agent's user"),
)


def match_dialog(adapter: str | None, screen: str) -> Dialog | None:
    """The first known dialog of `adapter` on `screen`, or None.

    >>> match_dialog("claude", " Quick safety check: Is this a project you created or one you trust?").reason
    'dialog-trust'
    >>> match_dialog("codex", "› Ask Codex to do anything") is None, match_dialog(None, "Meet GPT-6") is None
    (True, True)
    """
    flat = " ".join(screen.split())
    for dialog in DIALOGS:
        if dialog.adapter == adapter and any(needle in flat for needle in dialog.needles):
            return dialog
    return None


def wants_screen(verdict: Verdict, adapter: str | None) -> bool:
    """Whether the engine should read this agent's pane: an adapter runtime whose verdict
    is already unhealthy but whose pane is alive (silent or stale: a dialog would explain it).

    >>> wants_screen(Verdict(Health.SILENT, "no heartbeat"), "claude"), wants_screen(Verdict(Health.HEALTHY, ""), "claude")
    (True, False)
    """
    return adapter is not None and verdict.health in (Health.SILENT, Health.STALE)


def dialog_verdict(verdict: Verdict, adapter: str | None, screen: str | None) -> Verdict:
    """`verdict`, or `waiting` with the dialog as its reason when an unhealthy agent's
    screen shows a known dialog (the message is stable: no ages, the status keeps it)."""
    if screen is None or not wants_screen(verdict, adapter):
        return verdict
    dialog = match_dialog(adapter, screen)
    if dialog is None:
        return verdict
    return Verdict(Health.WAITING, f"waiting on a dialog ({dialog.reason}): {dialog.words}; not restarted",
                   dialog.reason)


#: Where each adapter's runtime keeps its login, when the agent's env does not say.
_CONFIG_DIRS = {"claude": ("CLAUDE_CONFIG_DIR", "~/.claude"), "codex": ("CODEX_HOME", "~/.codex")}


def login_of(launch: LaunchSpec) -> str | None:
    """The login an adapter runtime's agent uses: `FLEET_ACCOUNT` when the budget names
    one, else the runtime's config dir (`CLAUDE_CONFIG_DIR` / `CODEX_HOME` from the
    agent's env, else the user's default), per Linux user. None for plain commands.

    >>> from reconciler.model.observed import SocketKey
    >>> def spec(env, adapter="claude"):
    ...     return LaunchSpec("t", "a", "h", SocketKey(None, "s"), ("claude",), env, None, "m", "x", adapter=adapter)
    >>> login_of(spec(())), login_of(spec((("CODEX_HOME", "/srv/c"),), "codex"))
    ('claude ~/.claude of the user running fleet', 'codex /srv/c of the user running fleet')
    >>> login_of(spec((("FLEET_ACCOUNT", "max-1"),))), login_of(spec((), None))
    ('claude account max-1 of the user running fleet', None)
    """
    if launch.adapter is None:
        return None
    env = dict(launch.env)
    who = f"user {launch.socket.user}" if launch.socket.user else "the user running fleet"
    if env.get("FLEET_ACCOUNT"):
        return f"{launch.adapter} account {env['FLEET_ACCOUNT']} of {who}"
    variable, default = _CONFIG_DIRS.get(launch.adapter, ("", f"~/.{launch.adapter}"))
    where = env.get(variable) or default
    return f"{launch.adapter} {PurePath(where)} of {who}"


def held_by_failure(beat: Heartbeat, failure: tuple[str, str, str] | None) -> Heartbeat:
    """`beat` held by a failed turn the runtime recorded only in its own files (a Codex
    rollout's `task_complete` error: Codex runs no `notify` for it), when that failure is
    newer than the heartbeat's last event; a turn that completed since (its `notify`) or
    a new runtime (`launch`) is newer and wins.

    >>> from datetime import UTC
    >>> beat = Heartbeat("t", "h", "a", 1, datetime(2026, 12, 6, 4, 50, tzinfo=UTC), "idle", "gpt-5.5", event="launch")
    >>> held = held_by_failure(beat, ("auth", "unexpected status 401", "2026-12-06T04:50:57.849Z"))
    >>> held.state, held.held, held.reason
    ('waiting', 'auth', 'unexpected status 401')
    >>> held_by_failure(beat, ("auth", "old", "2026-12-06T04:49:00Z")) is beat
    True
    """
    if failure is None:
        return beat
    kind, words, stamp = failure
    try:
        at = datetime.fromisoformat(stamp)
    except ValueError:
        return beat
    if at.utcoffset() is None or at <= (beat.event_ts or beat.ts):
        return beat
    return replace(beat, state="waiting", held=kind, reason=words)
