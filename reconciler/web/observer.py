"""One observer loop for every open page, and one screen poller per watched agent.

The loop runs the engine's read-only run in a worker thread every `interval` seconds and
publishes the view as a numbered `Published`; each page's event stream waits for a
number higher than the one it sent last. So observing costs the same for one viewer as
for a hundred, and what a page shows is rendered once per observation (the fragment
cache), not once per viewer. Screens work the same way: a `ScreenHub` captures a pane
about once a second only while someone watches it, and shares each capture. With a
register, each `Published` also carries the register's last read (web/register_feed.py),
which the feed publishes on its own when another host writes, between observations.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from reconciler.core.fleetview import FleetView
from reconciler.model.observed import SocketKey

if TYPE_CHECKING:
    from reconciler.spec.models import Register
    from reconciler.web.register_feed import RegisterState


@dataclass(frozen=True, slots=True)
class Observation:
    """One view, where each row's session lives (its socket label's key), and fleet.yaml's
    `register:` as the run read it (None: no register)."""

    view: FleetView
    sockets: Mapping[str, SocketKey]
    register: Register | None = None


@dataclass(slots=True)
class Published:
    """A numbered observation (or the reason the last one failed), the register's last
    read (None: no register), and its rendered fragments."""

    version: int
    observation: Observation | None
    error: str = ""
    fragments: dict[tuple[str, str], Any] = field(default_factory=dict)
    register: RegisterState | None = None

    def fragment(self, kind: str, key: str, render: Callable[[], Any]) -> Any:
        """Rendered once per observation, whoever asks first."""
        found = self.fragments.get((kind, key))
        if found is None:
            found = self.fragments[(kind, key)] = render()
        return found


T = TypeVar("T")


class Broadcast(Generic[T]):
    """The latest value with a version number; waiters wake on a newer one."""

    def __init__(self, first: T) -> None:
        self.version = 0
        self.value = first
        self._changed = asyncio.Condition()

    async def publish(self, value: T) -> None:
        async with self._changed:
            self.version += 1
            self.value = value
            self._changed.notify_all()

    async def newer(self, than: int) -> tuple[int, T]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > than)
            return self.version, self.value


class Observer:
    """Runs `observe` (blocking: a read-only engine run) every `interval` seconds; `after`
    sees each observation (the register feed follows its fleet.yaml)."""

    def __init__(self, observe: Callable[[], Observation], interval: float,
                 after: Callable[[Observation], Awaitable[None]] | None = None) -> None:
        self.observe = observe
        self.interval = interval
        self.after = after
        self.latest: Broadcast[Published] = Broadcast(Published(0, None, "not observed yet"))
        self.observations = 0
        self.register: RegisterState | None = None
        self._observing = False

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.interval)

    async def once(self) -> Published:
        try:
            observation = await asyncio.to_thread(self.observe)
        except Exception as exc:  # a failed observation is shown, and the loop goes on
            last = self.latest.value.observation
            published = Published(self.latest.version + 1, last, f"{type(exc).__name__}: {exc}",
                                  register=self.register)
        else:
            if self.after is not None:
                self._observing = True  # what `after` changes rides with this observation
                try:
                    await self.after(observation)
                finally:
                    self._observing = False
            published = Published(self.latest.version + 1, observation, register=self.register)
        self.observations += 1
        await self.latest.publish(published)
        return published

    async def publish_register(self, state: RegisterState | None) -> None:
        """A new read of the register, published at once with the last observation."""
        self.register = state
        if self._observing or self.latest.version == 0:
            return  # the observation being made carries it
        last = self.latest.value
        await self.latest.publish(Published(self.latest.version + 1, last.observation, last.error, register=state))


Capture = Callable[[SocketKey, str], "list[str] | None"]


class ScreenHub:
    """Pane captures shared by everyone watching one agent; none while nobody watches."""

    def __init__(self, capture: Capture, interval: float) -> None:
        self.capture = capture
        self.interval = interval
        self._screens: dict[tuple[SocketKey, str], tuple[int, Broadcast[list[str] | None], asyncio.Task[None]]] = {}

    @contextlib.asynccontextmanager
    async def watching(self, socket: SocketKey, session: str) -> AsyncIterator[Broadcast[list[str] | None]]:
        key = (socket, session)
        if key in self._screens:
            count, screen, task = self._screens[key]
            self._screens[key] = (count + 1, screen, task)
        else:
            screen = Broadcast[list[str] | None](None)
            self._screens[key] = (1, screen, asyncio.create_task(self._poll(key, screen)))
        try:
            yield screen
        finally:
            count, screen, task = self._screens[key]
            if count == 1:
                del self._screens[key]
                task.cancel()
            else:
                self._screens[key] = (count - 1, screen, task)

    async def _poll(self, key: tuple[SocketKey, str], screen: Broadcast[list[str] | None]) -> None:
        last: list[str] | bool | None = False  # False: nothing published yet
        while True:
            lines = await asyncio.to_thread(self.capture, *key)
            if lines != last:
                await screen.publish(lines)
                last = lines
            await asyncio.sleep(self.interval)
