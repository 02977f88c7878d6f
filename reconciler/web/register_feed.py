"""The register's rows for the web view, re-read when another host's write is notified.

With fleet.yaml's `register:`, one LISTEN thread (engine/register_wake.py, the watch
loop's) hears every committed batch on `fleet_register`, and the feed re-reads the
register (engine/register_board.py, in a worker thread) and hands the new board to the
observer, which publishes it to every open page at once. Reads happen only when a
notification arrives (several arriving during one read make one more read), when the
listener reconnected, when fleet.yaml's register changed, and on a slow fallback
(`fallback` seconds without any). The register away is one line on the page (the last
board read stays, marked), retried every `retry` seconds; nothing here raises. Without
a register nothing is started and psycopg is never loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.core.hostsview import Board

if TYPE_CHECKING:
    from reconciler.engine.register_wake import RegisterWake
    from reconciler.spec.models import Register

#: The LISTEN connection's name in pg_stat_activity.
APPLICATION_NAME = "fleet-serve"


@dataclass(frozen=True, slots=True)
class RegisterState:
    """What the pages show of the register: the last board read and why it may be old."""

    board: Board | None  # None: never read yet
    error: str = ""  # the last read failed: the register is away (the board is the last good one)
    listening: bool = False  # a LISTEN connection was up at the last read
    reason: str = ""  # why the board was (re)read


def read_register(config: Register) -> Board:
    from reconciler.engine.register_board import read_board  # noqa: PLC0415  (only with a register)

    return read_board(config)


class RegisterFeed:
    """Follows fleet.yaml's register; `run()` re-reads it on a notification and publishes."""

    def __init__(self, publish: Callable[[RegisterState | None], Awaitable[None]], *, fallback: float = 60.0,
                 retry: float = 5.0, read: Callable[[Register], Board] = read_register) -> None:
        self.publish, self.fallback, self.retry, self.read = publish, fallback, retry, read
        self.state: RegisterState | None = None
        self.reads = 0
        self._config: Register | None = None
        self._wake: RegisterWake | None = None
        self._due = asyncio.Event()

    async def follow(self, config: Register | None) -> None:
        """Read and listen for `config` (fleet.yaml's `register:` at the last observation)."""
        if config == self._config:
            return
        await self.close()
        self._config = config
        if config is None:
            self.state = None
            await self.publish(None)
            return
        from reconciler.engine.register_wake import RegisterWake  # noqa: PLC0415  (only with a register)

        loop = asyncio.get_running_loop()

        def heard() -> None:  # in the LISTEN thread: hand over to the event loop
            loop.call_soon_threadsafe(self._due.set)

        self._wake = RegisterWake(self.retry, application_name=APPLICATION_NAME, on_note=heard)
        # No host of its own: fleet serve writes nothing, so every host's write (this host's
        # reconcile too) is news for the Hosts page.
        self._wake.follow(config, "")
        self.state = RegisterState(None, reason="fleet.yaml names a register")
        await self.publish(self.state)  # the pages know of the register before its first read
        self._due.set()

    async def run(self) -> None:
        while True:
            failing = self.state is not None and bool(self.state.error)
            timed_out = False
            try:
                await asyncio.wait_for(self._due.wait(), self.retry if failing else self.fallback)
            except TimeoutError:
                timed_out = True
            self._due.clear()
            config, wake = self._config, self._wake
            if config is None or wake is None:
                continue
            heard = wake.reason()
            why = heard or (("retry" if failing else f"fallback ({self.fallback:g} s without a notification)")
                            if timed_out else self.state.reason if self.state else "")
            state = await self._read(config, wake, why)
            if config != self._config:
                continue  # fleet.yaml changed meanwhile: that register's read is due already
            if self.state is not None and state.error and state.error == self.state.error:
                continue  # still away: said once, not again at every retry
            self.state = state
            await self.publish(state)

    async def _read(self, config: Register, wake: RegisterWake, why: str) -> RegisterState:
        self.reads += 1
        last = self.state.board if self.state else None
        try:
            board = await asyncio.to_thread(self.read, config)
        except Exception as exc:  # the register away, refused, or at another version: said, retried
            return RegisterState(last, _message(exc), wake.listening, why)
        return RegisterState(board, "", wake.listening, why)

    async def close(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            await asyncio.to_thread(wake.close)  # joins the LISTEN thread: not on the event loop


def _message(exc: Exception) -> str:
    from reconciler.drivers.register import RegisterError, scrub  # noqa: PLC0415  (loaded with the listener)

    text = str(exc) if isinstance(exc, RegisterError) else f"{type(exc).__name__}: {exc}"
    return scrub(text)


__all__ = ["APPLICATION_NAME", "RegisterFeed", "RegisterState", "read_register"]
