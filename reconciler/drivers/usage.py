"""Usage records on disk: one `$FLEET_STATE_DIR/<tenant>/usage/<account>.json` per account.

Written by `fleet budget set-usage` and by the ingesters (engine/ingest.py), read once
per tick by the observe step with one directory scan per tenant (`scan_usage`), and
handed to the pure budget policy as `ObservedFleet.usage`. Parsing and rendering are
pure; a corrupt record becomes a problem line, never a failed tick. When several
sources report on one account, `merge_signals` decides which one the record keeps.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.drivers.files import (
    DAMAGED,
    cannot_read,
    damage,
    read_capped,
    scan_records,
    write_atomic,
)
from reconciler.model.layout import StateLayout
from reconciler.model.records import json_object
from reconciler.model.usage import CONFIDENCE_ORDER, UsageSignal
from reconciler.spec.models import NAME_PATTERN, format_duration, parse_duration

#: Field order of the record in docs/reference.md; `render_usage` writes them in this order.
USAGE_FIELDS = ("tenant", "account", "used_fraction", "spent_usd", "reset_at", "window",
                "confidence", "source", "observed_at")

#: A signal loses one confidence step per this much age (user -> provider -> estimated),
#: and never ages below `estimated`: an old reading is still a fair guess.
AGING_STEP = timedelta(hours=1)
_ESTIMATED = CONFIDENCE_ORDER.index("estimated")

_HOW_TO_FIX = (
    "rewrite it with `fleet budget set-usage` or the next `fleet budget ingest`, "
    "or delete the file to forget this account's usage"
)


def usage_path(state_dir: Path, tenant: str, account: str) -> Path:
    """Where an account's record lives; names are checked so no path leaves the folder."""
    for what, name in (("tenant", tenant), ("account", account)):
        if not re.fullmatch(NAME_PATTERN, name):
            raise ValueError(f"{what} {name!r} is not a fleet name (lower-case letters, digits, '-')")
    return StateLayout(state_dir).usage_record(tenant, account)


# --- the record ---------------------------------------------------------------------------


def parse_usage(text: str) -> UsageSignal:
    """Decode one usage record, or raise ValueError saying everything that is wrong.

    Times must carry their zone (docs/reference.md writes UTC with `Z`) and come back in UTC;
    unknown keys are ignored so the record can grow.

    >>> s = parse_usage('{"tenant": "jarvis", "account": "claude-max-1", "used_fraction": 0.42,'
    ...     ' "spent_usd": null, "reset_at": "2026-11-30T00:00:00Z", "window": "7d",'
    ...     ' "confidence": "provider", "source": "codex-rollout", "observed_at": "2026-11-25T12:00:00Z"}')
    >>> s.used_fraction, s.window.days, s.reset_at.isoformat()
    (0.42, 7, '2026-11-30T00:00:00+00:00')
    >>> parse_usage('{"tenant": "jarvis", "used_fraction": 1.5, "observed_at": "2026-11-25T12:00:00"}')
    Traceback (most recent call last):
    ...
    ValueError: missing field 'account', 'used_fraction' must be a number from 0 to 1, got 1.5, 'observed_at' has no time zone, got "2026-11-25T12:00:00" (write UTC with a trailing Z), missing field 'confidence', missing field 'source'
    """
    record = json_object(text)
    errors = [e for e in _record_problems(record) if e]
    if errors:
        raise ValueError(", ".join(errors))
    return UsageSignal(
        tenant=str(record["tenant"]),
        account=str(record["account"]),
        used_fraction=_opt_float(record.get("used_fraction")),
        spent_usd=_opt_float(record.get("spent_usd")),
        reset_at=_opt_time(record.get("reset_at")),
        window=None if record.get("window") is None else parse_duration(record["window"]),
        confidence=str(record["confidence"]),
        source=str(record["source"]),
        observed_at=parse_time(record["observed_at"]),
    )


