"""`fleet budget set-usage|ingest|show`: usage signals in, by hand or from files, and pace out.

set-usage and ingest write the records that the observe step reads each tick
(`$FLEET_STATE_DIR/<tenant>/usage/<account>.json`, docs/reference.md "Usage signals");
ingest also appends the spend ledger. show is a read-only engine run rendered per
account. `simulate` (cli/simulate.py) is mounted in this group by cli/app.py.
"""

from __future__ import annotations

import getpass
import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli.common import (
    HostOpt,
    Output,
    OutputOpt,
    RepoArg,
    StateDirOpt,
    TenantOpt,
    as_tenant_user,
    command,
    err,
    group,
    out,
    warn,
)
from reconciler.drivers.usage import parse_time, render_usage, write_usage
from reconciler.engine.run import check_repo, delegate, observe_run, request_for
from reconciler.errors import UserError
from reconciler.model.usage import CONFIDENCE_ORDER, UsageSignal
from reconciler.spec.load import load_repo
from reconciler.spec.models import Account
from reconciler.spec.repo import FleetRepo
from reconciler.views.budget import account_rows, describe, report_json, report_lines
from reconciler.views.plan import print_errors, to_json
from reconciler.views.users import relay_users

if TYPE_CHECKING:
    from reconciler.engine.ingest import Homes

# engine/ingest.py (and its parsers) load only in `fleet budget ingest`: `fleet
# reconcile`, which mounts this app, starts often.

app = group("Budget accounts: record what each has used, by hand or from the runtimes' own files.\n\n"
            "Example: fleet budget set-usage examples/fleets/spec-reference jarvis claude-max-1 --used 0.42")


# --- set-usage -------------------------------------------------------------------------------


