"""`fleet agent watch|attach|send`: one agent at a time, through engine/agent_verbs.py;
`fleet agent add|remove`: a roster.yaml edit, validated and committed (engine/spec_edit.py).

Watch is read-only, attach is the explicit takeover, send types a message and, with
--verify, waits for the agent's heartbeat to ack it. Another user's agent is handed to
that user's own `fleet` (as root) or refused.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli.common import (
    BranchOpt,
    EditTenantOpt,
    HostOpt,
    NoCommitOpt,
    Output,
    OutputOpt,
    PushOpt,
    RepoArg,
    StateDirOpt,
    as_tenant_user,
    command,
    edit_tenant,
    err,
    group,
    run_edit,
)
from reconciler.engine.run import check_repo
from reconciler.errors import UserError
from reconciler.views.plan import to_json

if TYPE_CHECKING:
    from reconciler.core.desired import DesiredAgent

# engine/agent_verbs.py is imported inside the commands that use it: every `fleet
# reconcile` would otherwise pay for it at start-up.

AgentArg = Annotated[str, typer.Argument(metavar="AGENT", help="The agent: NAME, or TENANT/NAME when several tenants have one.",
                                         show_default=False)]

app = group("One agent at a time: watch it (read-only), take it over, or send it a message; add one to the "
            "roster or remove it (a commit to roster.yaml).\n\n"
            "Example: fleet agent send examples/fleets/minimal orchestrator 'status?' --verify")


def _agent(repo: Path, address: str, host: str | None, state_dir: Path | None) -> DesiredAgent:
    from reconciler.drivers.files import default_state_dir  # noqa: PLC0415
    from reconciler.engine import agent_verbs  # noqa: PLC0415

    desired = agent_verbs.load_desired(
        check_repo(repo), host or socket.gethostname(), state_dir if state_dir is not None else default_state_dir()
    )
    return agent_verbs.find_agent(desired, address)


def _as_its_user(repo: Path, agent: DesiredAgent, args: Callable[[Path], list[str]], *, interactive: bool,
                 stdin: str = "") -> None:
    as_tenant_user(repo, agent.launch.socket.user, agent.tenant, args, interactive=interactive,
                   what=f"{agent.tenant}/{agent.name}", stdin=stdin)


def _terminal_agent(verb: str, repo: Path, name: str, host: str | None, state_dir: Path | None) -> DesiredAgent:
    """The agent of `fleet agent watch|attach`, with a terminal to show it on; another
    user's agent is handed over to that user here (the verb does not return)."""
    agent = _agent(repo, name, host, state_dir)
    _require_terminal(verb)
    _as_its_user(repo, agent, lambda copy: ["agent", verb, str(copy), f"{agent.tenant}/{agent.name}",
                                            "--host", agent.host], interactive=True)
    return agent


def _require_terminal(verb: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"`fleet agent {verb}` needs a terminal (stdin and stdout are not both a tty); "
                        "run it in one, or use `fleet agent send` from scripts")


@command(app, "watch")
def watch_command(repo: RepoArg, name: AgentArg, host: HostOpt = None, state_dir: StateDirOpt = None) -> None:
    """Watch an agent's pane, read-only: your keys never reach it and its window keeps its size.

    Detach with your tmux prefix, then d. The agent's window is set to `window-size manual`.

    Example: fleet agent watch examples/fleets/minimal orchestrator --host demo
    """
    agent = _terminal_agent("watch", repo, name, host, state_dir)
    err.print(f"watching {agent.tenant}/{agent.name} read-only; detach with your tmux prefix, then d",
              highlight=False, markup=False)
    from reconciler.engine import agent_verbs  # noqa: PLC0415

    code = agent_verbs.watch(agent)
    raise typer.Exit(code)


