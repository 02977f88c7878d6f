"""LISTEN on the register's channel for `fleet reconcile --watch` and `fleet serve` (docs/register.md).

A daemon thread holds one autocommit connection listening on `fleet_register` and
collects the hosts whose committed batches were notified; the watch loop takes them
and ticks. A notification is a hint to re-read, never the data. Our own host's
notifications are dropped (the loop's own writes must not wake it). The connection
lost or never made, the thread retries every `retry` seconds, saying nothing: the
loop's interval stays the fallback. After a reconnect it reports a wake of its own,
since notifications sent while it was away are gone. psycopg is imported in the
thread only, and the connection string is read at each connect and never kept. A
caller that waits rather than polls (`fleet serve`'s event loop) passes `on_note`,
called from the thread whenever something was added.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reconciler.drivers.register import CHANNEL, CONNECT_TIMEOUT_S, _psycopg, read_url

if TYPE_CHECKING:
    from reconciler.spec.models import UrlFrom

#: Sent by the listener itself when it reconnected: whatever was notified meanwhile was missed.
RECONNECTED = "(reconnected)"


def other_host(payload: str, own: str) -> str | None:
    """The host a notification's payload names, unless it is `own`; unreadable: "?".

    >>> other_host('{"host": "h0", "run": "r"}', "h1"), other_host('{"host": "h1"}', "h1"), other_host("x", "h1")
    ('h0', None, '?')
    """
    try:
        host = json.loads(payload).get("host")
    except (ValueError, AttributeError):
        return "?"
    if host == own:
        return None
    return str(host) if host else "?"


class Listener:
    """The LISTEN thread; `take()` returns the other hosts notified since the last call."""

    def __init__(self, url_from: UrlFrom, host: str, *, retry: float = 5.0, poll: float = 0.5,
                 application_name: str = "fleet-watch", on_note: Callable[[], None] | None = None) -> None:
        self.url_from, self.host, self.retry, self.poll = url_from, host, retry, poll
        self.application_name, self.on_note = application_name, on_note
        self.connected = threading.Event()  # set while a LISTEN connection is up
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._hosts: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="fleet-register-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, wait: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(wait)

    def take(self) -> set[str]:
        with self._lock:
            hosts, self._hosts = self._hosts, set()
        return hosts

    def _add(self, host: str) -> None:
        with self._lock:
            self._hosts.add(host)
        if self.on_note is not None:
            self.on_note()

    def _run(self) -> None:
        ever = False
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # any failure: quietly back to the interval, retry later
                self._listen(reconnected=ever)
            ever = ever or self.connected.is_set()
            self.connected.clear()
            self._stop.wait(self.retry)

    def _listen(self, *, reconnected: bool) -> None:
        psycopg = _psycopg()
        conn: Any = psycopg.connect(read_url(self.url_from), autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                    application_name=self.application_name, keepalives=1, keepalives_idle=30,
                                    keepalives_interval=10, keepalives_count=3)
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            self.connected.set()
            if reconnected:
                self._add(RECONNECTED)
            while not self._stop.is_set():
                for note in conn.notifies(timeout=self.poll):
                    host = other_host(note.payload, self.host)
                    if host is not None:
                        self._add(host)
        finally:
            conn.close()
