"""Watch mode's fourth wake source: another host's write to the register (docs/register.md).

After each tick the loop hands over what that tick read: fleet.yaml's `register:` and
this host's name. With a register, one LISTEN thread (drivers/register_listen.py) runs
beside the spec watcher, the remote poll and the interval; `reason()` turns what it
heard into the next tick's reason. A register added, changed or removed in Git is
followed at the next tick; without one nothing is started and psycopg is never loaded.
`fleet serve` follows the register the same way (web/register_feed.py), waking on
`on_note` instead of asking `reason()` every quarter second.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.drivers.register_listen import RECONNECTED, Listener  # psycopg: only once a listener starts

if TYPE_CHECKING:
    from reconciler.spec.models import Register


class RegisterWake:
    """The LISTEN thread matching the last tick's register and host (none without a register)."""

    def __init__(self, retry: float = 5.0, *, application_name: str = "fleet-watch",
                 on_note: Callable[[], None] | None = None) -> None:
        self.retry, self.application_name, self.on_note = retry, application_name, on_note
        self._listener: Listener | None = None
        self._following: tuple[Register, str] | None = None

    def follow(self, config: Register | None, host: str) -> None:
        """Listen for `config` as `host`: start, restart or stop the thread when that changed."""
        wanted = (config, host) if config is not None else None
        if wanted == self._following:
            return
        self.close()
        self._following = wanted
        if config is not None:
            self._listener = Listener(config.url_from, host, retry=self.retry,
                                      application_name=self.application_name, on_note=self.on_note)
            self._listener.start()

    def reason(self) -> str:
        """A tick's reason when other hosts wrote to the register since the last call, else ""."""
        if self._listener is None:
            return ""
        hosts = self._listener.take()
        others = sorted(hosts - {RECONNECTED})
        if others:
            return f"register change ({', '.join(others)})"
        return "register reconnected (changes meanwhile unheard)" if hosts else ""

    @property
    def listening(self) -> bool:
        """Whether a LISTEN connection is up now."""
        return self._listener is not None and self._listener.connected.is_set()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener, self._following = None, None