@command(app, "attach")
def attach_command(repo: RepoArg, name: AgentArg, host: HostOpt = None, state_dir: StateDirOpt = None) -> None:
    """Take an agent over interactively: a plain tmux attach, so your keystrokes go to the agent.

    Example: fleet agent attach examples/fleets/minimal orchestrator --host demo
    """
    agent = _terminal_agent("attach", repo, name, host, state_dir)
    err.print(f"warning: attaching to {agent.tenant}/{agent.name}: your keystrokes go to the agent "
              "(use `fleet agent watch` to only look)", highlight=False, markup=False)
    from reconciler.engine import agent_verbs  # noqa: PLC0415

    code = agent_verbs.attach(agent)
    raise typer.Exit(code)


@command(app, "send")
def send_command(
    repo: RepoArg,
    name: AgentArg,
    message: Annotated[str | None, typer.Argument(help="One line of text; the id trailer is added.",
                                                  show_default=False)] = None,
    message_file: Annotated[Path | None, typer.Option(
        "--message-file", help="Read the message from this file (- for standard input) instead: an argument "
        "is visible to every user of the host in `ps` while it runs.", show_default=False)] = None,
    verify: Annotated[bool, typer.Option("--verify", help="Wait until the agent's heartbeat acks the message.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="Seconds --verify waits for the ack.")] = 30.0,
    force: Annotated[bool, typer.Option("--force", help="Send even when the pane is in copy mode (cancelled "
                                        "first) or someone who can type is attached.")] = False,
    now: Annotated[bool, typer.Option("--now", help="Type at once, even into the agent's turn (it may take it "
                                      "mid-turn); without it, send waits until the agent is idle.")] = False,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Seconds to wait for the agent to finish its turn; "
                                        "still busy then, nothing is typed (status busy, exit 3).")] = 600.0,
    retry_id: Annotated[str | None, typer.Option(
        "--id", metavar="MSG_ID", help="Retry an earlier message under its id: checked first, so it is never "
        "typed twice (acked: nothing typed; still on the input line: only Enter).", show_default=False)] = None,
    host: HostOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Type a message into an agent's pane once it is idle, press Enter; with --verify, wait for its ack.

    Prints verified / sent, typed_not_submitted / not_delivered (exit 1), or busy (exit 3:
    nothing typed, the agent stayed in its turn for --wait seconds).

    Example: fleet agent send examples/fleets/minimal orchestrator 'rebase on main' --verify --timeout 20
    """
    from reconciler.engine import agent_verbs  # noqa: PLC0415
    from reconciler.engine.agent_verbs import Refused, SendOptions, SendStatus  # noqa: PLC0415

    message = agent_verbs.check_message(_message_text(message, message_file))
    agent = _agent(repo, name, host, state_dir)
    # the message goes over stdin, never argv, where the tenant's other users could read it
    _as_its_user(repo, agent, lambda copy: [
        "agent", "send", "--timeout", str(timeout), "--host", agent.host, "--output", output.value,
        *(["--verify"] if verify else []), *(["--force"] if force else []), *(["--now"] if now else []),
        "--wait", str(wait), *(["--id", retry_id] if retry_id else []),
        "--message-file", "-", str(copy), f"{agent.tenant}/{agent.name}"], interactive=False, stdin=message)
    try:
        result = agent_verbs.send(agent, message, SendOptions(verify, timeout, force, state_dir, now, wait, retry_id),
                                  note=lambda line: err.print(line, highlight=False, markup=False))
    except Refused:
        if output == Output.JSON:
            print(to_json({"id": None, "status": "refused"}))
        raise
    print(to_json({"id": result.id, "status": result.status.value}) if output == Output.JSON else result.status.value)
    err.print(f"{result.id} to {agent.tenant}/{agent.name}: {result.detail}", highlight=False, markup=False)
    if result.status == SendStatus.BUSY:
        raise typer.Exit(agent_verbs.BUSY_EXIT)
    if result.status not in {SendStatus.SENT, SendStatus.VERIFIED}:
        raise typer.Exit(1)


def _message_text(message: str | None, path: Path | None) -> str:
    """The message from the argument or from `--message-file` (one of them); a file's
    final line ending (LF or CRLF) is not part of it."""
    from reconciler.drivers.files import read_capped  # noqa: PLC0415
    from reconciler.engine.agent_verbs import MAX_MESSAGE_BYTES  # noqa: PLC0415

    if message is None and path is None:
        raise UserError("no message: give it as an argument, or with --message-file PATH (- reads standard input)")
    if message is not None and path is not None:
        raise UserError("two messages: give the message as an argument or with --message-file PATH, not both")
    if message is not None:
        return message
    limit = MAX_MESSAGE_BYTES + 2  # room for the final CRLF: check_message judges the rest
    too_big = f"--message-file {path}: more than {MAX_MESSAGE_BYTES} bytes; at most that can be typed at once"
    try:
        if str(path) == "-":
            if sys.stdin is None:
                raise UserError("--message-file -: there is no standard input; pipe the message in")
            if sys.stdin.isatty():
                err.print("reading the message from the terminal; end it with Ctrl-D", highlight=False, markup=False)
            data = sys.stdin.buffer.read(limit + 1)
            if len(data) > limit:
                raise UserError(too_big)
            text = data.decode()
        else:
            text = read_capped(Path(str(path)), limit)
    except UnicodeDecodeError:
        raise UserError(f"--message-file {path}: the message is not UTF-8 text") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise UserError(too_big) from None
        raise UserError(f"--message-file {path}: {exc.strerror or exc}") from None
    return text.removesuffix("\n").removesuffix("\r")



NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The agent's name (its tmux session).", show_default=False)]


@command(app, "add")
def add_command(
    repo: RepoArg,
    name: NameArg,
    role: Annotated[str, typer.Option("--role", metavar="ROLE", help="A role of roles/.", show_default=False)],
    tenant: EditTenantOpt = None,
    runtime: Annotated[str | None, typer.Option("--runtime", metavar="NAME", help="Default: the role's.",
                                                show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", metavar="MODEL", help="Default: the role's.",
                                              show_default=False)] = None,
    workdir: Annotated[str | None, typer.Option("--workdir", metavar="DIR", help="Default: the role's.",
                                                show_default=False)] = None,
    branch: BranchOpt = None,
    push: PushOpt = False,
    no_commit: NoCommitOpt = False,
) -> None:
    """Add an agent to a tenant's roster: roster.yaml edited (comments kept), validated, committed.

    Example: fleet agent add ~/fleet reviewer --tenant shop --role code-review --branch fleet/add-reviewer
    """
    from reconciler.spec import edit  # noqa: PLC0415

    who = edit_tenant(tenant)
    new = edit.NewAgent(name, role, runtime, model, workdir)

    def change(text: str | None) -> tuple[str, str]:
        assert text is not None  # the tenant's roster.yaml exists (engine/spec_edit.py checks)
        return edit.add_agent(text, new), f"fleet agent add: {who}/{name} (role {role})"

    run_edit(repo, who, "roster.yaml", change, branch=branch, push=push, no_commit=no_commit)


@command(app, "remove")
def remove_command(
    repo: RepoArg,
    name: NameArg,
    tenant: EditTenantOpt = None,
    branch: BranchOpt = None,
    push: PushOpt = False,
    no_commit: NoCommitOpt = False,
) -> None:
    """Remove an agent from a tenant's roster (once merged, the reconciler stops it), and commit.

    Example: fleet agent remove ~/fleet reviewer --tenant shop --branch fleet/drop-reviewer
    """
    from reconciler.spec import edit  # noqa: PLC0415

    who = edit_tenant(tenant)

    def change(text: str | None) -> tuple[str, str]:
        assert text is not None  # the tenant's roster.yaml exists (engine/spec_edit.py checks)
        return edit.remove_agent(text, name), f"fleet agent remove: {who}/{name}"

    run_edit(repo, who, "roster.yaml", change, branch=branch, push=push, no_commit=no_commit)
