"""The control loop of `fleet reconcile --watch`: level-triggered ticks, run one at a time.

A tick runs on a spec change in the checkout (watchfiles; the reconciler's own writes
to status/ and TASKS.md are ignored so it cannot trigger itself), on a new revision of
the remote branch (one cheap `ls-remote` every few seconds), and every interval with
jitter (sooner, while a lane's brief waits for a worker starting up), and on any
`wake()` source the caller adds (another host's write to the register: engine/register_wake.py).
Each tick reconciles everything, whatever woke it. SIGTERM or SIGINT lets the
tick in progress finish, then the loop returns.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from watchfiles import Change, watch

from reconciler.drivers import git
from reconciler.errors import UserError
from reconciler.spec.repo import SPEC_PATHS as SPEC_TOPS


def is_spec_path(repo: Path, path: str) -> bool:
    """True for files whose change should wake the loop: specs, not what the loop writes.

    >>> is_spec_path(Path("/r"), "/r/tenants/a/roster.yaml"), is_spec_path(Path("/r"), "/r/status/h/a.yaml")
    (True, False)
    >>> is_spec_path(Path("/r"), "/r/TASKS.md"), is_spec_path(Path("/r"), "/r/tenants/a/.roster.yaml.tmp")
    (False, False)
    """
    try:
        rel = Path(path).relative_to(repo)
    except ValueError:
        return False
    if not rel.parts or rel.parts[0] not in SPEC_TOPS:
        return False
    return not rel.name.startswith(".") and rel.suffix in {".yaml", ".yml", ""}


@dataclass(frozen=True, slots=True)
class LoopSettings:
    interval: float = 60.0
    jitter: float = 0.1  # fraction of the interval, so hosts do not tick in lockstep
    fetch_every: float = 2.0
    watch_remote: bool = True
    soon: float = 2.0  # the next tick, when a tick says work waits on an agent starting up


def run_loop(repo: Path, tick: Callable[[str], int], settings: LoopSettings, stop: threading.Event | None = None,
             again_soon: Callable[[], bool] | None = None, wake: Callable[[], str] | None = None) -> int:
    """Tick until stopped; returns the last tick's exit code. `tick(reason)` runs one reconcile;
    `again_soon()`, asked after each, True: tick again `settings.soon` later (a lane's brief
    waits for its new worker's first heartbeat), not an interval later. `wake()`, asked
    every quarter second, a reason: tick now."""
    stop = stop or threading.Event()
    _stop_on_signals(stop)
    repo = repo.resolve()
    checkout = git.open_checkout(repo) if settings.watch_remote else None
    rng = random.Random()
    code = 0
    next_tick = time.monotonic()  # the first tick runs once the watcher is up: a change
    next_fetch = time.monotonic() + settings.fetch_every  # made during it (a pull) is seen
    spec_filter = lambda _change, path: is_spec_path(repo, path)  # noqa: E731
    for changes in watch(repo, watch_filter=spec_filter, stop_event=stop, rust_timeout=250, yield_on_timeout=True,
                         debounce=200, raise_interrupt=False):
        if stop.is_set():
            break
        reason = _why(changes, checkout, next_tick, next_fetch) or (wake() if wake is not None else "")
        if time.monotonic() >= next_fetch:
            next_fetch = time.monotonic() + settings.fetch_every
        if reason:
            code = _safe_tick(tick, reason)
            next_tick = _next(settings, rng)
            if again_soon is not None and again_soon():
                next_tick = min(next_tick, time.monotonic() + settings.soon)
    return code


def _why(changes: set[tuple[Change, str]], checkout: git.Checkout | None, next_tick: float, next_fetch: float) -> str:
    if changes:
        return f"spec change ({len(changes)} file(s))"
    now = time.monotonic()
    if checkout is not None and now >= next_fetch:
        remote = git.remote_revision(checkout)
        if remote.outcome is git.SyncOutcome.UPDATED:
            return f"new remote revision ({remote.message})"
    if now >= next_tick:
        return "interval"
    return ""


def _next(settings: LoopSettings, rng: random.Random) -> float:
    spread = settings.interval * settings.jitter
    return time.monotonic() + settings.interval + rng.uniform(-spread, spread)


def _safe_tick(tick: Callable[[str], int], reason: str) -> int:
    """One tick; a user's mistake or a busy lock is one `error:` line, a bug is printed
    with its traceback, and the loop goes on either way."""
    try:
        return tick(reason)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
