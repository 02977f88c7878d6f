"""What an agent gets of the reconciler's environment: only what the specs say.

A tmux server keeps the environment of the client that started it for every session,
and tmux's `update-environment` copies SSH_AUTH_SOCK, DISPLAY and the like from each
new-session client. So the reconciler runs tmux with drivers/tmux.CLIENT_ENV only, plus
the variables `env_from: [{env: VAR}]` names. Real tmux, real stub agents, the real CLI
run from an environment holding an operator's token, SSH agent and Kerberos ticket.
"""

from __future__ import annotations

import doctest
import uuid
from pathlib import Path

import pytest

from reconciler.drivers.tmux import argv as tmux
from reconciler.model import launch
from tests.e2e.test_ps_and_agent_verbs import AGENTS, Fleet, wait_healthy

pytestmark = pytest.mark.tmux


def environ_of(fleet: Fleet, agent: str) -> dict[str, str]:
    pid = fleet.pane(agent, "#{pane_pid}")
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def test_the_operators_environment_never_reaches_an_agent_and_env_from_sources_do(fleet: Fleet) -> None:
    token, wanted = f"OPSECRET-{uuid.uuid4().hex}", f"ENVSECRET-{uuid.uuid4().hex}"
    roster = fleet.repo / "tenants/demo/roster.yaml"
    roster.write_text(roster.read_text().replace(
        "    alias: Mos\n", "    alias: Mos\n    env_from:\n      - name: GH_TOKEN\n        env: GH_SRC\n"))
    leaky = {"OPERATOR_TOKEN": token, "SSH_AUTH_SOCK": "/tmp/operator-agent.sock", "KRB5CCNAME": "FILE:/tmp/krb",
             "DISPLAY": ":9", "GH_SRC": wanted, "LC_ALL": "C.UTF-8"}
    done = fleet.reconcile(**leaky)
    assert done.returncode == 0, done.stdout + done.stderr
    wait_healthy(fleet, *AGENTS)

    server = fleet.tmux("show-environment", "-g")
    assert token not in server and "operator-agent" not in server and "KRB5CCNAME=" not in server
    for agent in AGENTS:
        env = environ_of(fleet, agent)
        assert not {"OPERATOR_TOKEN", "SSH_AUTH_SOCK", "KRB5CCNAME", "DISPLAY"} & env.keys(), agent
        assert env.get("LC_ALL") == "C.UTF-8" and env.get("FLEET_AGENT") == agent
    # the orchestrator's launcher read GH_SRC in its pane and handed it over as GH_TOKEN
    assert environ_of(fleet, "orchestrator").get("GH_TOKEN") == wanted
    assert "GH_TOKEN" not in environ_of(fleet, "enhancer")


def test_doctests() -> None:
    for module in (tmux, launch):
        assert doctest.testmod(module, raise_on_error=False).failed == 0, module.__name__