def render_usage(signal: UsageSignal) -> str:
    """The record as docs/reference.md shows it: one JSON object, fields in order, times in UTC with Z.

    Same signal, same bytes, so rewriting an unchanged record is a no-op for readers.

    >>> s = UsageSignal("jarvis", "openai-api", None, 61.5, None, timedelta(days=30), "user", "user",
    ...                 datetime(2026, 11, 25, 12, tzinfo=UTC))
    >>> print(render_usage(s), end="")
    {"tenant": "jarvis", "account": "openai-api", "used_fraction": null, "spent_usd": 61.5, "reset_at": null, "window": "30d", "confidence": "user", "source": "user", "observed_at": "2026-11-25T12:00:00Z"}
    """
    doc = {
        "tenant": signal.tenant,
        "account": signal.account,
        "used_fraction": signal.used_fraction,
        "spent_usd": signal.spent_usd,
        "reset_at": None if signal.reset_at is None else iso_z(signal.reset_at),
        "window": None if signal.window is None else format_duration(signal.window),
        "confidence": signal.confidence,
        "source": signal.source,
        "observed_at": iso_z(signal.observed_at),
    }
    return json.dumps(doc) + "\n"


def iso_z(moment: datetime) -> str:
    """UTC, ISO 8601, with `Z`: the one spelling of time in the state directory."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write_usage(state_dir: Path, signal: UsageSignal) -> Path:
    """Replace the account's record atomically; returns its path. Validates by round trip."""
    text = render_usage(signal)
    parse_usage(text)  # never write what the next tick would reject
    path = usage_path(state_dir, signal.tenant, signal.account)
    write_atomic(path, text)
    return path


def scan_usage(directory: Path) -> tuple[dict[str, UsageSignal], list[str]]:
    """Read every `<account>.json` of one tenant's usage folder with a single `os.scandir`.

    Returns records by account and problem lines (`PATH: what; how to fix`); hidden
    files (a writer's temporary file) are skipped; a missing folder means no usage yet.
    """
    return scan_records(directory, _read_record, lambda signal: signal.account, "usage records")


def _read_record(path: Path) -> UsageSignal | str:
    try:
        signal = parse_usage(read_capped(path))
    except OSError as exc:
        return cannot_read(path, exc)
    except UnicodeDecodeError:
        return f"{path}: not UTF-8 text; {_HOW_TO_FIX}"
    except DAMAGED as exc:
        return f"{path}: {damage(exc)}; {_HOW_TO_FIX}"
    stem = path.name.removesuffix(".json")
    if signal.account != stem:
        return (f"{path}: account {signal.account!r} does not match the file name {stem!r}; "
                "a record is stored as <account>.json, so rename the file or fix its account field")
    return signal


# --- several sources, one record ------------------------------------------------------------


def aged_confidence(confidence: str, observed_at: datetime, now: datetime,
                    reset_at: datetime | None = None) -> str:
    """The confidence a reading still deserves at `now`.

    One step down (user -> provider -> estimated) per full `AGING_STEP` of age, never
    below `estimated`; `unknown` stays `unknown`. A reading whose window has reset since
    (`reset_at <= now`) describes a finished window, so it is at best `estimated`.
    A reading from the future (clock skew between hosts) counts as fresh.

    >>> t = datetime(2026, 11, 25, 12, tzinfo=UTC)
    >>> [aged_confidence("user", t, t + timedelta(minutes=m)) for m in (59, 60, 120, 600)]
    ['user', 'provider', 'estimated', 'estimated']
    """
    rank = CONFIDENCE_ORDER.index(confidence)
    if rank >= _ESTIMATED:
        return confidence
    steps = max(0, math.floor((now - observed_at) / AGING_STEP))
    if reset_at is not None and reset_at <= now:
        steps = len(CONFIDENCE_ORDER)
    return CONFIDENCE_ORDER[min(rank + steps, _ESTIMATED)]


def aged(signal: UsageSignal, now: datetime) -> UsageSignal:
    """The signal with its confidence aged to `now` (everything else unchanged)."""
    confidence = aged_confidence(signal.confidence, signal.observed_at, now, signal.reset_at)
    return signal if confidence == signal.confidence else replace(signal, confidence=confidence)


