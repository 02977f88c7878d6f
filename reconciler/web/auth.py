"""Who may see the web view: loopback only, unless a token file guards it.

`check_bind` refuses, before anything listens, a non-loopback address without a token
(the doctrine: a fleet's screens are not for the network at large). `Guard` is the ASGI
layer in front of every route: it answers 405 to anything but GET and HEAD, and, with a
token, 401 to a request without it. The token is compared with `hmac.compare_digest`; a
browser presents it once as `?token=` and gets it back as an HttpOnly cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
import stat
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from reconciler.errors import UserError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "fleet_token"
READ_ONLY = ("GET", "HEAD")


def is_loopback(address: str) -> bool:
    """Whether `address` only listens on this machine.

    >>> [is_loopback(a) for a in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "192.168.1.4", "::")]
    [True, True, True, False, False, False]
    """
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def check_bind(address: str, token_file: Path | None, unix_socket: Path | None) -> None:
    """Refuse a listening address that would show the fleet to the network without a token."""
    if unix_socket is not None or token_file is not None or is_loopback(address):
        return
    raise UserError(f"refusing to serve on {address}: it is not a loopback address, so anyone who can reach it "
                    "would see the fleet; pass --token-file FILE (a 0600 file holding a secret) or bind 127.0.0.1 "
                    "(the default) or use --unix-socket PATH")


def read_token(path: Path) -> str:
    """The secret in a token file that only its owner can read; a UserError otherwise."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"--token-file {path}: {exc.strerror or exc}; create it with a secret, then chmod 600 it") from None
    if stat.S_IMODE(mode) & 0o077:
        raise UserError(f"--token-file {path}: mode {stat.S_IMODE(mode):04o} lets other users read the token; "
                        f"run chmod 600 {path}")
    if len(text) < 16:
        raise UserError(f"--token-file {path}: the token must be at least 16 characters "
                        "(e.g. the output of `python3 -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return text


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class Guard:
    """Read-only and, with a token, authenticated: wraps the whole Starlette app."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_ONLY:
            await _plain(send, 405, "read-only: only GET and HEAD are served\n", [(b"allow", b"GET, HEAD")])
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        bearer = headers.get("authorization", "")
        if _same(bearer[7:] if bearer.lower().startswith("bearer ") else None, self.token):
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie(headers.get("cookie", ""))
        if COOKIE in cookie and _same(cookie[COOKIE].value, self.token):
            await self.app(scope, receive, send)
            return
        if _same(query.get("token"), self.token):
            rest = urlencode([(k, v) for k, v in query.items() if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            await _plain(send, 303, "", [(b"location", location.encode()), (
                b"set-cookie", f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode())])
            return
        await _plain(send, 401, "a token is needed: open the page once with ?token=... or send "
                                "Authorization: Bearer ...\n", [(b"www-authenticate", b"Bearer")])


async def _plain(send: Send, status: int, body: str, headers: list[tuple[bytes, bytes]]) -> None:
    data = body.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})
