"""Connection strings never live in Git: a spec file that holds one is refused where it is.

The register (docs/register.md) names where its connection string comes from
(`register: url_from:`); the string itself carries a password or the way in, and a
repository is read by every host, tenant and reviewer. The check runs on each spec
file's text before validation (spec/load.py), comments included, and the error gives
the position but never repeats the string.
"""

from __future__ import annotations

import re

#: A URI: postgres://... or postgresql://... with something after the scheme.
_URI = re.compile(r"(?i)\bpostgres(?:ql)?://[^\s'\"]")
#: libpq's keyword/value form: `host=db dbname=fleet password=...`.
_KEYWORD = re.compile(r"(?i)(?:^|[\s'\"])(host|hostaddr|port|dbname|user|password|passfile|sslmode|service)\s*=\s*[^\s'\"]")
#: Keywords that make a line of keyword/value pairs a connection string rather than prose.
_DECISIVE = frozenset({"dbname", "password", "passfile", "hostaddr"})

#: Where root hands a tenant user's run the register's address (no user, no password).
REGISTER_ADDRESS_ENV = "FLEET_REGISTER_ADDRESS"
#: A tenant user's own register connection string, under its home (a remote register).
USER_URL_FILE = ".config/mosaic-fleet/register.url"

MESSAGE = ("this is a database connection string; a connection string never goes in the fleet repository: put it "
           "in an environment variable or a file only the reconciling user can read, and name that in fleet.yaml "
           "`register: url_from: {env: NAME}` or `{file: /PATH}` (docs/register.md)")


def find_connection_strings(text: str) -> list[tuple[int, int]]:
    """1-based (line, column) of every connection string in `text`, one per line at most.

    >>> find_connection_strings("a: 1\\nurl: postgresql://fleet:pw@db/fleet\\n")
    [(2, 6)]
    >>> find_connection_strings("# host=db dbname=fleet user=ops\\n")
    [(1, 3)]
    >>> find_connection_strings("persona: the user=you, host=me\\nnote: postgres:// is a scheme\\n")
    []
    """
    found: list[tuple[int, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        uri = _URI.search(line)
        if uri is not None:
            found.append((number, uri.start() + 1))
            continue
        pairs = list(_KEYWORD.finditer(line))
        if len(pairs) >= 2 and any(m.group(1).lower() in _DECISIVE for m in pairs):
            found.append((number, pairs[0].start(1) + 1))
    return found


def register_secret(env: str | None, file: str | None, url_env: str | None, url_file: str | None) -> str | None:
    """Why an `env_from` source (`env` or `file`) would hand an agent the register's
    connection string, or None: the variable or file fleet.yaml's `url_from` names, the
    address root hands a tenant user's run, or a tenant user's own credentials file.

    >>> print(register_secret("FLEET_REGISTER_URL", None, "FLEET_REGISTER_URL", None))
    $FLEET_REGISTER_URL is the register's connection string (fleet.yaml register.url_from); an agent never gets it
    >>> print(register_secret(None, "~/.config/mosaic-fleet/register.url", None, None))
    ~/.config/mosaic-fleet/register.url is a tenant user's register credentials; an agent never reads it
    >>> register_secret("GH_TOKEN", "~/k", "FLEET_REGISTER_URL", "/etc/r.url") is None
    True
    """
    if env is not None and env == url_env:
        return f"${env} is the register's connection string (fleet.yaml register.url_from); an agent never gets it"
    if env == REGISTER_ADDRESS_ENV:
        return f"${env} is the register's address, which root hands a tenant user's run; an agent never gets it"
    if file is not None and (file == url_file or file.rstrip("/").endswith(USER_URL_FILE)):
        what = "the register's connection string" if file == url_file else "a tenant user's register credentials"
        return f"{file} is {what}; an agent never reads it"
    return None