def merge_signals(signals: Iterable[UsageSignal], now: datetime) -> UsageSignal | None:
    """Of several readings of one account, the one the record should keep (unaged).

    Ranked by, in order: the window it describes has not reset yet; the more
    authoritative confidence after aging; the fresher `observed_at`; then the source
    name, so the choice never depends on the order the sources were read.

    >>> t = datetime(2026, 11, 25, 12, tzinfo=UTC)
    >>> def s(conf, minutes_old, source):
    ...     return UsageSignal("j", "a", 0.5, None, None, None, conf, source, t - timedelta(minutes=minutes_old))
    >>> merge_signals([s("user", 30, "user"), s("provider", 0, "codex-rollout")], t).source
    'user'
    >>> merge_signals([s("user", 90, "user"), s("provider", 0, "codex-rollout")], t).source
    'codex-rollout'
    """
    candidates = list(signals)
    if not candidates:
        return None
    accounts = {(s.tenant, s.account) for s in candidates}
    if len(accounts) > 1:
        raise ValueError(f"merge_signals needs readings of one account, got {sorted(accounts)}")
    return min(candidates, key=lambda s: _rank_key(s, now))


def _rank_key(signal: UsageSignal, now: datetime) -> tuple[bool, int, float, str]:
    expired = signal.reset_at is not None and signal.reset_at <= now
    confidence = aged_confidence(signal.confidence, signal.observed_at, now, signal.reset_at)
    return (expired, CONFIDENCE_ORDER.index(confidence), -signal.observed_at.timestamp(), signal.source)


# --- field checks ----------------------------------------------------------------------------


def _record_problems(record: Mapping[str, object]) -> list[str | None]:
    problems = [
        _check_name(record, "tenant"),
        _check_name(record, "account"),
        _check_number(record, "used_fraction", upper=1.0),
        _check_number(record, "spent_usd", upper=None),
        _check_time(record, "reset_at", required=False),
        _check_window(record),
        _check_time(record, "observed_at", required=True),
        _check_confidence(record),
        _check_source(record),
    ]
    if record.get("used_fraction") is None and record.get("spent_usd") is None:
        problems.append("neither 'used_fraction' nor 'spent_usd' is set; a record reports one of them")
    return problems


def _check_name(record: Mapping[str, object], key: str) -> str | None:
    if key not in record:
        return f"missing field {key!r}"
    value = record[key]
    if not isinstance(value, str) or not re.fullmatch(NAME_PATTERN, value):
        return f"{key!r} must be a fleet name (lower-case letters, digits, '-'), got {_show(value)}"
    return None


def _check_number(record: Mapping[str, object], key: str, *, upper: float | None) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if ok and upper is not None and isinstance(value, int | float):
        ok = value <= upper
    if not ok:
        bound = f"a number from 0 to {upper:g}" if upper is not None else "a number of at least 0"
        return f"{key!r} must be {bound}, got {_show(value)}"
    return None


def _check_time(record: Mapping[str, object], key: str, *, required: bool) -> str | None:
    if key not in record or record[key] is None:
        return f"missing field {key!r}" if required else None
    value = record[key]
    try:
        parse_time(value)
    except ValueError as exc:
        return f"{key!r} {exc}"
    return None


def _check_window(record: Mapping[str, object]) -> str | None:
    value = record.get("window")
    if value is None:
        return None
    try:
        parse_duration(value)
    except ValueError:
        return f"'window' must be a duration such as 7d or 5h, got {_show(value)}"
    return None


def _check_confidence(record: Mapping[str, object]) -> str | None:
    if "confidence" not in record:
        return "missing field 'confidence'"
    if record["confidence"] not in CONFIDENCE_ORDER:
        return f"'confidence' must be one of {'|'.join(CONFIDENCE_ORDER)}, got {_show(record['confidence'])}"
    return None


def _check_source(record: Mapping[str, object]) -> str | None:
    if "source" not in record:
        return "missing field 'source'"
    value = record["source"]
    if not isinstance(value, str) or not value:
        return f"'source' must be a non-empty string, got {_show(value)}"
    return None


def parse_time(value: object) -> datetime:
    """An ISO 8601 time that carries its zone, in UTC; ValueError says what is wrong.

    >>> parse_time("2026-11-30T00:00:00+01:00").isoformat()
    '2026-11-29T23:00:00+00:00'
    """
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time, got {_show(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not an ISO 8601 time, got {_show(value)}") from None
    if parsed.utcoffset() is None:
        raise ValueError(f"has no time zone, got {_show(value)} (write UTC with a trailing Z)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"is out of range once moved to UTC, got {_show(value)}") from None


def _opt_time(value: object) -> datetime | None:
    return None if value is None else parse_time(value)


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _show(value: object) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