@command(app, "set-usage")
def set_usage_command(
    repo: RepoArg,
    tenant: Annotated[str, typer.Argument(help="The tenant (a folder of tenants/).", show_default=False)],
    account: Annotated[str, typer.Argument(help="An account of the tenant's budget.yaml.", show_default=False)],
    used: Annotated[str | None, typer.Option(
        "--used", metavar="FRACTION", help="Subscription accounts: the fraction of the window's limit used, 0 to 1 (0.42 = 42%).",
        show_default=False)] = None,
    spent_usd: Annotated[str | None, typer.Option(
        "--spent-usd", metavar="USD", help="API accounts: dollars spent in the current period.", show_default=False)] = None,
    reset_at: Annotated[str | None, typer.Option(
        "--reset-at", metavar="ISO", help="When the window resets, ISO 8601 with a zone, e.g. 2026-11-30T00:00:00Z.",
        show_default=False)] = None,
    confidence: Annotated[str, typer.Option(
        "--confidence", metavar="LEVEL", help="How sure you are: user, provider, estimated or unknown.")] = "user",
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Record by hand what a budget account has used; the next reconcile paces on it.

    Example: fleet budget set-usage REPO jarvis claude-max-1 --used 0.42 --reset-at 2026-11-30T00:00:00Z

    Example: fleet budget set-usage REPO jarvis openai-api --spent-usd 61.5
    """
    loaded = load_repo(check_repo(repo))
    spec = _account(loaded, tenant, account)
    signal = manual_signal(spec, tenant, used, spent_usd, reset_at, confidence, datetime.now(UTC))
    as_tenant_user(repo, loaded.tenants[tenant].roster.user, tenant, lambda copy: [
        "budget", "set-usage", str(copy), tenant, account, "--confidence", confidence, "--output", output.value,
        *(["--used", used] if used is not None else []), *(["--spent-usd", spent_usd] if spent_usd is not None else []),
        *(["--reset-at", reset_at] if reset_at is not None else [])], interactive=False, what=f"tenant {tenant}")
    path = write_usage(request_for(repo, None, None, state_dir).state_dir, signal)
    if output == Output.JSON:
        print(to_json({"path": str(path), "record": json.loads(render_usage(signal))}))
        return
    print(f"{tenant}/{account}: {describe(signal)}; written to {path}")


def manual_signal(
    account: Account, tenant: str, used: str | None, spent_usd: str | None,
    reset_at: str | None, confidence: str, now: datetime,
) -> UsageSignal:
    """The record a person's `set-usage` describes, or a UserError saying what is wrong."""
    if (used is None) == (spent_usd is None):
        raise UserError("give exactly one of --used (subscription accounts) and --spent-usd (api accounts)")
    if used is not None and account.regime != "subscription":
        raise UserError(f"account {account.name!r} is an api account (a dollar cap); "
                        "report what it spent with --spent-usd, not --used")
    if spent_usd is not None and account.regime != "api":
        raise UserError(f"account {account.name!r} is a subscription account (usage against a limit); "
                        "report the fraction used with --used, not --spent-usd")
    if confidence not in CONFIDENCE_ORDER:
        raise UserError(f"--confidence must be one of {', '.join(CONFIDENCE_ORDER)}, not {confidence!r}")
    return UsageSignal(
        tenant=tenant,
        account=account.name,
        used_fraction=None if used is None else _number("--used", used, upper=1.0),
        spent_usd=None if spent_usd is None else _number("--spent-usd", spent_usd, upper=None),
        reset_at=None if reset_at is None else _reset_at(reset_at),
        window=account.window if account.regime == "subscription" else account.period,
        confidence=confidence,
        source="user",
        observed_at=now.replace(microsecond=0),
    )


def _account(repo: FleetRepo, tenant: str, name: str) -> Account:
    """The named account of the tenant's budget.yaml, or a UserError naming what exists."""
    if tenant in repo.invalid_tenants:
        print_errors(err, [e for e in repo.errors if e.tenant == tenant])
        raise UserError(f"tenant {tenant!r} has errors in its specs (above); fix them, then set its usage")
    spec = repo.tenants.get(tenant)
    if spec is None:
        known = ", ".join(sorted(repo.tenants)) or "none"
        raise UserError(f"no tenant {tenant!r} in {repo.root}/tenants/ (tenants: {known})")
    if spec.budget is None:
        raise UserError(f"tenant {tenant!r} has no budget.yaml; declare the account in "
                        f"{repo.root}/tenants/{tenant}/budget.yaml first")
    for account in spec.budget.accounts:
        if account.name == name:
            return account
    known = ", ".join(a.name for a in spec.budget.accounts) or "none"
    raise UserError(f"no account {name!r} in {repo.root}/tenants/{tenant}/budget.yaml (accounts: {known})")


def _number(flag: str, text: str, *, upper: float | None) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{flag} must be a number, not {text!r}") from None
    if not math.isfinite(value) or value < 0 or (upper is not None and value > upper):
        bound = f"from 0 to {upper:g}" if upper is not None else "of at least 0"
        hint = f" (a fraction: 42% is {float(text) / 100:g})" if flag == "--used" and value > 1 else ""
        raise UserError(f"{flag} must be a number {bound}, not {text}{hint}")
    return value


def _reset_at(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise UserError(f"--reset-at {exc}") from None


# --- ingest ----------------------------------------------------------------------------------


@command(app, "ingest")
def ingest_command(
    repo: RepoArg,
    codex_home: Annotated[Path | None, typer.Option(
        "--codex-home", metavar="DIR", help="A Codex home (holds sessions/). Default: $CODEX_HOME or ~/.codex.",
        show_default=False)] = None,
    claude_home: Annotated[Path | None, typer.Option(
        "--claude-home", metavar="DIR", help="A Claude Code home (holds projects/). Default: $CLAUDE_CONFIG_DIR or ~/.claude.",
        show_default=False)] = None,
    tenant: TenantOpt = None,
    host: HostOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
) -> None:
    """Read usage from Codex rollouts, Claude Code transcripts and status line, and heartbeats, once.

    Writes each subscription account's usage record (when a provider reported on it) and
    appends new spend to each tenant's ledger.jsonl; running it twice appends nothing new.
    A home holds one login's files, so it is read for one tenant: pass --tenant when REPO
    has several.

    Example: fleet budget ingest REPO --tenant jarvis --codex-home ~/.codex --claude-home ~/.claude
    """
    loaded = load_repo(check_repo(repo))
    scope = _scope(loaded, tenant)
    # Another user's tenants are read as that user, from its own homes and state.
    request = request_for(repo, host, scope, state_dir, dry_run=True, json_output=output == Output.JSON,
                          user_verb=("budget", "ingest"))
    local, runs, notes = delegate(request, loaded)
    for line in notes:
        err.print(f"note: {line}", highlight=False, markup=False)
    scope = [t for t in scope if local is None or t in local]
    homes = _homes(loaded, scope, codex_home, claude_home)
    from reconciler.engine.ingest import ingest_all  # noqa: PLC0415

    report = ingest_all(loaded, request.state_dir, homes, datetime.now(UTC), host=request.host, only=scope)
    errors = [e for e in loaded.errors if not tenant or e.tenant is None or e.tenant in tenant]
    print_errors(err, errors)
    warn(report.problems)
    doc = report_json(report)
    relay_users(out, err, runs, output == Output.JSON, doc)
    print(to_json(doc) if output == Output.JSON else "\n".join(report_lines(report)))
    if errors or any(r.problems or r.code for r in runs):
        raise typer.Exit(1)


def _scope(repo: FleetRepo, wanted: Sequence[str] | None) -> list[str]:
    if not wanted:
        return sorted(repo.tenants)
    unknown = sorted(set(wanted) - set(repo.tenants) - set(repo.invalid_tenants))
    if unknown:
        raise UserError(f"--tenant {unknown[0]}: no such tenant in {repo.root}/tenants/")
    return sorted(set(wanted) & set(repo.tenants))


def _homes(repo: FleetRepo, scope: Sequence[str], codex: Path | None, claude: Path | None) -> dict[str, Homes]:
    """Which tenant reads which runtime homes: one login's files go to one tenant.

    Explicit homes need exactly one tenant in scope. Without them, the invoking user's
    homes go to the only tenant in scope, or else to the only tenant that runs as this
    user (roster `user:`); with no such tenant, only the state directory is read.
    """
    if (codex or claude) and len(scope) != 1:
        raise UserError(f"--codex-home/--claude-home hold one login's files; REPO has tenants "
                        f"{', '.join(scope) or 'none'} in scope, so pass --tenant NAME")
    owners = scope if len(scope) == 1 else [
        t for t in scope if repo.tenants[t].roster.user == getpass.getuser()]
    if len(owners) != 1:
        return {}
    codex_default = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    claude_default = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
    from reconciler.engine.ingest import Homes  # noqa: PLC0415

    return {owners[0]: Homes(codex=codex or codex_default, claude=claude or claude_default)}


# --- shared ----------------------------------------------------------------------------------


@command(app, "show")
def show_command(
    repo: RepoArg,
    host: HostOpt = None,
    tenant: TenantOpt = None,
    state_dir: StateDirOpt = None,
    output: OutputOpt = Output.TEXT,
    all_hosts: Annotated[bool, typer.Option(
        "--all-hosts", help="Every host's accounts, read from the register (fleet.yaml `register:`): "
        "every tenant your database role may see, with what each host's ledger spent.")] = False,
) -> None:
    """Per account: used against the even pace, the window as a bar, when it would run out,
    and what the ladder does next (for this host's view of the fleet).

    Example: fleet budget show examples/fleets/spec-reference --host w-jarvis
    """
    if all_hosts:
        _show_all_hosts(repo, host, tenant, output == Output.JSON)
        return
    from reconciler.core.budget_view import account_views, render  # noqa: PLC0415

    result = observe_run(request_for(repo, host, tenant, state_dir, json_output=output == Output.JSON,
                                     user_verb=("budget", "show")))
    for line in result.notes:
        err.print(f"note: {line}", highlight=False, markup=False)
    accounts = account_views(result.repo, result.tick.budget)
    if output == Output.JSON:
        rows = account_rows(accounts)
        relay_users(out, err, result.users, True, rows)
        print(to_json(rows))
        raise typer.Exit(result.users_code)
    if accounts or not result.users:
        print(render(accounts))
    relay_users(out, err, result.users, False, None)
    raise typer.Exit(result.users_code)


def _show_all_hosts(repo: Path, host: str | None, tenants: list[str] | None, json_output: bool) -> None:
    """`--all-hosts`: the register's usage rows, narrowed by --host and --tenant when given."""
    from reconciler.engine.register_admin import all_usage  # noqa: PLC0415  (only with a register)
    from reconciler.views.register import as_json, render_usage  # noqa: PLC0415

    rows = [r for r in all_usage(check_repo(repo))
            if (host is None or r["host"] == host) and (not tenants or r["tenant"] in tenants)]
    if json_output:
        print(to_json(as_json(rows)))
        return
    print(render_usage(rows))
