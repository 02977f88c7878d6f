"""`fleet budget simulate`: when each downgrade, queue or refusal would fire, before it does.

Mounted in the `budget` group by cli/app.py. It parses options, calls engine/simulate.py
(a pure replay of core/budget.py over one window in simulated time) and prints with
views/simulate.py; it writes nothing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import typer

from reconciler.cli.common import Output, OutputOpt, RepoArg, out
from reconciler.engine.run import check_repo
from reconciler.errors import UserError
from reconciler.spec.models import parse_duration
from reconciler.views.simulate import print_replay, replay_json

# engine/simulate.py and the budget policy load only when `fleet budget simulate` runs.


def parse_burn(text: str) -> float:
    """`2`, `2x` or `0.5X`: a positive multiple of the even pace.

    >>> parse_burn("2x"), parse_burn("0.5")
    (2.0, 0.5)
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*[xX]?\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--burn {text!r}: give a positive multiple of the even pace, e.g. --burn 2 (twice the pace)")
    return float(match.group(1))


def simulate_command(
    repo: RepoArg,
    burn: Annotated[str, typer.Option(
        "--burn", metavar="RATE", show_default=False,
        help="How fast the tenant burns with every agent on its desired model, as a multiple of the even pace: "
             "2 spends a window in half its length, 0.8 leaves a fifth unused.")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant. Default: every tenant with a budget.yaml.",
                                               show_default=False)] = None,
    account: Annotated[str | None, typer.Option(
        "--account", help="Replay this account's window and show only its agents' changes. Default: the first account.",
        show_default=False)] = None,
    step: Annotated[str, typer.Option("--step", help="Simulated time between two reconciles, e.g. 1m, 5m.")] = "5m",
    factor: Annotated[float, typer.Option("--factor", help="Burn of a rung relative to the one above it.")] = 0.5,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Replay the budget policy over a window and show when each downgrade, queue or refusal fires.

    Every account starts the window empty; the policy runs every --step of simulated time,
    exactly as reconcile would run it, and nothing is started, stopped or written.

    Example: fleet budget simulate examples/fleets/spec-reference --burn 3 --tenant jarvis
    """
    if not 0 < factor <= 1:
        raise UserError(f"--factor {factor}: give a number in (0, 1], e.g. 0.5")
    try:
        every = parse_duration(step)
    except ValueError as exc:
        raise UserError(f"--step: {exc}") from None
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    from reconciler.engine.simulate import simulate_repo  # noqa: PLC0415

    replays = simulate_repo(check_repo(repo), rate=parse_burn(burn), now=now, tenant=tenant,
                            account=account, step=every, factor=factor)
    if not replays:
        raise UserError(f"{repo}: no tenant has a budget.yaml with accounts, so there is nothing to replay")
    if output == Output.JSON:
        out.print_json(data={"replays": [replay_json(r, account) for r in replays]})
        return
    for replay in replays:
        print_replay(out, replay, account)
